"""Live progress for long CLI runs on a terminal: one rich bar per stage with rate, elapsed, ETA and the last item."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)

STAGE_COUNTERS = {
    "rollouts": ("rollouts/done", "rollouts/total"),
    "train": ("train/step", "train/total"),
    "distill": ("distill/step", "distill/total"),
    "intervene": ("intervene/done", "intervene/total"),
    "analyze": ("analyze/done", "analyze/total"),
}
"""Stages whose events count items: (done key, total key)."""


def _last_item(stage: str, event: dict[str, Any]) -> str | None:
    """What the stage's latest item came to: a verdict, a loss."""
    if stage == "rollouts" and "rollouts/problem" in event:
        return f"{event['rollouts/problem']}: {event['rollouts/correct']}/{event['rollouts/k']} correct"
    if stage == "train" and "train/loss" in event:
        return f"loss {event['train/loss']:.4f}"
    if stage == "distill" and "distill/kl" in event:
        return f"KL {event['distill/kl']:.4f}"
    if stage == "intervene" and "intervene/problem" in event:
        oracle = event.get("intervene/pass@1/oracle")
        return event["intervene/problem"] + ("" if oracle is None else f"  oracle pass@1 {oracle:.2f}")
    return None


class LiveProgress:
    """An emit callback that draws events as bars (one per stage, pipeline stages included) on a terminal.

    Events that count nothing (a checkpoint, a warning, an eval score) print as the plain line they would be.
    """

    def __init__(self, console: Console, plain: Callable[[dict[str, Any]], str | None]) -> None:
        self.plain = plain
        self.progress = Progress(
            TextColumn("[bold]{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[last]}"), console=console, refresh_per_second=4,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> "LiveProgress":
        self.progress.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.progress.stop()

    def _task(self, stage: str, total: float | None = None) -> TaskID:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, rate="", last="")
        return self.tasks[stage]

    def __call__(self, event: dict[str, Any]) -> None:
        counted = False
        for stage, (done_key, total_key) in STAGE_COUNTERS.items():
            if done_key in event and total_key in event:
                task = self._task(stage, event[total_key])
                self.progress.update(task, completed=event[done_key], total=event[total_key],
                                     last=_last_item(stage, event) or "")
                counted = True
        rate = event.get("rollouts/tok_s") or event.get("train/tok_s")
        if rate:
            stage = "rollouts" if "rollouts/tok_s" in event else "train"
            self.progress.update(self._task(stage), rate=f"{rate:,.0f} tok/s" if rate >= 10 else f"{rate:.1f} tok/s")
            counted = True
        if "pipeline/stage" in event:
            # The pipeline's own bar per stage: running, then full when done or reused.
            stage, state = f"▸ {event['pipeline/stage']}", event["pipeline/state"]
            task = self._task(stage, 1)
            self.progress.update(task, completed=1 if state in ("done", "reused") else 0, last=state)
            counted = True
        if not counted:
            line = self.plain(event)
            if line is not None:
                self.progress.console.print(line, markup=False, highlight=False)


@contextlib.contextmanager
def live_or_plain(plain: Callable[[dict[str, Any]], str | None]) -> Iterator[Callable[[dict[str, Any]], None]]:
    """An emit callback: live bars on a terminal, else `plain`'s one line per event on stderr (pipes, CI)."""
    if not sys.stderr.isatty():
        def emit(event: dict[str, Any]) -> None:
            line = plain(event)
            if line is not None:
                print(line, file=sys.stderr, flush=True)

        yield emit
        return
    with LiveProgress(Console(stderr=True), plain) as live:
        yield live
