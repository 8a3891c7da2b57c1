"""The heatmap's colours: WCAG contrast ≥ 4.5 for every token's text, bright or faded, on every rmx theme."""

from __future__ import annotations

import re

import pytest

from rmx_tui.widgets.token_view import _HEAT_CSS
from themes.palettes import PALETTES, blend, contrast, relative_luminance
from themes.workbench import workbench_themes

RULE = re.compile(r"token-view--(hot|cool)-(\d+) \{ background: \$([\w-]+)(?: (\d+)%)?; color: \$([\w-]+); \}")


def test_wcag_contrast_matches_known_values():
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
    assert blend("#ffffff", "#000000", 0.5) == "#808080"


def drawn(theme) -> list[tuple[str, int, str, str]]:
    """(hot or cool, stop, text colour, background colour) as the heatmap's CSS paints each token on this theme."""
    variables = {**theme.variables, "foreground": theme.foreground, "surface": theme.surface}
    painted = []
    for kind, stop, background, alpha, text in RULE.findall(_HEAT_CSS):
        shown = variables[background]
        if alpha:  # a translucent background is drawn over the heatmap's surface
            shown = blend(shown, theme.surface, int(alpha) / 100)
        painted.append((kind, int(stop), variables[text], shown))
    assert len(painted) == 2 * len(PALETTES["viridis"])
    return painted


@pytest.mark.parametrize("theme", workbench_themes(), ids=lambda theme: theme.name)
def test_every_heatmap_token_reads_at_wcag_aa(theme):
    for kind, stop, text, background in drawn(theme):
        ratio = contrast(text, background)
        assert ratio >= 4.5, f"{theme.name}: {kind} stop {stop} text {text} on {background} is {ratio:.2f}:1"


@pytest.mark.parametrize("theme", workbench_themes(), ids=lambda theme: theme.name)
def test_faded_stops_keep_the_ramp_and_tell_apart(theme):
    faded = [background for kind, _, _, background in sorted(drawn(theme), key=lambda d: d[1]) if kind == "cool"]
    luminance = [relative_luminance(colour) for colour in faded]
    if theme.name != "rmx-contrast":  # viridis and cividis: lightness rises along the ramp (colour-blind safe)
        assert luminance == sorted(luminance)
    assert len(set(faded)) == len(faded)
    assert all(contrast(a, b) > 1.08 for a, b in zip(faded, faded[1:]) if a != "#000000"), faded
