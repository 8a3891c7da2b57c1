"""The heatmap legend: the entropy ramp in nats, and what brightness, underlines and marked tokens mean."""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

from rmx_tui.widgets.token_view import HEAT, STOPS


class Legend(Widget):
    """One line under the heatmap, drawn with the same theme variables as the tokens."""

    DEFAULT_CSS = """
    Legend {
        height: auto;
        max-height: 2;
        background: $panel;
        padding: 0 1;
    }
    """

    def render(self) -> Content:
        step = HEAT.ceiling / STOPS
        # Three cells a stop, labelled every other stop, and the marks on a second line: whole at 54 columns.
        ramp = [(f"{i * step:3.1f}" if i % 2 == 0 else "   ", f"$heat-text-{i} on $heat-{i}") for i in range(STOPS)]
        return Content.assemble(
            ("entropy ", "$foreground-muted"), *ramp, (f" {HEAT.ceiling:g}+ nats", "$foreground-muted"),
            ("  │ ", "$foreground-muted"), ("bright", "bold"), (" > τ  ", "$foreground-muted"),
            ("reranked", "underline"), (" ", ""), ("shifted", "bold underline"), (" ", ""),
            ("forced", "bold reverse"), (" ", ""), ("steered", "bold $background on $secondary"), (" ", ""),
            ("shared", "dim"),
        )
