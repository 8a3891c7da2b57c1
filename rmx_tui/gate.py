"""The entropy gate τ as the user moves it: in nats or as a quantile, resolved against one branch's entropies."""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Sequence

from engine.core.config import Tau

NATS_STEP = 0.1
QUANTILE_STEP = 0.01
QUANTILE_RANGE = (0.01, 0.99)


@dataclass(frozen=True)
class Gate:
    """τ plus the moves the keys make on it; entropies are always passed sorted ascending."""

    tau: Tau

    def nats(self, ordered: Sequence[float]) -> float | None:
        """τ in nats over these sorted entropies; None when a quantile has nothing to be taken over.

        The same linear interpolation as Tau.resolve, without its sort: on every key press the
        entropies of a 32k-token rollout are already sorted.
        """
        if not self.tau.quantile:
            return self.tau.value
        if not ordered:
            return None
        position = self.tau.value * (len(ordered) - 1)
        low = int(math.floor(position))
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    def moved(self, steps: int) -> "Gate":
        """τ raised (steps > 0) or lowered by whole steps of its own unit."""
        if self.tau.quantile:
            low, high = QUANTILE_RANGE
            value = round(min(max(self.tau.value + steps * QUANTILE_STEP, low), high), 4)
            return Gate(Tau(value, quantile=True))
        return Gate(Tau(round(max(self.tau.value + steps * NATS_STEP, 0.0), 4)))

    def toggled(self, ordered: Sequence[float]) -> "Gate":
        """The same threshold written the other way: nats ↔ the quantile these entropies give it."""
        nats = self.nats(ordered)
        if self.tau.quantile:
            return Gate(Tau(round(nats, 2) if nats is not None else 1.0))
        if not ordered:
            return Gate(Tau(0.9, quantile=True))
        low, high = QUANTILE_RANGE
        share = bisect_right(ordered, self.tau.value) / len(ordered)
        return Gate(Tau(round(min(max(share, low), high), 2), quantile=True))

    def describe(self, nats: float | None, reference: str = "") -> str:
        """τ for the status bar, given what `nats` resolved it to over the `reference` rollout's entropies."""
        if self.tau.quantile:
            over = f" of {reference}" if reference else ""
            return f"τ {self.tau}{over} = {nats:.2f} nats" if nats is not None else f"τ {self.tau}{over}"
        return f"τ {self.tau.value:.2f} nats"


@dataclass(frozen=True)
class TauReference:
    """The one rollout a quantile τ is resolved over, so every view and branch uses the same value in nats."""

    name: str
    """What the status bar calls it: `the root rollout` (of the open problem)."""
    ordered: tuple[float, ...] | list[float]
    """Its entropies, sorted ascending."""


def count_above(ordered: Sequence[float], nats: float | None) -> int:
    """How many of these sorted entropies exceed τ."""
    return 0 if nats is None else len(ordered) - bisect_right(ordered, nats)
