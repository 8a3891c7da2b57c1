"""A branch comparison (a fork beside its parent) as a figure: both completions aligned at the fork position."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html import escape
from typing import Any

from engine.core.errors import RmxError
from rmx_tui.figures.rollout_file import FigureRollout, rollout_from_data

KIND = "comparison"
"""The `kind` of a comparison export, beside a rollout export's tokens."""


@dataclass(frozen=True)
class FigureComparison:
    """A parent branch and a fork of it: they share the tokens before `fork`; the fork's token at `fork` was forced."""

    parent: FigureRollout
    branch: FigureRollout
    fork: int

    @property
    def title(self) -> str:
        return f"{self.branch.title} vs {self.parent.title} at token {self.fork}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, "fork_pos": self.fork, "parent": self.parent.to_json(),
                "branch": self.branch.to_json()}


def comparison_data(parent: dict[str, Any], branch: dict[str, Any], fork: int) -> dict[str, Any]:
    """The export's JSON shape from two branch exports (the workbench's `X` on a fork)."""
    return {"kind": KIND, "fork_pos": fork, "parent": parent, "branch": branch}


def is_comparison(data: Any) -> bool:
    return isinstance(data, dict) and data.get("kind") == KIND


def comparison_from_data(data: dict[str, Any], path: str) -> FigureComparison:
    """A comparison from its JSON; anything missing or out of range is an RmxError naming `path`."""
    fork = data.get("fork_pos")
    if not isinstance(fork, int) or isinstance(fork, bool) or fork < 0:
        raise RmxError(f"{path}: a comparison needs 'fork_pos', the fork's token position (a whole number ≥ 0)")
    sides = {}
    for side in ("parent", "branch"):
        if not isinstance(data.get(side), dict):
            raise RmxError(f"{path}: a comparison needs '{side}', a rollout export")
        sides[side] = rollout_from_data(data[side], f"{path} ({side})", side)
        if fork >= len(sides[side].tokens):
            raise RmxError(f"{path}: fork_pos {fork} is past the {side}'s {len(sides[side].tokens)} tokens")
    return FigureComparison(sides["parent"], sides["branch"], fork)


def _verdict(rollout: FigureRollout) -> str:
    answer = "no answer" if rollout.answer is None else str(rollout.answer)
    mark = "" if rollout.correct is None else (" ✓ correct" if rollout.correct else " ✗ wrong")
    return f"answer: {answer}{mark}"


def render_comparison_html(comparison: FigureComparison) -> str:
    """One page: the shared prefix once, then parent and fork side by side from the fork position on."""
    from rmx_tui.figures.html import SCRIPT, STYLE, legend_html, token_span

    fork, parent, branch = comparison.fork, comparison.parent, comparison.branch

    def tokens(rollout: FigureRollout, start: int, end: int) -> str:
        return "".join(token_span(rollout, index) for index in range(start, end))

    def side(name: str, rollout: FigureRollout) -> str:
        correct = "" if rollout.correct is None else (" correct" if rollout.correct else " wrong")
        return (f'<section class="side" id="{name}"><h2>{name}: {escape(rollout.title)}</h2>'
                f'<p class="verdict{correct}">{escape(_verdict(rollout))}</p>'
                f'<div class="rollout">{tokens(rollout, fork, len(rollout.tokens))}</div></section>')

    style = STYLE + """
body { max-width: 110em; } .columns { display: grid; grid-template-columns: 1fr 1fr; gap: 2em; }
.prefix .rollout { opacity: .75; } h2 { font-size: 1em; } .verdict.correct { color: #1a7f37; }
.verdict.wrong { color: #cf222e; } .side .rollout > .tok:first-child { box-shadow: 0 0 0 3px #e8175d55; }
"""
    problem = f'<p class="problem">{escape(parent.problem)}</p>' if parent.problem else ""
    forced = branch.tokens[fork]
    note = (f'<p class="fork">fork at token {fork}: {escape(repr(parent.tokens[fork].text))} in the parent, '
            f'{escape(repr(forced.text))} ({escape(branch.sources[fork])}) in the branch</p>')
    prefix = (f'<section class="prefix"><h2>shared prefix (tokens 0–{fork - 1})</h2>'
              f'<div class="rollout">{tokens(parent, 0, fork)}</div></section>') if fork else ""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="generator" content="rmx export"><title>rmx · {escape(comparison.title)}</title>'
            f'<style>{style}</style></head><body>\n<h1>{escape(comparison.title)}</h1>{problem}{legend_html()}\n'
            f'{note}{prefix}<div class="columns">{side("parent", parent)}{side("branch", branch)}</div>'
            f'<div id="tip" role="tooltip"></div>\n<script>{SCRIPT}</script></body></html>\n')


def render_comparison_svg(comparison: FigureComparison) -> str:
    """Parent and fork side by side from the fork position, each a figure of its own under its verdict."""
    from xml.sax.saxutils import escape as xml_escape

    from rmx_tui.figures.svg import WIDTH, render_svg

    fork = comparison.fork
    gap, top = 20, 44
    columns, height = [], 0
    for number, (name, rollout) in enumerate((("parent", comparison.parent), ("branch", comparison.branch))):
        figure = render_svg(rollout.span(fork, len(rollout.tokens)))
        size = re.search(r'height="(\d+)"', figure)
        height = max(height, int(size.group(1)) if size else 0)
        x = number * (WIDTH + gap)
        inner = figure.replace('<svg xmlns="http://www.w3.org/2000/svg" ', f'<svg x="{x}" y="{top}" ', 1)
        columns.append(f'<text x="{x + 12}" y="{top - 8}" font-weight="bold">'
                       f'{xml_escape(f"{name}: {rollout.title} · {_verdict(rollout)}")}</text>\n{inner}')
    width = 2 * WIDTH + gap
    total = top + height
    title = xml_escape(f"{comparison.title} (both from token {fork}; the branch's first token was forced)")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total}" viewBox="0 0 {width} {total}" '
            f'font-family="DejaVu Sans Mono, Menlo, monospace" font-size="14">\n<title>{title}</title>\n'
            f'<rect width="100%" height="100%" fill="#ffffff"/>\n<text x="12" y="18">{title}</text>\n'
            + "\n".join(columns) + "</svg>\n")


def render_comparison_tex(comparison: FigureComparison) -> str:
    """Two snippets, parent then fork, each from the fork position, headed by its verdict."""
    from rmx_tui.figures.tex import render_tex, tex_escape

    fork, parts = comparison.fork, []
    for name, rollout in (("parent", comparison.parent), ("branch", comparison.branch)):
        parts.append(f"% {name} from token {fork}: {_verdict(rollout)}\n"
                     f"\\noindent\\textbf{{{tex_escape(name)}}} ({tex_escape(_verdict(rollout))})\\par\n"
                     + render_tex(rollout.span(fork, len(rollout.tokens))))
    return f"% rmx export: {comparison.title}\n" + "\\par\\medskip\n".join(parts)


def render_comparison(comparison: FigureComparison, fmt: str) -> str:
    if fmt == "html":
        return render_comparison_html(comparison)
    if fmt == "svg":
        return render_comparison_svg(comparison)
    if fmt == "tex":
        return render_comparison_tex(comparison)
    if fmt == "json":
        return json.dumps(comparison.to_json(), ensure_ascii=False, indent=1) + "\n"
    from rmx_tui.figures.rollout_file import FORMATS

    raise RmxError(f"unknown export format '{fmt}': use one of {', '.join(FORMATS)}")
