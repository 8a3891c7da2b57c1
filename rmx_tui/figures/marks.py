"""What every figure format says about a token: its colour, its marks, and the hover text."""

from __future__ import annotations

import math

from engine.core.records import TokenScore
from themes.palettes import PALETTES, Heatmap

HEATMAP = Heatmap(PALETTES["viridis"])
"""The workbench's own heatmap: the same palette and ceiling as the token view."""

CLASS_MARKS = {"reranked": "teacher reranked: its pick is another base top-k token",
               "shifted": "teacher shifted: its pick is outside the base's top-k"}


def colours(token: TokenScore) -> tuple[str, str]:
    """(background, foreground) of a token: its entropy's heatmap stop and whichever text colour reads on it."""
    background = HEATMAP.colour(token.entropy)
    return background, Heatmap.readable_foreground(background)


def printable(text: str, newline: str = "⏎") -> str:
    """A token's text with tabs and control characters drawn as visible symbols (XML and TeX accept none of
    them); newlines become `newline`."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\n":
            out.append(newline)
        elif ch == "\t":
            out.append("⇥")
        elif code < 0x20:
            out.append(chr(0x2400 + code))  # the Unicode control pictures: ␀ ␇ …
        elif code == 0x7F or 0x80 <= code < 0xA0 or 0xD800 <= code < 0xE000 or code in (0xFFFE, 0xFFFF):
            out.append("�")
        else:
            out.append(ch)
    return "".join(out)


def quoted(text: str) -> str:
    """A token's text for a tooltip: whitespace and control characters made visible, in quotes."""
    return "'" + printable(text) + "'"


def teacher_text(token: TokenScore) -> str | None:
    """What the teacher would have said here, when it differs from the base's argmax."""
    pick = token.teacher
    if pick is None or token.cls in (None, "unshifted"):
        return None
    name = next((quoted(alt.text) for alt in token.top if alt.id == pick.id), f"token {pick.id}")
    return f"teacher → {name} (rank {pick.rank_in_base} under the base)"


def hover_lines(token: TokenScore, source: str) -> list[str]:
    """The hover text: position, entropy, the base's top alternatives with probabilities, and the marks."""
    lines = [f"#{token.pos} {quoted(token.text)}  H = {token.entropy:.2f} nats  p = {math.exp(token.logprob):.3f}"]
    for alt in token.top[:5]:
        lines.append(f"{quoted(alt.text)}  {math.exp(alt.logprob):.3f}")
    teacher = teacher_text(token)
    if teacher:
        lines.append(teacher)
    if source not in ("base", ""):
        lines.append(f"chosen by: {source}")
    return lines


def legend_stops() -> list[tuple[str, float]]:
    """(colour, lowest entropy in nats) of each heatmap stop."""
    stops = len(HEATMAP.palette)
    return [(colour, HEATMAP.ceiling * index / stops) for index, colour in enumerate(HEATMAP.palette)]
