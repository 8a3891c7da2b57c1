"""rmx's help screen (F1 or ?): every key grouped, the colour legend, and what τ and the classes mean."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown, Static

from rmx_tui import keymap
from rmx_tui.widgets.legend import Legend


class HelpScreen(ModalScreen[None]):
    """The same text as docs/keys.md, with the heatmap legend drawn in the theme's own colours."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; background: $background 60%; }
    HelpScreen > Vertical {
        width: 100; max-width: 100%; height: 100%; max-height: 100%;
        background: $panel; border: round $primary; border-title-color: $primary;
    }
    HelpScreen #help-hint { height: 1; padding: 0 1; color: $foreground-muted; }
    HelpScreen VerticalScroll { height: 1fr; }
    HelpScreen Markdown { margin: 0 1; padding: 0; }
    """

    BINDINGS = [
        Binding("escape,q,question_mark,f1", "dismiss(None)", "close", show=False),
        Binding("T", "tour", "tour", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "rmx keys"
            yield Static(self._hint(), id="help-hint")
            yield Legend()
            with VerticalScroll():
                yield Markdown(keymap.markdown())

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    def _hint(self) -> str:
        tour = "  ·  T the first-run tour" if self._tour_available() else ""
        return f"↑ ↓ pgup pgdn scroll  ·  esc, ? or F1 closes{tour}"

    def _tour_available(self) -> bool:
        # The first-run tour is the demo screen's; the help offers it wherever the app provides one.
        return callable(getattr(self.app, "action_tour", None))

    def action_tour(self) -> None:
        if self._tour_available():
            self.dismiss(None)
            self.app.action_tour()  # type: ignore[attr-defined]
