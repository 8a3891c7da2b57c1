"""Outcome bars: P(correct | choice) at the cursor's position, from sampled continuations, one bar per choice."""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

from rmx_tui.ui_state import Outcome
from rmx_tui.token_layout import quoted


def _short(answer: str, width: int = 10) -> str:
    return answer if len(answer) <= width else answer[: width - 1] + "…"


class OutcomeBars(Widget):
    """Correct ▮, wrong ▮ and no-answer ▮ shares of the continuations sampled after each choice here."""

    DEFAULT_CSS = """
    OutcomeBars {
        height: auto;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.outcomes: list[Outcome] = []
        self.here: int | None = None
        self.progress: str | None = None
        self.samples = 8

    def show(self, outcomes: list[Outcome], here: int | None) -> None:
        # Most cursor moves land where nothing was sampled: no repaint, no layout.
        changed = bool(outcomes) or bool(self.outcomes)
        self.outcomes, self.here = outcomes, here
        if changed:
            self.refresh(layout=True)

    def set_progress(self, progress: str | None) -> None:
        self.progress = progress
        self.refresh(layout=True)

    def render(self) -> Content:
        lines = [Content.styled("outcomes here", "bold $primary")]
        if self.progress:
            lines.append(Content.styled(self.progress, "$warning"))
        if not self.outcomes and not self.progress:
            lines.append(Content.from_markup(
                f"[$foreground-muted]press [b $accent]c[/] to sample {self.samples} continuations from this "
                "token and estimate P(correct | token)"))
        width = max(self.size.width, 12)
        for outcome in self.outcomes:
            here = "  (here)" if outcome.token == self.here else ""
            lines.append(Content.assemble((quoted(outcome.text), "bold"), (here, "$foreground-muted"),
                                          f"  P {outcome.p:.2f} ", (f"[{outcome.low:.2f}–{outcome.high:.2f}]",
                                                                    "$foreground-muted")))
            cells = [round(count * width / outcome.n) for count in (outcome.correct, outcome.wrong)]
            cells.append(max(width - sum(cells), 0) if outcome.no_answer else 0)
            lines.append(Content.assemble(("█" * cells[0], "$success"), ("▓" * cells[1], "$error"),
                                          ("░" * cells[2], "$foreground-muted")))
            answers = ", ".join(f"{_short(answer)}×{count}" for answer, count in outcome.answers)
            lines.append(Content.assemble((f"✓{outcome.correct} ", "$success"), (f"✗{outcome.wrong} ", "$error"),
                                          (f"∅{outcome.no_answer}", "$foreground-muted"),
                                          (f"  answers {answers}", "$foreground-muted")))
        return Content("\n").join(lines)
