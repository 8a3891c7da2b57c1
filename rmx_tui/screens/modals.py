"""Small dialogs: type a token to force, and load another base/teacher pair."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

MODAL_CSS = """
{name} {{ align: center middle; background: $background 60%; }}
{name} > Vertical {{
    width: 64; height: auto; padding: 1 2; background: $panel; border: thick $primary;
}}
/* A label is as wide as its text unless told otherwise: fill the box so long hints wrap inside it. */
{name} Label {{ width: 100%; }}
{name} Label.hint {{ color: $foreground-muted; }}
"""


class TokenPrompt(ModalScreen[str | None]):
    """Asks for a token to force: its text (`' Wait'`, several tokens are forced in turn) or `#id`."""

    DEFAULT_CSS = MODAL_CSS.format(name="TokenPrompt")
    BINDINGS = [Binding("escape", "dismiss(None)", "cancel")]

    def __init__(self, position: int, current: str) -> None:
        super().__init__()
        self.position = position
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Force a token at position {self.position} (now {self.current})")
            yield Input(placeholder="text, e.g.  Wait   or an id, e.g. #1234", id="token")
            yield Label("Text is tokenized; a text of several tokens forces each in turn. "
                        "Leading spaces count. Enter forks, esc cancels.", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value if event.value else None)


class LoadModel(ModalScreen[tuple[str, str | None] | None]):
    """Asks for a base model and an optional teacher to load in place of the current pair."""

    DEFAULT_CSS = MODAL_CSS.format(name="LoadModel")
    BINDINGS = [Binding("escape", "dismiss(None)", "cancel")]

    def __init__(self, base: str, teacher: str | None) -> None:
        super().__init__()
        self.base = base
        self.teacher = teacher

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Load models")
            yield Input(self.base, placeholder="base: a hub id, a folder, a .gguf file or demo", id="base")
            yield Input(self.teacher or "", placeholder="teacher (optional, same tokenizer)", id="teacher")
            yield Label("Enter loads, esc cancels. The current models stay loaded if this fails.", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        base = self.query_one("#base", Input).value.strip()
        teacher = self.query_one("#teacher", Input).value.strip()
        self.dismiss((base, teacher or None) if base else None)


class AdapterPrompt(ModalScreen[str | None]):
    """Asks for the adapter whose edits the compare view sets beside the teacher's (prefilled: the newest trained)."""

    DEFAULT_CSS = MODAL_CSS.format(name="AdapterPrompt")
    BINDINGS = [Binding("escape", "dismiss(None)", "cancel")]

    def __init__(self, suggested: str | None) -> None:
        super().__init__()
        self.suggested = suggested

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Compare the teacher's edits with an adapter's (a PEFT folder for the loaded base)")
            yield Input(value=self.suggested or "", placeholder="path/to/adapter", id="adapter")
            yield Label("Prefilled with the newest finished train or pipeline job's adapter. Enter compares on "
                        "the base's greedy rollout of this problem, esc cancels.", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)


class ExportFormat(ModalScreen[str | None]):
    """Asks in which format to export the branch under the cursor."""

    DEFAULT_CSS = MODAL_CSS.format(name="ExportFormat")
    BINDINGS = [
        Binding("escape", "dismiss(None)", "cancel"),
        Binding("h", "dismiss('html')", "HTML"),
        Binding("s", "dismiss('svg')", "SVG"),
        Binding("t", "dismiss('tex')", "LaTeX"),
        Binding("j", "dismiss('json')", "JSON"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Export this branch")
            yield Label("h  HTML page: heatmap, hover for the top-5, teacher and forced marks\n"
                        "s  SVG figure\nt  LaTeX snippet (\\colorbox per token)\nj  JSON: every number, to reload")
            yield Label("The file goes to the export directory; an existing file is never replaced. esc cancels.",
                        classes="hint")
