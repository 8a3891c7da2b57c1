"""A span of a rollout as an SVG figure (vector, PDF-ready): heatmap boxes, teacher and forced marks, a legend."""

from __future__ import annotations

from xml.sax.saxutils import escape

from rmx_tui.figures.marks import CLASS_MARKS, HEATMAP, colours, hover_lines, legend_stops, printable
from rmx_tui.figures.rollout_file import MARKED_SOURCES, FigureRollout
from themes.palettes import Heatmap

FONT_SIZE = 14
CHAR_WIDTH = 0.6 * FONT_SIZE
"""Advance of one character in the monospace font the figure asks for."""
LINE_HEIGHT = 24
WIDTH = 760
MARGIN = 12
MARK_COLOUR = "#e8175d"


def _layout(rollout: FigureRollout) -> list[tuple[int, float, float, str]]:
    """(token index, x, y, shown text) for each token, wrapping at WIDTH and at newlines."""
    placed: list[tuple[int, float, float, str]] = []
    x, y = MARGIN, MARGIN
    for index, token in enumerate(rollout.tokens):
        pieces = token.text.split("\n")
        for number, piece in enumerate(pieces):
            shown = printable(piece) + ("⏎" if number < len(pieces) - 1 else "")
            if not shown and number == len(pieces) - 1 and len(pieces) > 1:
                continue
            width = max(len(shown), 1) * CHAR_WIDTH
            if x + width > WIDTH - MARGIN and x > MARGIN:
                x, y = MARGIN, y + LINE_HEIGHT
            placed.append((index, x, y, shown or "∅"))
            x += width
            if number < len(pieces) - 1:
                x, y = MARGIN, y + LINE_HEIGHT
    return placed


def render_svg(rollout: FigureRollout) -> str:
    placed = _layout(rollout)
    body: list[str] = []
    for index, x, y, shown in placed:
        token, source = rollout.tokens[index], rollout.sources[index]
        background, foreground = colours(token)
        width = max(len(shown), 1) * CHAR_WIDTH
        stroke = ""
        if source in MARKED_SOURCES:
            dash = {"forced": "", "teacher": ' stroke-dasharray="4 2"', "random": ' stroke-dasharray="1 2"'}[source]
            stroke = f' stroke="{MARK_COLOUR}" stroke-width="2"{dash}'
        body.append(f'<g><title>{escape(chr(10).join(hover_lines(token, source)))}</title>'
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{LINE_HEIGHT - 4}" fill="{background}"{stroke}/>'
                    f'<text x="{x:.1f}" y="{y + FONT_SIZE + 1:.1f}" fill="{foreground}">{escape(shown)}</text>')
        if token.cls in CLASS_MARKS:
            lines = (0, 3) if token.cls == "shifted" else (0,)
            for offset in lines:
                body.append(f'<line x1="{x:.1f}" x2="{x + width:.1f}" y1="{y + LINE_HEIGHT - 6 - offset:.1f}" '
                            f'y2="{y + LINE_HEIGHT - 6 - offset:.1f}" stroke="{foreground}" stroke-width="1.5"/>')
        body.append("</g>")
    legend_y = (placed[-1][2] if placed else MARGIN) + LINE_HEIGHT + 10
    legend = [f'<text x="{MARGIN}" y="{legend_y + 13}" fill="#222">entropy (nats)</text>']
    x = MARGIN + 15 * CHAR_WIDTH
    for colour, low in legend_stops():
        legend.append(f'<rect x="{x:.1f}" y="{legend_y}" width="36" height="18" fill="{colour}"/>'
                      f'<text x="{x + 4:.1f}" y="{legend_y + 13}" fill="{Heatmap.readable_foreground(colour)}" '
                      f'font-size="11">{low:.1f}</text>')
        x += 36
    notes = "underline: teacher reranked · double underline: shifted · red box: forced (dashed: teacher pick, dotted: random)"
    legend.append(f'<text x="{MARGIN}" y="{legend_y + 38}" fill="#222" font-size="11">{escape(notes)}</text>')
    height = legend_y + 48
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
            f'font-family="DejaVu Sans Mono, Menlo, monospace" font-size="{FONT_SIZE}" xml:space="preserve">\n'
            f'<title>{escape(rollout.title)} (ceiling {HEATMAP.ceiling:g} nats)</title>\n'
            f'<rect width="100%" height="100%" fill="#ffffff"/>\n' + "\n".join(body) + "\n" + "\n".join(legend)
            + "\n</svg>\n")
