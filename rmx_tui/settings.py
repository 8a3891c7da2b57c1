"""What the workbench is opened on and how it decodes: one frozen record built by `rmx tui` / `rmx demo` or a test."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.core.config import ModelSpec, Tau
from engine.core.decode import SamplingSpec

ALTERNATIVES = 20
"""Top-k kept per token: five are shown, twenty feed the random control (paper §3.2)."""


@dataclass(frozen=True)
class Settings:
    """Models, problems, gate and decoding for one session of the workbench."""

    base: ModelSpec | None = None
    """The model to load; None when the injected client already holds its models."""
    teacher: ModelSpec | None = None
    dataset: str = "smoke"
    """A bundled dataset name or a .jsonl/.json file of problems."""
    rollouts: str | None = None
    """A rollouts.jsonl to browse (from `rmx rollouts`), matched to the problems by id."""
    limit: int | None = None
    template: str = "chat"
    tau: Tau = Tau(0.9, quantile=True)
    sampling: SamplingSpec = SamplingSpec(greedy=True, max_new_tokens=128)
    """How rollouts and forks are decoded."""
    outcome_sampling: SamplingSpec = SamplingSpec(greedy=False, temperature=0.6, top_p=0.95, max_new_tokens=128)
    """How `c` samples continuations: the authors' rollout recipe (temperature 0.6, top-p 0.95)."""
    samples: int = 8
    """Continuations per `c`."""
    seed: int = 0
    """Seeds the random control and sampled rollouts."""
    autostart: bool = True
    """Decode a rollout of the first problem as soon as the models are loaded."""
    export_dir: Path = field(default_factory=Path.cwd)
    tour: bool = False
    """Open with the first-run tour unless it was dismissed before (`rmx demo` asks for it)."""
