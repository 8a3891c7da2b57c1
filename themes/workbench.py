"""The workbench's Textual themes: each carries its heatmap palette as `$heat-N`, `$heat-cool-N` and their text colours."""

from __future__ import annotations

from textual.theme import Theme

from themes.palettes import PALETTES, Heatmap, blend

DEFAULT_PALETTE = "viridis"
"""What a theme that names no heatmap (Textual's own themes) falls back to."""


COOL_ALPHA = 0.55
"""How much of its stop a token at or below τ keeps over the surface: faded, yet every stop tells apart."""
NEUTRAL_SURFACE = "#1e1e1e"
"""The surface faded stops are blended over for Textual's own themes, which carry no heatmap."""


def heat_variables(palette: str, surface: str = NEUTRAL_SURFACE) -> dict[str, str]:
    """Theme variables for a palette: per stop a background and a readable text colour, bright (above τ) and
    faded (at or below τ, the stop blended over `surface`); every text colour has WCAG contrast ≥ 4.5."""
    variables: dict[str, str] = {}
    for index, colour in enumerate(PALETTES[palette]):
        faded = blend(colour, surface, COOL_ALPHA)
        variables[f"heat-{index}"] = colour
        variables[f"heat-text-{index}"] = Heatmap.readable_foreground(colour)
        variables[f"heat-cool-{index}"] = faded
        variables[f"heat-cool-text-{index}"] = Heatmap.readable_foreground(faded)
    return variables


def workbench_themes() -> list[Theme]:
    """A dark theme (viridis), a light one (cividis) and a high-contrast one (high-contrast heatmap)."""
    return [
        Theme(
            name="rmx-dark", dark=True,
            primary="#6cb6ff", secondary="#b083f0", accent="#f0b72f", warning="#e3b341", error="#ff7b72",
            success="#56d364", foreground="#d6deeb", background="#0d1117", surface="#161b22", panel="#1f2630",
            variables=heat_variables("viridis", "#161b22"),
        ),
        Theme(
            name="rmx-light", dark=False,
            primary="#0550ae", secondary="#6639ba", accent="#9a6700", warning="#9a6700", error="#cf222e",
            success="#1a7f37", foreground="#1f2328", background="#ffffff", surface="#f6f8fa", panel="#e6ebf1",
            variables=heat_variables("cividis", "#f6f8fa"),
        ),
        Theme(
            name="rmx-contrast", dark=True,
            primary="#00e5ff", secondary="#ff66ff", accent="#ffff00", warning="#ffcc00", error="#ff3355",
            success="#00ff66", foreground="#ffffff", background="#000000", surface="#000000", panel="#202020",
            variables=heat_variables("high-contrast", "#000000"),
        ),
    ]
