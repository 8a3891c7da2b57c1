"""The launch dialog: pick a job kind, edit its TOML config, submit it to the engine; a refusal keeps the text."""

from __future__ import annotations

from typing import Any

# Importing these registers their job kinds in this process: LocalJobs validates a config here, and RemoteClient
# sends the kind's entry so that the daemon can import it.
import engine.jobs.intervene
import engine.jobs.kinds
import engine.jobs.selftest  # noqa: F401
from engine.core.errors import RmxError
from engine.jobs.store import JobsClient, JobStatus
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, OptionList, TextArea
from textual.widgets.option_list import Option

from rmx_tui.job_messages import JobLaunched, LaunchRefused
from rmx_tui.job_templates import KINDS, Defaults, job_config, template
from rmx_tui.workers import describe


class LaunchJob(ModalScreen[JobStatus | None]):
    """Kinds on the left, the chosen kind's config as TOML on the right; ctrl+s launches, esc cancels.

    Dismissed with the new run's status once the engine accepted it. Text edited for one kind is kept while
    another kind is looked at.
    """

    DEFAULT_CSS = """
    LaunchJob { align: center middle; background: $background 60%; }
    LaunchJob > Vertical {
        width: 116; max-width: 100%; height: 90%; padding: 0 1; background: $panel; border: thick $primary;
        border-title-color: $primary; border-title-style: bold;
    }
    LaunchJob #launch-body { height: 1fr; }
    LaunchJob #launch-kinds { width: 13; height: 1fr; }
    LaunchJob #launch-config { width: 1fr; height: 1fr; }
    LaunchJob #launch-error { width: 1fr; height: auto; color: $error; }
    LaunchJob #launch-foot { height: auto; }
    LaunchJob #launch-foot Label { width: 1fr; padding: 1 0 0 0; color: $foreground-muted; }
    """

    BINDINGS = [
        Binding("ctrl+s", "launch", "launch", tooltip="Submit the job with this config"),
        Binding("escape", "dismiss(None)", "cancel"),
    ]

    def __init__(self, client: JobsClient, defaults: Defaults = Defaults()) -> None:
        super().__init__()
        self.client = client
        self.defaults = defaults
        self.kind = KINDS[0]
        self._texts: dict[str, str] = {}
        """The text of every kind shown so far, as the user left it."""
        self._submitting = False

    def compose(self) -> ComposeResult:
        with Vertical() as dialog:
            dialog.border_title = "New job"
            with Horizontal(id="launch-body"):
                yield OptionList(*(Option(kind, id=kind) for kind in KINDS), id="launch-kinds")
                yield TextArea(template(self.kind, self.defaults), id="launch-config", show_line_numbers=True)
            yield Label(id="launch-error", markup=False)  # engine messages name TOML tables: [pool] is not markup
            with Horizontal(id="launch-foot"):
                yield Label("↑↓ picks a kind, tab edits its TOML; ctrl+s launches, esc cancels")
                yield Button("Launch", variant="primary", id="launch")

    def on_mount(self) -> None:
        self.query_one("#launch-error", Label).display = False

    @on(OptionList.OptionHighlighted, "#launch-kinds")
    def _pick(self, event: OptionList.OptionHighlighted) -> None:
        kind = event.option.id
        if kind is None or kind == self.kind:
            return
        config = self.query_one("#launch-config", TextArea)
        self._texts[self.kind] = config.text
        self.kind = kind
        config.load_text(self._texts.get(kind) or template(kind, self.defaults))
        self._show_error(None)

    @on(Button.Pressed, "#launch")
    def _pressed(self) -> None:
        self.action_launch()

    def action_launch(self) -> None:
        if self._submitting:  # a second submit would start a second job: the first one cannot be called back
            return
        try:
            config = job_config(self.kind, self.query_one("#launch-config", TextArea).text)
        except RmxError as error:
            self._show_error(str(error))
            return
        self._submitting = True
        self.query_one("#launch", Button).disabled = True
        self._show_error(None)
        self._submit(self.kind, config)

    @work(thread=True, exclusive=True, exit_on_error=False, group="launch")
    def _submit(self, kind: str, config: dict[str, Any]) -> None:
        try:
            self.post_message(JobLaunched(self.client.submit_job(kind, config)))
        except Exception as error:
            self.post_message(LaunchRefused(describe(error)))

    def on_job_launched(self, message: JobLaunched) -> None:
        self.dismiss(message.status)

    def on_launch_refused(self, message: LaunchRefused) -> None:
        self._submitting = False
        self.query_one("#launch", Button).disabled = False
        self._show_error(message.error)

    def _show_error(self, error: str | None) -> None:
        label = self.query_one("#launch-error", Label)
        label.update(error or "")
        label.display = error is not None
