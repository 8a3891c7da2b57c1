"""Experiment trackers (TensorBoard, trackio, W&B) fed from a run's events: slash-key scalars, run config, τ per lane."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

from engine.core.errors import RmxError

TRACKERS = ("tensorboard", "trackio", "wandb")
PACKAGES = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb"}
"""The module each tracker imports; its pip extra is rmx[<tracker>]."""
STEP_KEYS = ("train/step", "distill/step", "rollouts/done")
"""Keys that count a stage's own steps (optimizer steps, problems sampled): the tracker's x axis, rather than the
run's progress; an event without one (rollouts/tok_s) is filed at the last such step of its stage."""


def parse_report_to(values: str | Iterable[str] | None) -> tuple[str, ...]:
    """`none`, one tracker, several (repeated or comma-separated): the tracker names in order, without repeats."""
    if values is None:
        return ()
    items = [values] if isinstance(values, str) else list(values)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise RmxError(f"report_to takes tracker names, got {item!r}")
        for name in (part.strip().lower() for part in item.split(",")):
            if name and name != "none" and name not in names:
                names.append(name)
    return tuple(names)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class ReportSpec:
    """Which trackers mirror a run (`--report-to`, or [report] in a pipeline TOML), checked before any work."""

    report_to: tuple[str, ...] = ()
    """Trackers that get the run's slash-key metrics and config: tensorboard, trackio, wandb; none or empty: no tracker."""
    project: str = "rmx"
    """The trackio / W&B project the runs are filed under."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "report_to", parse_report_to(self.report_to))
        unknown = [name for name in self.report_to if name not in TRACKERS]
        if unknown:
            raise RmxError(f"--report-to: unknown tracker '{unknown[0]}' (use none, {', '.join(TRACKERS)})")
        for name in self.report_to:
            if not _installed(PACKAGES[name]):
                raise RmxError(f"--report-to {name} needs the {PACKAGES[name]} package: pip install 'rmx[{name}]'")
        if not isinstance(self.project, str) or not self.project.strip():
            raise RmxError("report project must be a non-empty name")

    def to_json(self) -> dict[str, Any]:
        return {"report_to": list(self.report_to), "project": self.project}


def report_spec_of(config: dict[str, Any]) -> ReportSpec | None:
    """The ReportSpec a job config carries (`report`, or a pipeline's [report]); None when nothing is mirrored."""
    values = config.get("report")
    if values is None and isinstance(config.get("pipeline"), dict):
        values = config["pipeline"].get("report")
    if not values:
        return None
    if not isinstance(values, dict):
        raise RmxError("job config 'report' must be an object: {report_to: [...], project: ...}")
    spec = ReportSpec(**values)
    return spec if spec.report_to else None


class Tracker(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


@contextlib.contextmanager
def _quiet_stdout():
    """trackio and wandb talk on stdout, which `--json` keeps for NDJSON: their chatter goes to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


class _TensorBoard:
    def __init__(self, logdir: Path, name: str, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(logdir), flush_secs=10)
        self._writer.add_text("config", "```json\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        self._writer.close()


class _Trackio:
    def __init__(self, project: str, name: str, config: dict[str, Any]) -> None:
        import trackio

        with _quiet_stdout():
            self._run = trackio.init(project=project, name=name, config=config, embed=False, auto_log_cpu=False,
                                     auto_log_gpu=False)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._run.log(metrics, step=step)

    def close(self) -> None:
        import trackio

        with _quiet_stdout():
            self._run.finish()
        with contextlib.suppress(Exception):  # else trackio's exit hook finishes it again, printing on stdout
            if trackio.context_vars.current_run.get() is self._run:
                trackio.context_vars.current_run.set(None)


class _Wandb:
    def __init__(self, project: str, name: str, config: dict[str, Any], tags: list[str], folder: Path) -> None:
        import wandb

        folder.mkdir(parents=True, exist_ok=True)
        with _quiet_stdout():
            self._run = wandb.init(project=project, name=name, config=config, tags=tags, reinit="create_new",
                                   dir=os.environ.get("WANDB_DIR") or str(folder))

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._run.log(metrics, step=step)

    def close(self) -> None:
        with _quiet_stdout():
            self._run.finish()


def event_metrics(event: dict[str, Any]) -> dict[str, float]:
    """The event's finite numbers under slash keys; an eval score is filed under its benchmark (eval/gsm8k/score)."""
    benchmark = event.get("eval/benchmark")
    metrics = {}
    for key, value in event.items():
        if "/" not in str(key) or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            continue
        if benchmark and key.startswith("eval/"):
            key = f"eval/{benchmark}/{key[len('eval/'):]}"
        metrics[key] = float(value)
    return metrics


def own_step(event: dict[str, Any]) -> int | None:
    """The event's own step count (one of STEP_KEYS), or None."""
    for key in STEP_KEYS:
        if isinstance(event.get(key), (int, float)) and not isinstance(event.get(key), bool):
            return int(event[key])
    return None


def run_step(event: dict[str, Any]) -> int:
    step = event.get("step")
    return int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else 0


@dataclass
class Mirror:
    """Feeds a run's events to its trackers; a sweep's τ lanes become one tracker run each, with τ in config and tags.

    Tracker runs open on the first metric of their lane, so a sweep's bookkeeping events open no empty run.
    """

    spec: ReportSpec
    name: str
    """The run's id: the tracker run's name (plus -tau-X per sweep lane)."""
    folder: Path
    """The run folder: TensorBoard logs go to folder/tensorboard[/tau-X], W&B's files to folder/wandb."""
    config: dict[str, Any]
    kind: str = "run"
    logdir: Path | None = None
    """Where TensorBoard logs go (default folder/tensorboard), a sweep's lanes in tau-X/ under it."""
    _lanes: dict[str | None, list[Tracker]] = field(default_factory=dict)
    _steps: dict[tuple[str | None, str], int] = field(default_factory=dict)
    """The last own step seen per (lane, stage prefix), for the stage's events that carry none."""

    def _open(self, tau: str | None) -> list[Tracker]:
        name = self.name if tau is None else f"{self.name}-tau-{tau}"
        config = {**self.config, "kind": self.kind, **({"tau": tau} if tau is not None else {})}
        tags = [self.kind] + ([f"tau={tau}"] if tau is not None else [])
        logdir = (self.logdir or self.folder / "tensorboard") / (f"tau-{tau}" if tau is not None else "")
        trackers: list[Tracker] = []
        for tracker in self.spec.report_to:
            if tracker == "tensorboard":
                trackers.append(_TensorBoard(logdir, name, config))
            elif tracker == "trackio":
                trackers.append(_Trackio(self.spec.project, name, config))
            elif tracker == "wandb":
                trackers.append(_Wandb(self.spec.project, name, config, tags, self.folder))
        return trackers

    def log(self, event: dict[str, Any]) -> None:
        metrics = event_metrics(event)
        if not metrics:
            return
        tau = event.get("sweep/tau")
        tau = None if tau is None else str(tau)
        stage = (tau, next(iter(metrics)).split("/")[0])
        step = own_step(event)
        if step is None:
            step = self._steps.get(stage, run_step(event))
        else:
            self._steps[stage] = step
        try:
            if tau not in self._lanes:
                self._lanes[tau] = self._open(tau)
            for tracker in self._lanes[tau]:
                tracker.log(metrics, step)
        except Exception as error:  # a tracker must never cost the run: it stops, the run goes on
            logging.getLogger("rmx").warning(f"tracker stopped, the run goes on: {type(error).__name__}: {error}")
            self.spec = ReportSpec((), self.spec.project)
            self.close()

    def close(self) -> None:
        lanes, self._lanes = self._lanes, {}
        for trackers in lanes.values():
            for tracker in trackers:
                tracker.close()


def mirror_events(events: Sequence[dict[str, Any]], mirror: Mirror) -> int:
    """Replay recorded events into `mirror` (closing it); returns how many carried metrics."""
    count = 0
    try:
        for event in events:
            if event_metrics(event):
                count += 1
            mirror.log(event)
    finally:
        mirror.close()
    return count
