"""The workbench's Textual themes: each carries its heatmap palette as `$heat-0..9` and `$heat-text-0..9` variables."""

from __future__ import annotations

from textual.theme import Theme

from themes.palettes import PALETTES, Heatmap

DEFAULT_PALETTE = "viridis"
"""What a theme that names no heatmap (Textual's own themes) falls back to."""


def heat_variables(palette: str) -> dict[str, str]:
    """Theme variables for a palette: one background and one readable text colour per stop."""
    stops = PALETTES[palette]
    variables = {f"heat-{index}": colour for index, colour in enumerate(stops)}
    variables.update(
        {f"heat-text-{index}": Heatmap.readable_foreground(colour) for index, colour in enumerate(stops)}
    )
    return variables


def workbench_themes() -> list[Theme]:
    """A dark theme (viridis), a light one (cividis) and a high-contrast one (high-contrast heatmap)."""
    return [
        Theme(
            name="rmx-dark", dark=True,
            primary="#6cb6ff", secondary="#b083f0", accent="#f0b72f", warning="#e3b341", error="#ff7b72",
            success="#56d364", foreground="#d6deeb", background="#0d1117", surface="#161b22", panel="#1f2630",
            variables=heat_variables("viridis"),
        ),
        Theme(
            name="rmx-light", dark=False,
            primary="#0550ae", secondary="#6639ba", accent="#9a6700", warning="#9a6700", error="#cf222e",
            success="#1a7f37", foreground="#1f2328", background="#ffffff", surface="#f6f8fa", panel="#e6ebf1",
            variables=heat_variables("cividis"),
        ),
        Theme(
            name="rmx-contrast", dark=True,
            primary="#00e5ff", secondary="#ff66ff", accent="#ffff00", warning="#ffcc00", error="#ff3355",
            success="#00ff66", foreground="#ffffff", background="#000000", surface="#000000", panel="#202020",
            variables=heat_variables("high-contrast"),
        ),
    ]
