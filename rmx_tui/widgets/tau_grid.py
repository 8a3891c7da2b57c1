"""The τ-sweep grid: per τ and run, the decision fraction, loss and held-out pass@1 its train or sweep run reached."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from rich.text import Text
from textual.widgets import DataTable

SWEEP_KINDS = frozenset({"sweep", "train", "pipeline"})
"""Job kinds whose runs feed the grid."""
METRICS = {"decision_frac": "decision frac", "loss": "loss", "pass@1": "pass@1 (held out)"}
"""Event key suffixes (after the last slash: `train/loss`, `eval/pass@1`, `sweep/decision_frac`) → columns."""


@dataclass(frozen=True)
class SweepPoint:
    """What one event says about a τ: the metrics it carries, None for those it does not."""

    tau: str | None
    """The event's own `*/tau`, None when the run's configured τ applies."""
    values: tuple[tuple[str, float], ...]
    """(metric suffix, value) pairs, in METRICS' order."""


def configured_tau(config: dict[str, Any]) -> str:
    """A run's τ as its config gives it: `1.4`, `q0.97`, or `correct|wrong` when the two differ.

    A train or sweep job keeps it under `train`; a pipeline job under `pipeline.train`.
    """
    stages = config.get("pipeline") if isinstance(config.get("pipeline"), dict) else config
    train = stages.get("train") if isinstance(stages.get("train"), dict) else {}
    tau = train.get("tau")
    correct, wrong = train.get("tau_correct") or tau, train.get("tau_wrong") or tau
    if correct is None and wrong is None:
        return "?"
    return _tau_text(correct) if correct == wrong else f"{_tau_text(correct)}|{_tau_text(wrong)}"


def _tau_text(value: Any) -> str:
    return f"{value:g}" if type(value) in (int, float) else str(value)


def sweep_points(events: Iterable[dict[str, Any]]) -> list[SweepPoint]:
    """The events that carry a grid metric, reduced to points; every other event is left out."""
    points = []
    for event in events:
        tau, values = None, {}
        for key, value in event.items():
            suffix = key.rpartition("/")[2]
            if suffix == "tau" and value is not None:
                tau = _tau_text(value)
            elif suffix in METRICS and type(value) in (int, float):
                values[suffix] = float(value)
        if values:
            points.append(SweepPoint(tau, tuple((name, values[name]) for name in METRICS if name in values)))
    return points


def tau_order(tau: str) -> tuple[int, float, str]:
    """Nats first in ascending order, then quantiles, then anything else."""
    head = tau.split("|")[0]
    for rank, text in ((0, head), (1, head[1:] if head.startswith("q") else "")):
        try:
            return rank, float(text), tau
        except ValueError:
            continue
    return 2, 0.0, tau


class TauGrid(DataTable):
    """One row per (τ, run), sorted by τ; each metric shows the latest value the run reported for that τ."""

    can_focus = False

    COMPONENT_CLASSES = {"tau-grid--active", "tau-grid--muted"}

    DEFAULT_CSS = """
    TauGrid { height: auto; max-height: 12; }
    TauGrid > .tau-grid--active { color: $warning; text-style: bold; }
    TauGrid > .tau-grid--muted { color: $foreground-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="none", zebra_stripes=True)
        self._rows: dict[tuple[str, str], dict[str, float]] = {}
        self._active: set[str] = set()

    def on_mount(self) -> None:
        self.add_column("τ", key="tau")
        self.add_column("run", key="run")
        for suffix, label in METRICS.items():
            self.add_column(label, key=suffix)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._rebuild())

    @property
    def empty(self) -> bool:
        return not self._rows

    def fold(self, job_id: str, tau: str, points: list[SweepPoint], active: bool) -> None:
        """Add a run's new points (`tau` for those that name none) and whether the run still runs."""
        changed = (job_id in self._active) != active
        if active:
            self._active.add(job_id)
        else:
            self._active.discard(job_id)
        for point in points:
            self._rows.setdefault((point.tau or tau, job_id), {}).update(point.values)
            changed = True
        if not any(run == job_id for _, run in self._rows):  # listed before it reported anything
            self._rows[(tau, job_id)] = {}
            changed = True
        if changed:
            self._rebuild()

    def _rebuild(self) -> None:
        self.clear()
        muted = self.get_component_rich_style("tau-grid--muted", partial=True)
        active = self.get_component_rich_style("tau-grid--active", partial=True)
        for (tau, job_id), values in sorted(self._rows.items(), key=lambda item: (tau_order(item[0][0]), item[0][1])):
            run = Text(job_id, style=active if job_id in self._active else muted)
            cells = [Text(f"{values[name]:.4g}") if name in values else Text("—", style=muted) for name in METRICS]
            self.add_row(Text(tau), run, *cells)
