"""The jobs table: one row per run, newest first, with its state, a progress bar, ETA, tok/s and running time."""

from __future__ import annotations

from engine.jobs.store import JobStatus
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

BAR = 16
"""Cells of the progress bar."""
EIGHTHS = " ▏▎▍▌▋▊▉"
COLUMNS = {"run": 29, "kind": 9, "state": 12, "progress": BAR + 12, "ETA": 7, "tok/s": 6, "time": 7}
"""Each column and its fixed width: the table does not jitter as jobs move, and the header is laid out with the rows."""


def duration(seconds: float) -> str:
    """`4.2s`, `3m05s`, `2h03m`: short enough for a table cell."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def rate(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def tok_s(event: dict | None) -> float | None:
    """The value of the event's `*/tok_s` key, if it has a number there."""
    for key, value in (event or {}).items():
        if key.endswith("/tok_s") and type(value) in (int, float):
            return float(value)
    return None


class JobTable(DataTable):
    """Runs newest first; rows update in place, so the cursor stays on its run while the jobs move."""

    BINDINGS = [Binding("enter", "select_cursor", "open",
                        tooltip="Open the run: its event history replayed, then followed live")]

    COMPONENT_CLASSES = {
        "job-table--queued", "job-table--running", "job-table--done", "job-table--failed", "job-table--cancelled",
        "job-table--diverged", "job-table--damaged", "job-table--track", "job-table--muted",
    }

    DEFAULT_CSS = """
    JobTable { height: 1fr; }
    JobTable > .job-table--queued { color: $foreground-muted; }
    JobTable > .job-table--running { color: $warning; text-style: bold; }
    JobTable > .job-table--done { color: $success; }
    JobTable > .job-table--failed { color: $error; text-style: bold; }
    JobTable > .job-table--cancelled { color: $secondary; }
    JobTable > .job-table--diverged { color: $error; text-style: bold italic; }
    JobTable > .job-table--damaged { color: $error; text-style: reverse; }
    JobTable > .job-table--track { color: $foreground-muted; }
    JobTable > .job-table--muted { color: $foreground-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.statuses: dict[str, JobStatus] = {}
        self._at = 0.0
        self._origins: dict[tuple[str, int], tuple[float, int]] = {}
        """Per run and attempt, the first (heartbeat, step) seen: where its step rate is measured from."""
        self._tok_s: dict[str, float] = {}
        """The latest `*/tok_s` seen per run: a job's last event is not always the one that carries it."""

    def on_mount(self) -> None:
        for name, width in COLUMNS.items():
            self.add_column(name, key=name, width=width)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._rebuild())

    @property
    def selected(self) -> JobStatus | None:
        """The run under the cursor."""
        if not self.row_count:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return self.statuses.get(row_key.value)

    def show(self, statuses: list[JobStatus], at: float) -> None:
        """Show a listing taken at unix time `at`: changed cells are rewritten, a new or vanished run reorders."""
        self._at = at
        for status in statuses:
            seen = tok_s(status.last_event)
            if seen is not None:
                self._tok_s[status.id] = seen
            if status.active:
                self._origins.setdefault((status.id, status.attempt), (status.heartbeat or at, status.step))
        fresh = {status.id: status for status in statuses}
        if fresh.keys() != self.statuses.keys():
            self.statuses = fresh
            self._rebuild()
            return
        for job_id, status in fresh.items():
            if status != self.statuses[job_id] or status.active:
                for name, cell in zip(COLUMNS, self._cells(status)):
                    self.update_cell(job_id, name, cell)
        self.statuses = fresh

    def _rebuild(self) -> None:
        keep = self.selected
        self.clear()
        for status in sorted(self.statuses.values(), key=lambda s: (s.created, s.id), reverse=True):
            self.add_row(*self._cells(status), key=status.id)
        if keep is not None and keep.id in self.statuses:
            self.move_cursor(row=self.get_row_index(keep.id))

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"job-table--{name}", partial=True)

    def _cells(self, status: JobStatus) -> tuple[Text, ...]:
        muted = self._style("muted")
        state = Text(status.state, style=self._style(status.state))
        if status.attempt > 1:
            state.append(f" #{status.attempt}", style=muted)
        speed = self._tok_s.get(status.id)
        return (
            Text(status.id), Text(status.kind), state, self._progress(status),
            Text(self._eta(status), style=muted), Text(rate(speed) if speed is not None else "—", style=muted),
            Text(self._elapsed(status)),
        )

    def _progress(self, status: JobStatus) -> Text:
        if not status.total:
            if status.cluster:  # a Ray job: how many of its tasks are busy (`rmx jobs show` names the cluster)
                return Text(f"ray {status.cluster.rpartition(', ')[2]}", style=self._style("muted"))
            return Text(f"step {status.step}" if status.step else "", style=self._style("muted"))
        fraction = min(max(status.step / status.total, 0.0), 1.0)
        eighths = round(fraction * BAR * 8)
        full, part = divmod(eighths, 8)
        bar = Text("█" * full + (EIGHTHS[part] if part else ""), style=self._style(status.state))
        bar.append("·" * (BAR - full - (1 if part else 0)), style=self._style("track"))
        bar.append(f" {status.step}/{status.total}")
        return bar

    def _eta(self, status: JobStatus) -> str:
        if status.state != "running" or not status.total or status.heartbeat is None:
            return "—" if status.state == "running" else ""
        if status.attempt == 1 and status.started is not None:
            origin = (status.started, 0)
        else:
            origin = self._origins.get((status.id, status.attempt), (status.heartbeat, status.step))
        steps, seconds = status.step - origin[1], status.heartbeat - origin[0]
        if steps <= 0 or seconds <= 0:
            return "—"
        return duration(max(status.total - status.step, 0) * seconds / steps)

    def _elapsed(self, status: JobStatus) -> str:
        if status.started is None:
            return ""
        return duration((status.ended if status.ended is not None else self._at) - status.started)
