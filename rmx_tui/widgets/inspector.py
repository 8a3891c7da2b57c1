"""The token inspector: everything known about the token under the cursor, and the keys that fork there."""

from __future__ import annotations

import math

from engine.core.records import TopToken
from textual.content import Content
from textual.widget import Widget

from rmx_tui.ui_state import STEERING, Branch
from rmx_tui.token_layout import quoted

BLOCKS = " ▏▎▍▌▋▊▉█"
FORK_KEYS = Content.from_markup(
    "[b $primary]fork here[/]\n"
    "[b $accent]1[/]-[b $accent]5[/] force that alternative\n"
    "[b $accent]o[/] the teacher's pick  [b $accent]r[/] random top-20\n"
    "[b $accent]e[/] type a token  [b $accent]c[/] estimate P(correct)"
)
"""The same on every token: parsed once."""
SIDE_BY_SIDE = 64
"""From this width (under the heatmap on a narrow terminal) the facts and the top-5 sit side by side."""
SOURCES = {"base": "the base model", "forced": "you (forced)", "teacher": "the teacher", "random": "random control"}


def bar(fraction: float, width: int) -> str:
    """A horizontal bar with eighth-cell resolution."""
    eighths = round(min(max(fraction, 0.0), 1.0) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (BLOCKS[part] if part else "")).ljust(width)


class Inspector(Widget):
    """Position, text, id, logprob, entropy, rank, the base top-5 as bars, and the teacher's view."""

    DEFAULT_CSS = """
    Inspector {
        height: auto;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.branch: Branch | None = None
        self.index = 0
        self.tau: float | None = None
        self._content = Content()

    def show(self, branch: Branch | None, index: int, tau: float | None) -> None:
        self.branch, self.index, self.tau = branch, index, tau
        old, self._content = self._content, self._build()
        if (old.plain, old.spans) == (self._content.plain, self._content.spans):
            return  # τ moved but this token stayed on the same side of it: nothing to repaint
        # Lines never wrap, so only a change in their number moves anything else on screen.
        self.refresh(layout=self._content.plain.count("\n") != old.plain.count("\n"))

    def on_resize(self) -> None:
        self._content = self._build()

    def render(self) -> Content:
        return self._content

    def _build(self) -> Content:
        branch = self.branch
        if branch is None or not 0 <= self.index < len(branch.tokens):
            return Content.from_markup("[$foreground-muted]No token under the cursor.\n\n"
                                       "Pick a problem on the left, or wait for the rollout to stream in.")
        width = max(self.size.width, 20)
        if width >= SIDE_BY_SIDE:
            # Under the heatmap on a narrow terminal: facts on the left, the top-5 on the right, no key hints
            # (the footer and ? have them), so it fits in a few lines without cutting a word.
            half = (width - 1) // 2
            left, right = self._facts(branch), self._top(branch, half)
            rows = max(len(left), len(right))
            left += [Content()] * (rows - len(left))
            right += [Content()] * (rows - len(right))
            cells = [fact.truncate(half, ellipsis=True) for fact in left]
            return Content("\n").join([Content.assemble(cell.pad_right(half - cell.cell_length), " ", top)
                                        for cell, top in zip(cells, right)])
        return Content("\n").join([*self._facts(branch), *self._top(branch, width), FORK_KEYS])

    def _facts(self, branch: Branch) -> list[Content]:
        """Position, text, entropy against τ, logprob and rank, who chose it, and the teacher's view."""
        token = branch.tokens[self.index]
        source = branch.sources[self.index]
        lines: list[Content] = []
        add = lines.append
        add(Content.assemble((f"token {token.pos}", "bold"), f" of {len(branch.tokens)}  ",
                             (quoted(token.text), "bold $accent"), f"  id {token.id}"))
        tau = self.tau
        add(Content.assemble(("entropy ", "$foreground-muted"), (f"{token.entropy:.3f}", "bold"), " nats"))
        if tau is None:
            add(Content.styled("τ not set yet", "$foreground-muted"))
        elif token.entropy > tau:
            add(Content.styled("▲ a decision point: entropy above τ", "bold $warning"))
        else:
            add(Content.styled("at or below τ: not a decision point", "$foreground-muted"))
        exact = branch.scored or token.rank <= len(token.top)
        rank = str(token.rank) if exact else f">{len(token.top)}"
        add(Content.assemble(("logprob ", "$foreground-muted"), f"{token.logprob:.3f}",
                             ("  p ", "$foreground-muted"), f"{math.exp(token.logprob):.1%}",
                             ("  rank ", "$foreground-muted"), rank))
        add(Content.assemble(("chosen by ", "$foreground-muted"), (SOURCES.get(source, source),
                                                                    "bold" if source != "base" else "")))
        if source in STEERING and token.top:
            add(self._substitution(token.top[0], token.id, token.text))
        if token.teacher is not None:
            pick = token.teacher
            text = branch.text_of(self.index, pick.id)
            shown = quoted(text) if text is not None else f"id {pick.id}"
            add(Content.assemble(("teacher ", "bold $primary"), ("pick ", "$foreground-muted"), (shown, "bold"),
                                 ("  rank in base ", "$foreground-muted"), str(pick.rank_in_base)))
            add(Content.assemble(("class ", "$foreground-muted"), (token.cls or "—", "bold"),
                                 ("  teacher H ", "$foreground-muted"), f"{pick.entropy:.2f}"))
        elif not branch.scored and branch.busy:
            add(Content.styled("teacher: after scoring", "$foreground-muted"))
        return lines

    def _top(self, branch: Branch, width: int) -> list[Content]:
        """The base's top-5 as bars, the token and the teacher's pick marked; labels are never cut mid-token."""
        token = branch.tokens[self.index]
        lines = [Content.styled("base top-5", "bold $primary")]
        teacher_id = token.teacher.id if token.teacher is not None else None
        label_width = max((len(quoted(alt.text)) for alt in token.top[:5]), default=4)
        bar_width = max(width - label_width - 14, 0)
        for rank_index, alt in enumerate(token.top[:5], start=1):
            p = math.exp(alt.logprob)
            marks = ("●" if alt.id == token.id else " ") + ("T" if alt.id == teacher_id else " ")
            lines.append(Content.assemble((f"{rank_index} ", "bold $accent"), (marks, "bold $secondary"),
                                          f"{quoted(alt.text):<{label_width}} ", (f"{p:6.1%} ", ""),
                                          (bar(p, bar_width), "$primary")))
        lines.append(Content.styled("● this token   T the teacher's pick", "$foreground-muted"))
        return lines

    @staticmethod
    def _substitution(argmax: TopToken, token: int, text: str) -> Content:
        """What an intervention put in place of the base's argmax here (under greedy decoding, the base's own pick)."""
        if argmax.id == token:
            return Content.styled("the base's argmax too: nothing changed", "$foreground-muted")
        return Content.assemble(("substituted ", "$foreground-muted"), (quoted(argmax.text), "bold"),
                                (" → ", "$foreground-muted"), (quoted(text), "bold $secondary"))
