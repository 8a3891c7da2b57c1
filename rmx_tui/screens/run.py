"""The run view: a run's whole event history replayed, then followed live, as plots of the numeric keys you pick."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from queue import Empty, SimpleQueue
from typing import Any, Callable, Iterator

from engine.jobs.store import JobsClient, JobView
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, SelectionList, Static
from textual.worker import Worker, WorkerState, get_current_worker

from rmx_tui.job_messages import EventsArrived, EventsEnded, JobCallFailed, JobProgressed
from rmx_tui.workers import describe
from rmx_tui.widgets.metric_plot import MetricPlot, Series

FLUSH_S = 1 / 30
"""Events are batched this long: at most one message a frame, however fast the job writes."""
MAX_BATCH = 2000
"""Most events in one batch: folding a batch stays a few ms of the UI thread, even while a long log replays."""
DRAW_S = 0.25
"""How often plots with new points are redrawn, at most."""
PLOT_SHARE = 0.25
"""Largest share of the UI thread that redrawing plots may take: slow renders space the redraws out."""
STATUS_S = 1.0
"""How often the run's status is read."""
COLOURS = ("primary", "accent", "secondary", "success", "warning", "error")
"""Theme variables the plots cycle through, in the order keys are picked."""
_END = object()


def fold(series: dict[str, Series], events: list[dict[str, Any]]) -> list[str]:
    """Append each event's numeric values to their keys' series; returns the keys seen for the first time."""
    fresh = []
    for event in events:
        step = event.get("step")
        if type(step) not in (int, float):
            step = 0
        for key, value in event.items():
            if type(value) in (int, float) and key != "t" and key != "step":
                points = series.get(key)
                if points is None:
                    points = series[key] = Series(key)
                    fresh.append(key)
                points.xs.append(step)
                points.ys.append(value)
    return fresh


def _pump(events: Iterator[dict[str, Any]], inbox: SimpleQueue, stop: threading.Event) -> None:
    """The reader thread: moves events from the blocking stream into `inbox`, then `_END` or the error."""
    try:
        for event in events:
            if stop.is_set():
                return
            inbox.put(event)
        inbox.put(_END)
    except Exception as error:
        inbox.put(error)
    finally:
        if isinstance(events, Generator):  # a stream over HTTP: close it now, not when collected
            events.close()


def batches(inbox: SimpleQueue, cancelled: Callable[[], bool]) -> Iterator[list[dict[str, Any]]]:
    """The inbox's events in batches: a batch closes FLUSH_S after its first event, so none waits longer, or at
    MAX_BATCH events."""
    batch: list[dict[str, Any]] = []
    due = 0.0
    while not cancelled():
        try:
            item = inbox.get(timeout=max(due - time.monotonic(), 0.0) if batch else FLUSH_S)
        except Empty:
            item = None
        if isinstance(item, dict):
            if not batch:
                due = time.monotonic() + FLUSH_S
            batch.append(item)
            if len(batch) < MAX_BATCH and time.monotonic() < due:
                continue
        if batch:
            yield batch
            batch = []
        if item is _END:
            return
        if isinstance(item, Exception):
            raise item


class RunScreen(Screen):
    """Keys seen so far on the left (space picks), one plot per picked key on the right, the run's status on top."""

    DEFAULT_CSS = """
    RunScreen #run-title { height: auto; padding: 0 1; background: $panel; }
    RunScreen #run-body { height: 1fr; }
    RunScreen #run-keys {
        width: 36; height: 1fr; border: round $foreground 30%; border-title-color: $primary;
    }
    RunScreen #run-keys:focus { border: round $primary; }
    RunScreen #run-plots { width: 1fr; }
    RunScreen #run-empty { padding: 1 2; color: $foreground-muted; }
    """

    BINDINGS = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("f", "follow", "follow", tooltip="Pause or resume redrawing the plots (events keep arriving)"),
        Binding("s", "cycle(1)", "next series", tooltip="Plot the next listed series alone (S: the previous one)"),
        Binding("S", "cycle(-1)", "previous series", show=False),
        Binding("a", "plot_all", "all series", tooltip="Plot every listed series, or back to one"),
    ]

    def __init__(self, client: JobsClient, job_id: str) -> None:
        super().__init__()
        self.client = client
        self.job_id = job_id
        self.series: dict[str, Series] = {}
        self.plots: dict[str, MetricPlot] = {}
        self.received = 0
        """Events received so far, all of them counted: where a re-attached stream resumes."""
        self.view: JobView | None = None
        self.following = True
        self.ended = False
        """The stream drained the log of a job in its final state."""
        self.attempt = 0
        """The latest attempt whose events arrived (`job/attempt`): a higher one in the status is a resume."""
        self._picked_any = False
        self._next_draw = 0.0
        self._stream: Worker | None = None
        self._folded = threading.Event()
        """Set when the UI has folded the last batch it was sent: the stream then sends the next."""
        self._folded.set()
        self._status: Worker | None = None
        self._error: str | None = None
        self._title: list[str | tuple[str, str]] = []

    def compose(self) -> ComposeResult:
        yield Static(id="run-title")
        with Horizontal(id="run-body"):
            yield SelectionList[str](id="run-keys")
            with VerticalScroll(id="run-plots"):
                yield Static("no numeric event yet", id="run-empty")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#run-keys", SelectionList).border_title = "space toggles · s next · a all"
        self._stream = self._follow(0)
        self._poll_status()
        self.set_interval(STATUS_S, self._poll_status)
        self.set_interval(DRAW_S, self._draw)
        self._retitle()

    # --- workers ----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="run-events")
    def _follow(self, since: int) -> None:
        """Replay the log from event `since`, then follow it until the job ends, in batches.

        The client's stream blocks until its next event, so a reader thread feeds an inbox that this
        worker drains with a timeout: the last events before a pause arrive within FLUSH_S, not at the next event.
        One batch is in flight at a time: while the UI folds it, the next one gathers in the inbox, so a job
        writing faster than the UI can fold makes bigger batches, never a backlog of messages.
        """
        worker = get_current_worker()
        inbox: SimpleQueue = SimpleQueue()
        stop = threading.Event()
        events = self.client.job_events(self.job_id, follow=True, since=since)
        threading.Thread(target=_pump, args=(events, inbox, stop), daemon=True,
                         name=f"rmx-events-{self.job_id}").start()
        try:
            for batch in batches(inbox, lambda: worker.is_cancelled):
                while not self._folded.wait(FLUSH_S):
                    if worker.is_cancelled:
                        return
                self._folded.clear()
                self.post_message(EventsArrived(self.job_id, batch))
        except Exception as error:
            self.post_message(JobCallFailed("events", describe(error), self.job_id))
            return
        finally:
            stop.set()
        if not worker.is_cancelled:
            self.post_message(EventsEnded(self.job_id))

    @work(thread=True, exclusive=True, exit_on_error=False, group="run-status")
    def _read_status(self) -> None:
        try:
            self.post_message(JobProgressed(self.client.job(self.job_id)))
        except Exception as error:
            self.post_message(JobCallFailed("status", describe(error), self.job_id))

    def _poll_status(self) -> None:
        if self._status is None or self._status.state not in (WorkerState.PENDING, WorkerState.RUNNING):
            self._status = self._read_status()

    # --- what the workers report ------------------------------------------------------------

    def on_events_arrived(self, message: EventsArrived) -> None:
        try:
            self._fold(message.events)
        finally:
            self._folded.set()

    def _fold(self, events: list[dict[str, Any]]) -> None:
        self.received += len(events)
        fresh = fold(self.series, events)
        attempts = self.series.get("job/attempt")
        if attempts is not None:
            self.attempt = int(attempts.ys[-1])
        if fresh:
            keys = self.query_one("#run-keys", SelectionList)
            keys.add_options([(key, key) for key in fresh])
            if not self._picked_any:
                first = next((key for key in fresh if not key.startswith("job/")), None)
                if first is not None:
                    self._picked_any = True
                    keys.select(first)
            self.query_one("#run-empty", Static).update("space picks a key to plot")

    def on_events_ended(self, _message: EventsEnded) -> None:
        self.ended = True
        self._poll_status()
        self._retitle()

    def on_job_progressed(self, message: JobProgressed) -> None:
        self.view = message.view
        self._error = None
        status = message.view.status
        streaming = self._stream is not None and self._stream.state in (WorkerState.PENDING, WorkerState.RUNNING)
        if status.active and status.attempt > self.attempt and not streaming:  # resumed since the stream ended
            self.ended = False
            self._stream = self._follow(self.received)
        self._retitle()

    def on_job_call_failed(self, message: JobCallFailed) -> None:
        self._error = f"{message.during}: {message.error}"
        self._retitle()

    @on(SelectionList.SelectedChanged, "#run-keys")
    def _picked(self) -> None:
        picked = self.query_one("#run-keys", SelectionList).selected
        self._picked_any = self._picked_any or bool(picked)
        holder = self.query_one("#run-plots", VerticalScroll)
        for key in [key for key in self.plots if key not in picked]:
            self.plots.pop(key).remove()
        for key in picked:
            if key not in self.plots:
                self.plots[key] = MetricPlot(self.series[key], COLOURS[len(self.plots) % len(COLOURS)])
                holder.mount(self.plots[key])
        self.query_one("#run-empty", Static).display = not self.plots

    # --- actions and drawing ----------------------------------------------------------------

    def _listed(self) -> list[str]:
        keys = self.query_one("#run-keys", SelectionList)
        return [keys.get_option_at_index(index).value for index in range(keys.option_count)]

    def action_cycle(self, step: int) -> None:
        """Plot one series: the one after (or before) the first plotted, in the list's order."""
        listed = self._listed()
        if not listed:
            self.notify("no numeric series yet", timeout=3)
            return
        keys = self.query_one("#run-keys", SelectionList)
        current = next((index for index, key in enumerate(listed) if key in keys.selected), -step)
        chosen = listed[(current + step) % len(listed)]
        keys.deselect_all()
        keys.select(chosen)
        keys.highlighted = listed.index(chosen)

    def action_plot_all(self) -> None:
        keys = self.query_one("#run-keys", SelectionList)
        if len(keys.selected) == keys.option_count:
            self.action_cycle(0)
        else:
            keys.select_all()

    def action_follow(self) -> None:
        self.following = not self.following
        self._next_draw = 0.0
        self._draw()

    def _draw(self) -> None:
        """Redraw the plots that have new points, no sooner than their last renders' cost allows."""
        now = time.monotonic()
        if self.following and now >= self._next_draw:
            stale = [plot for plot in self.plots.values() if plot.stale]
            for plot in stale:
                plot.redraw()
            self._next_draw = now + max(DRAW_S, sum(plot.cost for plot in stale) / PLOT_SHARE)
        self._retitle()

    def _retitle(self) -> None:
        parts: list[str | tuple[str, str]] = [(self.job_id, "bold")]
        status = self.view.status if self.view else None
        if status is not None:
            state_style = {"running": "bold $warning", "done": "$success", "failed": "bold $error",
                           "diverged": "bold $error", "damaged": "bold $error", "cancelled": "$secondary"}.get(status.state, "$foreground-muted")
            progress = f"{status.step}/{status.total}" if status.total else f"step {status.step}"
            parts += [f" · {status.kind} · ", (status.state, state_style), f" · {progress}"]
            if status.attempt > 1:
                parts.append(f" · attempt {status.attempt}")
        parts.append(f" · {self.received} events · ")
        if self.ended:
            parts.append(("whole log read", "$foreground-muted"))
        elif self.following:
            parts.append(("following", "$success"))
        else:
            parts.append(("paused: f resumes", "$warning"))
        if status is not None and status.error:
            parts += ["\n", (status.error, "$error")]
        if self._error:
            parts += ["\n", (self._error, "$error")]
        if parts != self._title:  # redrawn four times a second: repaint only what changed
            self._title = parts
            self.query_one("#run-title", Static).update(Content.assemble(*parts))
