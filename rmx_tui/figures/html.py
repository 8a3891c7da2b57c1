"""A rollout as one self-contained HTML page: heatmap tokens, hover details, teacher and forced marks, legend."""

from __future__ import annotations

import json
from html import escape

from rmx_tui.figures.marks import CLASS_MARKS, HEATMAP, colours, hover_lines, legend_stops, printable
from rmx_tui.figures.rollout_file import MARKED_SOURCES, FigureRollout
from themes.palettes import Heatmap

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #1b1b1b; background: #fff; }
h1 { font-size: 1.2em; } .problem { color: #444; white-space: pre-wrap; }
.rollout { font: 14px/1.9 ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre-wrap; }
.tok { padding: 0 1px; border-radius: 2px; cursor: default; }
.reranked { text-decoration: underline; text-decoration-thickness: 2px; }
.shifted { text-decoration: underline double; font-weight: bold; }
.src-forced { outline: 2px solid #e8175d; } .src-teacher { outline: 2px dashed #e8175d; }
.src-random { outline: 2px dotted #e8175d; }
.tok:hover, .tok:focus { outline: 2px solid #000; }
#tip { position: absolute; display: none; background: #222; color: #eee; padding: .4em .6em; border-radius: 4px;
       font: 12px/1.4 ui-monospace, monospace; white-space: pre; pointer-events: none; z-index: 10; }
.legend { margin: 1em 0; font-size: 13px; } .legend span.stop { display: inline-block; padding: 0 .4em; }
.legend .mark { margin-right: 1.2em; }
"""

SCRIPT = """
const tip = document.getElementById('tip');
function show(event) {
  const tok = event.currentTarget;
  tip.textContent = JSON.parse(tok.dataset.hover).join('\\n');
  const box = tok.getBoundingClientRect();
  tip.style.left = (window.scrollX + box.left) + 'px';
  tip.style.top = (window.scrollY + box.bottom + 4) + 'px';
  tip.style.display = 'block';
}
function hide() { tip.style.display = 'none'; }
for (const tok of document.querySelectorAll('.tok')) {
  tok.addEventListener('mouseenter', show); tok.addEventListener('focus', show);
  tok.addEventListener('mouseleave', hide); tok.addEventListener('blur', hide);
}
"""


def token_span(rollout: FigureRollout, index: int) -> str:
    """One token as a focusable span: heatmap colours, class marks, who chose it, and its hover lines."""
    token, source = rollout.tokens[index], rollout.sources[index]
    background, foreground = colours(token)
    classes = ["tok"]
    if token.cls in CLASS_MARKS:
        classes.append(token.cls)
    if source in MARKED_SOURCES:
        classes.append(f"src-{source}")
    hover = hover_lines(token, source)
    text = printable(token.text, newline="⏎\n") or "∅"
    return (f'<span class="{" ".join(classes)}" tabindex="0" data-pos="{token.pos}" '
            f'data-hover="{escape(json.dumps(hover, ensure_ascii=False))}" title="{escape(chr(10).join(hover))}" '
            f'style="background:{background};color:{foreground}">{escape(text)}</span>')


def legend_html() -> str:
    stops = "".join(f'<span class="stop" style="background:{colour};color:{Heatmap.readable_foreground(colour)}">{low:.1f}</span>'
                    for colour, low in legend_stops())
    marks = [f'<span class="mark"><span class="{name}">{name}</span>: {text}</span>'
             for name, text in CLASS_MARKS.items()]
    marks += [f'<span class="mark"><span class="src-{name}">{name}</span>: {text}</span>'
              for name, text in MARKED_SOURCES.items()]
    return (f'<div class="legend"><div>entropy (nats, saturating at {HEATMAP.ceiling:g}): {stops}</div>'
            f'<div>{"".join(marks)}</div><div>hover or focus a token for the base\'s top-5 with probabilities.</div></div>')


def render_html(rollout: FigureRollout) -> str:
    """The page: no external resource, so it opens anywhere (a browser, a mail attachment, a notebook)."""
    verdict = "" if rollout.correct is None else (" ✓ correct" if rollout.correct else " ✗ wrong")
    answer = f'<p>answer: {escape(str(rollout.answer))}{verdict}</p>' if rollout.answer is not None else ""
    problem = f'<p class="problem">{escape(rollout.problem)}</p>' if rollout.problem else ""
    tokens = "".join(token_span(rollout, index) for index in range(len(rollout.tokens)))
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="generator" content="rmx export"><title>rmx · {escape(rollout.title)}</title>'
            f'<style>{STYLE}</style></head><body>\n<h1>{escape(rollout.title)}</h1>{problem}{legend_html()}\n'
            f'<div class="rollout">{tokens}</div>{answer}<div id="tip" role="tooltip"></div>\n'
            f'<script>{SCRIPT}</script></body></html>\n')
