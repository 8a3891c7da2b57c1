"""Frozen, validated specs: every engine call and every CLI option maps onto one of these."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

from engine.core.errors import RmxError

DTYPES = ("auto", "float32", "bfloat16", "float16")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how."""

    source: str
    """A Hugging Face hub id (read from the local cache), a local model folder, a `.gguf` file, or `demo`."""
    adapter: str | None = None
    """A PEFT LoRA adapter folder stacked on the model, or None."""
    dtype: str = "auto"
    """auto (bf16 where the device supports it, else fp32), float32, bfloat16 or float16."""
    device: str = "auto"
    """auto (cuda if present, else cpu), cpu, mps, cuda or cuda:N."""
    revision: str | None = None
    """A hub revision (branch, tag or commit) when `source` is a hub id."""
    trust_remote_code: bool = False
    """Run model code shipped with the checkpoint. Off unless the user asks."""

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise RmxError("model source is empty: give a hub id, a folder, a .gguf file or 'demo'")
        if self.dtype not in DTYPES:
            raise RmxError(f"unknown dtype '{self.dtype}': use one of {', '.join(DTYPES)}")
        if not _DEVICE_RE.match(self.device):
            raise RmxError(f"unknown device '{self.device}': use auto, cpu, mps, cuda or cuda:N")

    @property
    def label(self) -> str:
        """A short human name: the source's last path part, plus the adapter's."""
        name = self.source.rstrip("/").split("/")[-1]
        if self.adapter:
            name += "+" + self.adapter.rstrip("/").split("/")[-1]
        return name


@dataclass(frozen=True)
class ScoreSpec:
    """How to score a completion under the base (and teacher)."""

    top_k: int = 5
    """How many base alternatives to report per token."""
    chunk_elements: int = 1 << 24
    """Upper bound on positions×vocab fp32 logits held at once (16M elements ≈ 64 MB)."""

    def __post_init__(self) -> None:
        if not isinstance(self.top_k, int) or self.top_k <= 0:
            raise RmxError(f"--top-k must be a positive integer, got {self.top_k}")
        if self.chunk_elements < 1:
            raise RmxError("chunk_elements must be positive")


@dataclass(frozen=True)
class Tau:
    """An entropy threshold τ: in nats, or as a quantile of a reference entropy distribution."""

    value: float
    """Nats when `quantile` is False, else the quantile in (0, 1)."""
    quantile: bool = False
    """True when `value` is a quantile of the reference entropies (written `q0.97`)."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise RmxError(f"τ must be finite, got {self.value}")
        if self.quantile and not 0.0 < self.value < 1.0:
            raise RmxError(f"a τ quantile must be inside (0, 1), got q{self.value}")
        if not self.quantile and self.value < 0:
            raise RmxError(f"τ in nats must be ≥ 0, got {self.value}")

    @classmethod
    def parse(cls, text: str | float) -> "Tau":
        """`1.4` → 1.4 nats; `q0.97` → the 97th percentile of the reference entropies."""
        if isinstance(text, (int, float)):
            return cls(float(text))
        raw = str(text).strip()
        is_quantile = raw[:1].lower() == "q"
        number = raw[1:] if is_quantile else raw
        try:
            value = float(number)
        except ValueError:
            raise RmxError(f"τ '{raw}' is neither a number of nats (1.4) nor a quantile (q0.97)") from None
        return cls(value, quantile=is_quantile)

    def resolve(self, entropies: Sequence[float]) -> float:
        """The threshold in nats; a quantile is taken over `entropies` (linear interpolation)."""
        if not self.quantile:
            return self.value
        ordered = sorted(entropies)
        if not ordered:
            raise RmxError("cannot resolve a τ quantile without any entropies")
        position = self.value * (len(ordered) - 1)
        low = int(math.floor(position))
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    def __str__(self) -> str:
        return f"q{self.value:g}" if self.quantile else f"{self.value:g}"
