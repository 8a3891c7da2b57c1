"""One column of the branch view: a title with the branch's answer and state, over its token heatmap."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Static

from rmx_tui.ui_state import CANCELLED, FAILED, SCORING, STREAMING, Branch
from rmx_tui.widgets.token_view import TokenView


class BranchColumn(Vertical):
    """Title (how the branch was made, its answer ✓/✗, whether it is partial) above a TokenView."""

    DEFAULT_CSS = """
    BranchColumn { width: 1fr; height: 1fr; }
    BranchColumn > .branch-title { height: auto; max-height: 3; background: $panel; padding: 0 1; }
    BranchColumn:focus-within > .branch-title { background: $primary-muted; }
    """

    def __init__(self, role: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.role = role
        """`parent` or `branch`: shown before the title."""

    def compose(self) -> ComposeResult:
        yield Static(classes="branch-title")
        yield TokenView()

    @property
    def view(self) -> TokenView:
        return self.query_one(TokenView)

    def show(self, branch: Branch | None, cursor: int = 0, fork: int | None = None) -> None:
        self.view.show(branch, cursor, fork)
        self.retitle()

    def retitle(self) -> None:
        self.query_one(".branch-title", Static).update(self._title(self.view.branch))

    def _title(self, branch: Branch | None) -> Content:
        if branch is None:
            return Content.styled("no rollout yet", "$foreground-muted")
        parts: list[tuple[str, str] | str] = [(f"{self.role} ", "$foreground-muted"), (branch.label, "bold")]
        if branch.verdict is not None:
            verdict = branch.verdict
            answer = verdict.answer if verdict.answer is not None else "no answer"
            parts += ["  ", (verdict.mark, "bold $success" if verdict.correct else "bold $error"),
                      f" {answer}", (f"  gold {branch.problem.answer}", "$foreground-muted")]
        state = {STREAMING: ("decoding…", "$warning"), SCORING: ("scoring…", "$warning"),
                 CANCELLED: ("cancelled: partial", "bold $warning"),
                 FAILED: (f"failed: partial — {branch.error}", "bold $error")}.get(branch.state)
        if state is not None:
            parts += ["  ", state]
        parts.append((f"  {len(branch.tokens)} tokens", "$foreground-muted"))
        return Content.assemble(*parts)
