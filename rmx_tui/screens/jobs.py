"""The jobs screen: every run with its live progress, the τ-sweep grid, and launch, open, cancel, resume and follow."""

from __future__ import annotations

import time

from engine.service.client import EngineClient
from engine.service.workbench import Workbench
from engine.jobs.store import JobsClient, JobStatus
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Label, Static
from textual.worker import Worker, WorkerState

from rmx_tui.job_messages import JobCallFailed, JobCancelRequested, JobResumed, JobsListed, JobViewRead, SweepRead
from rmx_tui.job_templates import Defaults
from rmx_tui.workers import describe
from rmx_tui.screens.launch import LaunchJob
from rmx_tui.screens.modals import MODAL_CSS
from rmx_tui.screens.pool import PoolScreen, rollouts_file_of
from rmx_tui.screens.run import RunScreen
from rmx_tui.widgets.job_table import JobTable
from rmx_tui.widgets.tau_grid import SWEEP_KINDS, TauGrid, configured_tau, sweep_points

REFRESH_S = 1.0
"""How often the runs are listed while following."""
SWEEP_S = 5.0
"""How often the logs of running train and sweep runs are read again for the τ grid."""


class ConfirmCancel(ModalScreen[bool]):
    """Asks before a job is cancelled: y cancels it, n or esc keeps it running."""

    DEFAULT_CSS = MODAL_CSS.format(name="ConfirmCancel")
    BINDINGS = [
        Binding("y", "dismiss(True)", "cancel the job"),
        Binding("n,escape", "dismiss(False)", "keep it running"),
    ]

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Cancel {self.job_id}?")
            yield Label("It finishes its current step, then ends cancelled; r resumes it later from its checkpoint.",
                        classes="hint")
            yield Label("y cancels it, n or esc keeps it running.", classes="hint")


class JobsScreen(Screen):
    """The runs of a JobsClient, newest first, refreshed every second; works with no model loaded."""

    DEFAULT_CSS = """
    JobsScreen #jobs-title { height: auto; padding: 0 1; background: $panel; }
    JobsScreen #job-detail { height: auto; padding: 0 1; color: $foreground-muted; }
    JobsScreen #tau-grid { border-top: solid $foreground 20%; }
    """

    BINDINGS = [
        Binding("n", "new", "new job", tooltip="Launch a job: pick its kind, edit its TOML config, ctrl+s submits"),
        Binding("enter", "open", "open", tooltip="Open the run: its event history replayed, then followed live"),
        Binding("c", "cancel", "cancel", tooltip="Cancel the job under the cursor (asks first)"),
        Binding("r", "resume", "resume", tooltip="Resume a failed, cancelled or diverged job from its checkpoint"),
        Binding("f", "follow", "follow", tooltip="Pause or resume refreshing the list (resuming refreshes at once)"),
        Binding("p", "pool", "pool", tooltip="Inspect the pool of a rollouts, pool or pipeline run: pass rates, "
                "lengths, decision points per τ"),
        Binding("escape", "app.pop_screen", "back"),
    ]

    def __init__(self, client: JobsClient) -> None:
        super().__init__()
        self.client = client
        self.following = True
        self._error: str | None = None
        self._listing: Worker | None = None
        self._sweeping: Worker | None = None
        self._sweep_read: dict[str, int] = {}
        """Events read so far per train or sweep run."""
        self._sweep_tau: dict[str, str] = {}
        self._sweep_final: set[str] = set()
        """Runs whose log was read after they had ended: nothing more to read unless they are resumed."""
        self._sweep_due = 0.0
        self._launched: str | None = None
        """A run just launched from here: the cursor goes to it once a listing shows it."""

    def compose(self) -> ComposeResult:
        yield Static(id="jobs-title")
        yield JobTable(id="jobs-table")
        yield Static(id="job-detail")
        yield TauGrid(id="tau-grid")
        yield Footer()

    def on_mount(self) -> None:
        grid = self.query_one(TauGrid)
        grid.border_title = "τ sweep"
        grid.display = False
        self.set_interval(REFRESH_S, self._tick)
        self._retitle()

    # --- workers ----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="jobs-list")
    def _list(self) -> None:
        try:
            self.post_message(JobsListed(self.client.list_jobs(), time.time()))
        except Exception as error:
            self.post_message(JobCallFailed("list", describe(error)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="jobs-sweep")
    def _read_sweeps(self, targets: list[tuple[str, int, str | None]]) -> None:
        """For each (run, events read, τ if known): its new events, reduced to τ-grid points."""
        for job_id, since, tau in targets:
            try:
                if tau is None:
                    spec = self.client.job(job_id).spec  # None for a damaged run: no τ to read
                    tau = configured_tau(spec.config if spec is not None else {})
                events = list(self.client.job_events(job_id, follow=False, since=since))
                self.post_message(SweepRead(job_id, tau, since + len(events), sweep_points(events)))
            except Exception as error:
                self.post_message(JobCallFailed("sweep", describe(error), job_id))

    @work(thread=True, exclusive=True, exit_on_error=False, group="jobs-view")
    def _view_for_pool(self, job_id: str) -> None:
        """The run's config and the outputs its result.json lists, through the jobs client (a daemon's too)."""
        try:
            self.post_message(JobViewRead(self.client.job(job_id)))
        except Exception as error:
            self.post_message(JobCallFailed("pool", describe(error), job_id))

    @work(thread=True, exclusive=True, exit_on_error=False, group="jobs-act")
    def _cancel(self, job_id: str) -> None:
        try:
            self.post_message(JobCancelRequested(self.client.cancel_job(job_id)))
        except Exception as error:
            self.post_message(JobCallFailed("cancel", describe(error), job_id))

    @work(thread=True, exclusive=True, exit_on_error=False, group="jobs-act")
    def _resume(self, job_id: str) -> None:
        try:
            self.post_message(JobResumed(self.client.resume_job(job_id)))
        except Exception as error:
            self.post_message(JobCallFailed("resume", describe(error), job_id))

    @staticmethod
    def _busy(worker: Worker | None) -> bool:
        return worker is not None and worker.state in (WorkerState.PENDING, WorkerState.RUNNING)

    def _refresh(self) -> None:
        """List the runs, unless a listing is still on its way (a slow daemon must not pile them up)."""
        if not self._busy(self._listing):
            self._listing = self._list()

    def _tick(self) -> None:
        if self.following and self.is_current:
            self._refresh()

    def on_screen_resume(self) -> None:
        self._refresh()

    # --- what the workers report ------------------------------------------------------------

    def on_jobs_listed(self, message: JobsListed) -> None:
        self._error = None
        table = self.query_one(JobTable)
        table.show(message.statuses, message.at)
        if self._launched in table.statuses:
            table.move_cursor(row=table.get_row_index(self._launched))
            self._launched = None
        self._show_detail()
        self._retitle()
        self._follow_sweeps(message.statuses)

    def _follow_sweeps(self, statuses: list[JobStatus]) -> None:
        """Read train and sweep logs: once when first listed, every SWEEP_S while they run, once after they end."""
        if self._busy(self._sweeping):
            return
        now = time.monotonic()
        periodic = now >= self._sweep_due
        targets = []
        for status in statuses:
            if status.kind not in SWEEP_KINDS:
                continue
            first = status.id not in self._sweep_read
            if status.active:
                self._sweep_final.discard(status.id)
                if not (first or periodic):
                    continue
            elif status.id in self._sweep_final:
                continue
            else:
                self._sweep_final.add(status.id)
            targets.append((status.id, self._sweep_read.get(status.id, 0), self._sweep_tau.get(status.id)))
        if periodic:
            self._sweep_due = now + SWEEP_S
        if targets:
            self._sweeping = self._read_sweeps(targets)

    def on_sweep_read(self, message: SweepRead) -> None:
        self._sweep_read[message.job_id] = message.read
        self._sweep_tau[message.job_id] = message.tau
        grid = self.query_one(TauGrid)
        status = self.query_one(JobTable).statuses.get(message.job_id)
        grid.fold(message.job_id, message.tau, message.points, status is not None and status.active)
        grid.display = not grid.empty

    def on_job_cancel_requested(self, message: JobCancelRequested) -> None:
        self.notify(f"{message.status.id} finishes its step, then ends cancelled", title="cancel requested")
        self._refresh()

    def on_job_resumed(self, message: JobResumed) -> None:
        self.notify(f"{message.status.id}: attempt {message.status.attempt}", title="resumed")
        self._refresh()

    def on_job_call_failed(self, message: JobCallFailed) -> None:
        if message.during == "list":  # repeats every second while it lasts: a title line, not a stack of toasts
            self._error = message.error
            self._retitle()
            return
        if message.during == "sweep" and message.job_id is not None:  # tried again with the periodic reads only
            self._sweep_read.setdefault(message.job_id, 0)
        self.notify(message.error, title=f"{message.during} failed", severity="error")

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table is self.query_one(JobTable):
            self.action_open()

    # --- actions ----------------------------------------------------------------------------

    def _selected(self) -> JobStatus | None:
        status = self.query_one(JobTable).selected
        if status is None:
            self.notify("no run selected", severity="warning")
        return status

    def action_new(self) -> None:
        # The workbench's loaded models fill the templates in; a bare host app (tests) has none.
        defaults = Defaults.of(getattr(self.app, "info", None), self.query_one(JobTable).statuses.values(),
                               lambda job_id: self.client.job(job_id).outputs)

        def launched(status: JobStatus | None) -> None:
            if status is not None:
                self._launched = status.id
                self.notify(status.id, title=f"{status.kind} launched")
                self._refresh()

        self.app.push_screen(LaunchJob(self.client, defaults), launched)

    def action_open(self) -> None:
        status = self._selected()
        if status is not None:
            self.app.push_screen(RunScreen(self.client, status.id))

    def action_cancel(self) -> None:
        status = self._selected()
        if status is None:
            return
        if not status.active:
            self.notify(f"{status.id} is already {status.state}", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._cancel(status.id)

        self.app.push_screen(ConfirmCancel(status.id), confirmed)

    def action_resume(self) -> None:
        status = self._selected()
        if status is not None:
            self._resume(status.id)

    def action_pool(self) -> None:
        status = self._selected()
        if status is not None:
            self._view_for_pool(status.id)

    def on_job_view_read(self, message: JobViewRead) -> None:
        view = message.view
        kind = view.status.kind
        config = view.spec.config if view.spec is not None else {}
        path = rollouts_file_of(view.outputs, kind, config)
        if path is None:
            self.notify(f"a {kind} run has no pool: p inspects finished rollouts and pipeline runs, "
                        "and pool runs", severity="warning")
            return
        pool = config.get("pool") if kind == "pool" and isinstance(config.get("pool"), dict) else {}
        engine = getattr(self.app, "client", None)
        # The workbench's client scores the pool under its loaded base; a bare host has none but reads the file.
        self.app.push_screen(PoolScreen(engine if isinstance(engine, EngineClient) else Workbench(), path,
                                        size=pool.get("size"), keep_shortest=pool.get("keep_shortest", 1.0)))

    def action_follow(self) -> None:
        self.following = not self.following
        if self.following:
            self._refresh()
        self._retitle()

    # --- text -------------------------------------------------------------------------------

    def _show_detail(self) -> None:
        status = self.query_one(JobTable).selected
        detail = self.query_one("#job-detail", Static)
        if status is None:
            detail.update("no runs yet: n launches one, and every job submitted to this engine shows here")
        elif status.error:
            detail.update(Content.assemble((f"{status.state}: ", "bold $error"), (status.error, "$error")))
        else:
            event = status.last_event or {}
            fields = "  ".join(f"{key}={value}" for key, value in event.items() if key not in ("t", "step"))
            detail.update(f"last event (step {event.get('step', '—')}): {fields}" if fields else "no event yet")

    def _retitle(self) -> None:
        table = self.query_one(JobTable)
        active = sum(status.active for status in table.statuses.values())
        runs = len(table.statuses)
        parts: list[str | tuple[str, str]] = [("jobs", "bold"),
                                              f" · {runs} run{'' if runs == 1 else 's'} · {active} active · "]
        if self.following:
            parts.append(("following", "$success"))
            parts.append((f" (every {REFRESH_S:g} s)", "$foreground-muted"))
        else:
            parts.append(("paused: f follows", "$warning"))
        if self._error:
            parts += ["\n", ("cannot list the runs: ", "bold $error"), (self._error, "$error")]
        self.query_one("#jobs-title", Static).update(Content.assemble(*parts))
