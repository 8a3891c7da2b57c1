"""The problem pane: the open problem's statement, its gold answer, the prompt template and its token count."""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

from rmx_tui.ui_state import Branch


class ProblemPane(Widget):
    """Above the heatmaps; `p` collapses it to its one header line (the statement scrolls when long)."""

    DEFAULT_CSS = """
    ProblemPane {
        height: auto;
        max-height: 6;
        background: $panel;
        padding: 0 1;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
        border-bottom: solid $foreground 20%;
    }
    ProblemPane.-collapsed { max-height: 2; overflow-y: hidden; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.branch: Branch | None = None
        self.template = ""

    def show(self, branch: Branch | None, template: str) -> None:
        self.branch, self.template = branch, template
        self.refresh(layout=True)

    def toggle(self) -> bool:
        """Collapse or expand; True when it is now expanded."""
        self.toggle_class("-collapsed")
        return not self.has_class("-collapsed")

    def render(self) -> Content:
        branch = self.branch
        if branch is None:
            return Content.styled("no problem open: pick one in the problem list (ctrl+b shows it)",
                                  "$foreground-muted")
        problem = branch.problem
        header = Content.assemble(
            ("problem ", "bold $primary"), (problem.id, "$foreground-muted"),
            ("  gold ", "$foreground-muted"), (problem.answer, "bold $success"),
            ("  template ", "$foreground-muted"), self.template,
            ("  prompt ", "$foreground-muted"), f"{len(branch.prompt_ids)} tokens",
            ("  p hides", "$foreground-muted") if not self.has_class("-collapsed") else ("  p shows", "$foreground-muted"),
        )
        return Content("\n").join([header, Content(" ".join(problem.problem.split()))])
