"""Plain result records the engine hands out: no tensors, JSON-ready through `to_json`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.core.errors import RmxError
from engine.core.io import atomic_open


@dataclass(frozen=True)
class TopToken:
    """One of the base model's top-k alternatives at a position."""

    id: int
    text: str
    logprob: float


@dataclass(frozen=True)
class TeacherPick:
    """What the teacher would have emitted at a position."""

    id: int
    """The teacher's argmax token."""
    rank_in_base: int
    """Rank of that token under the base distribution (1 = the base argmax)."""
    entropy: float
    """The teacher's own entropy at the position, in nats."""


@dataclass(frozen=True)
class TokenScore:
    """Everything known about one completion token under teacher forcing."""

    pos: int
    """0-based position counted from the first completion token."""
    id: int
    text: str
    logprob: float
    """Base log-probability of this token, in nats."""
    entropy: float
    """Exact base entropy over the full vocabulary at temperature 1, in nats."""
    rank: int
    """Rank of this token under the base (1 = base argmax)."""
    top: tuple[TopToken, ...]
    teacher: TeacherPick | None = None
    cls: str | None = None
    """unshifted, reranked or shifted (None without a teacher). Serialised as `class`."""

    def to_json(self) -> dict[str, Any]:
        return {
            "pos": self.pos,
            "id": self.id,
            "text": self.text,
            "logprob": self.logprob,
            "entropy": self.entropy,
            "rank": self.rank,
            "top": [asdict(t) for t in self.top],
            "teacher": asdict(self.teacher) if self.teacher else None,
            "class": self.cls,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TokenScore":
        teacher = data.get("teacher")
        return cls(
            pos=data["pos"], id=data["id"], text=data["text"], logprob=data["logprob"],
            entropy=data["entropy"], rank=data["rank"],
            top=tuple(TopToken(**t) for t in data["top"]),
            teacher=TeacherPick(**teacher) if teacher else None,
            cls=data.get("class"),
        )


@dataclass(frozen=True)
class Table2:
    """The paper's Table 2 over a set of scored completions (percentages are 0–100)."""

    sequences: int
    tokens: int
    tau: float | None
    """τ in nats used for `above_tau_pct` (resolved when given as a quantile)."""
    above_tau_pct: float | None
    mean_entropy: float | None
    reranked_pct: float | None = None
    shifted_pct: float | None = None
    unshifted_pct: float | None = None
    mean_teacher_rank_reranked: float | None = None
    mean_entropy_reranked: float | None = None
    mean_entropy_unshifted: float | None = None
    entropy_ratio: float | None = None
    """mean entropy at reranked positions ÷ mean entropy at unshifted positions."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScoredRollout:
    """A prompt and completion scored token by token."""

    prompt_ids: tuple[int, ...]
    tokens: tuple[TokenScore, ...]
    base: str = ""
    """Label of the base model that scored it."""
    teacher: str | None = None
    """Label of the teacher, if any."""
    summary: Table2 | None = None

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def completion_ids(self) -> tuple[int, ...]:
        return tuple(t.id for t in self.tokens)

    @classmethod
    def from_json(cls, data: dict[str, Any], prompt_ids: tuple[int, ...] | None = None) -> "ScoredRollout":
        """Rebuild from `to_json(with_ids=True)` (or the public shape plus `prompt_ids`)."""
        summary = data.get("summary")
        return cls(
            prompt_ids=tuple(prompt_ids if prompt_ids is not None else data["prompt_ids"]),
            tokens=tuple(TokenScore.from_json(t) for t in data["tokens"]),
            base=data.get("base", ""), teacher=data.get("teacher"),
            summary=Table2(**summary) if summary else None,
        )

    def to_json(self, with_ids: bool = False) -> dict[str, Any]:
        """The public `rmx score --json` shape; `with_ids` adds what `from_json` needs to rebuild it."""
        if with_ids:
            return {**self.to_json(), "prompt_ids": list(self.prompt_ids), "base": self.base, "teacher": self.teacher}
        return {
            "prompt_tokens": self.prompt_tokens,
            "tokens": [t.to_json() for t in self.tokens],
            "summary": self.summary.to_json() if self.summary else None,
        }


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is, for status bars and `rmx engine status`."""

    label: str
    source: str
    adapter: str | None
    architecture: str
    dtype: str
    device: str
    vocab_size: int
    context_length: int
    parameters: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rollout:
    """One sampled completion of a problem, graded: a line of rollouts.jsonl."""

    problem_id: str
    sample: int
    """Index of this sample among the K drawn for the problem."""
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    text: str
    """The completion decoded from `completion_ids`."""
    gold: str
    answer: str | None
    """The extracted final answer, None when the completion gives none."""
    correct: bool
    finish: str
    """Why decoding stopped: eos, length or stop."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["prompt_ids"] = list(self.prompt_ids)
        data["completion_ids"] = list(self.completion_ids)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Rollout":
        return cls(**{**data, "prompt_ids": tuple(data["prompt_ids"]), "completion_ids": tuple(data["completion_ids"])})


def read_rollouts(path: str | Path) -> list[Rollout]:
    """Every rollout in a rollouts.jsonl; a truncated last line (a writer killed mid-line) is skipped."""
    file = Path(path)
    if not file.is_file():
        raise RmxError(f"rollouts file not found: {path}")
    lines = file.read_text(encoding="utf-8").split("\n")
    rollouts: list[Rollout] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rollouts.append(Rollout.from_json(json.loads(line)))
        except (json.JSONDecodeError, TypeError, KeyError) as error:
            if number == len(lines):  # no newline after it: the writer died mid-line
                break
            why = ("not JSON" if isinstance(error, json.JSONDecodeError)
                   else f"missing field {error}" if isinstance(error, KeyError) else "unexpected or missing fields")
            raise RmxError(f"{file}:{number}: not a rollout record ({why})") from None
    return rollouts


def write_rollouts(rollouts: Sequence[Rollout], path: str | Path) -> None:
    """Write rollouts as one JSONL file, atomically and fsynced (sampling them is the expensive part)."""
    with atomic_open(path, "w", fsync=True) as handle:
        for rollout in rollouts:
            handle.write(json.dumps(rollout.to_json(), ensure_ascii=False) + "\n")
