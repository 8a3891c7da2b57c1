"""The pass-rate histogram: how many problems reached each pass rate (correct/K), one bar per rate."""

from __future__ import annotations

from typing import Sequence

from textual.content import Content
from textual.widget import Widget


def is_mixed(label: str) -> bool:
    """Whether a `correct/K` label is a mixed-success rate: the only problems the pool can take."""
    right, _, k = label.partition("/")
    return 0 < int(right) < int(k)


class PassRateHistogram(Widget):
    """Problems per pass rate; mixed-success rates in the accent colour, all-right and all-wrong ones muted."""

    DEFAULT_CSS = """
    PassRateHistogram {
        height: auto;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[tuple[str, int]] = []
        """(pass rate as correct/K, problems), lowest rate first."""

    def show(self, rows: Sequence[tuple[str, int]]) -> None:
        self.rows = list(rows)
        self.refresh(layout=True)

    def render(self) -> Content:
        lines = [Content.styled("pass rate   problems", "bold $primary")]
        if not self.rows:
            lines.append(Content.styled("no rollouts read", "$foreground-muted"))
            return Content("\n").join(lines)
        label_width = max(9, *(len(label) for label, _ in self.rows))
        count_width = max(5, *(len(str(count)) for _, count in self.rows))
        bar_width = max(self.size.width - label_width - count_width - 4, 1)
        peak = max(count for _, count in self.rows) or 1
        for label, count in self.rows:
            style = "$accent" if is_mixed(label) else "$foreground-muted"
            bar = "█" * max(1, round(bar_width * count / peak)) if count else ""
            lines.append(Content.assemble((f"{label:>{label_width}}", style), f"  {count:>{count_width}}  ",
                                          (bar, style)))
        lines.append(Content.assemble(("█", "$accent"), (" mixed success: the pool draws from these",
                                                         "$foreground-muted")))
        lines.append(Content.styled("█ all right or all wrong: no signal to train on", "$foreground-muted"))
        return Content("\n").join(lines)
