"""The search bar: `/` opens it under the heatmap; typing highlights matches, enter jumps to the next, esc closes."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input


class SearchBar(Input):
    """An input that hides itself on escape and says so, so the screen can give focus back."""

    DEFAULT_CSS = """
    SearchBar { dock: bottom; display: none; border: tall $accent; }
    SearchBar.-open { display: block; }
    """

    BINDINGS = [Binding("escape", "close", "close search", show=False)]

    class Closed(Message):
        """The user closed the search bar."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder="search the completion text (enter: next match, esc: close)", id=id)

    def open(self) -> None:
        self.add_class("-open")
        self.focus()

    def action_close(self) -> None:
        self.remove_class("-open")
        self.post_message(self.Closed())
