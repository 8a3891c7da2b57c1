"""The search bar: `/` searches the completion (or, from the problem list, the problems); esc closes it."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input

TEXT_HINT = "search the completion text (enter: next match, esc: close)"
PROBLEMS_HINT = "search the problems by their text or id (enter: open the first, esc: close)"


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
        super().__init__(placeholder=TEXT_HINT, id=id)
        self.problems = False
        """Searching the problem list rather than the completion."""

    def open(self, problems: bool = False) -> None:
        """Open on the completion text, or (`problems`) on the problem statements and ids."""
        self.problems = problems
        self.placeholder = (PROBLEMS_HINT if problems else TEXT_HINT)
        self.value = ""
        self.add_class("-open")
        self.focus()

    def action_close(self) -> None:
        self.remove_class("-open")
        self.post_message(self.Closed())
