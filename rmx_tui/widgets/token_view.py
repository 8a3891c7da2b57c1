"""The virtualised entropy heatmap: a branch's tokens drawn line by line, only the visible lines rendered."""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from rmx_tui.ui_state import STEERING, Branch
from rmx_tui.token_layout import TokenLayout
from themes.palettes import PALETTES, Heatmap

HEAT = Heatmap(PALETTES["viridis"])
"""Only its bucketing is used here; the colours come from the theme's $heat-N variables."""
STOPS = len(HEAT.palette)

BUCKET = 0b1111
"""A token's code holds its heat bucket in the low four bits and its marks above them."""
RERANKED, SHIFTED, TOUCHED, STEERED, SHARED, FORK, CURSOR, IDLE_CURSOR, MATCH, HOT = (
    1 << bit for bit in range(4, 14))
DECORATIONS = ((SHARED, "shared"), (RERANKED, "reranked"), (SHIFTED, "shifted"), (TOUCHED, "touched"),
               (STEERED, "steered"), (FORK, "touched"), (MATCH, "match"), (CURSOR, "cursor"),
               (IDLE_CURSOR, "idle-cursor"))
"""Later decorations win over earlier ones where they set the same property."""

_HEAT_CSS = "\n".join(
    f"TokenView > .token-view--hot-{i} {{ background: $heat-{i}; color: $heat-text-{i}; }}\n"
    f"TokenView > .token-view--cool-{i} {{ background: $heat-cool-{i}; color: $heat-cool-text-{i}; }}"
    for i in range(STOPS)
)


class TokenView(ScrollView, can_focus=True):
    """Tokens of one branch, background-coloured by base entropy: bright above τ, faded at or below it."""

    COMPONENT_CLASSES = {
        *(f"token-view--{kind}-{i}" for kind in ("hot", "cool") for i in range(STOPS)),
        "token-view--shared", "token-view--reranked", "token-view--shifted", "token-view--touched",
        "token-view--steered", "token-view--match", "token-view--cursor", "token-view--idle-cursor",
    }

    DEFAULT_CSS = _HEAT_CSS + """
    TokenView {
        background: $surface;
        scrollbar-gutter: stable;
        height: 1fr;
    }
    TokenView > .token-view--shared { text-style: dim; }
    TokenView > .token-view--reranked { text-style: underline; }
    TokenView > .token-view--shifted { text-style: bold underline; }
    TokenView > .token-view--touched { text-style: bold reverse; }
    TokenView > .token-view--steered { background: $secondary; color: $background; text-style: bold; }
    TokenView > .token-view--match { background: $warning; color: $background; }
    TokenView > .token-view--cursor {
        background: $block-cursor-background; color: $block-cursor-foreground; text-style: bold;
    }
    TokenView > .token-view--idle-cursor { background: $primary-muted; color: $text-primary; text-style: bold; }
    """

    BINDINGS = [
        Binding("left,h", "step(-1)", "previous token", show=False),
        Binding("right,l", "step(1)", "next token", show=False),
        Binding("up,k", "line(-1)", "line up", show=False),
        Binding("down,j", "line(1)", "line down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home", "first", "first token", show=False),
        Binding("end", "last", "last token", show=False),
    ]

    class CursorMoved(Message):
        """The cursor landed on another token (or the tokens under it changed)."""

        def __init__(self, view: "TokenView", index: int) -> None:
            super().__init__()
            self.view = view
            self.index = index

        @property
        def control(self) -> "TokenView":
            return self.view

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.branch: Branch | None = None
        self.cursor = 0
        self.tau: float | None = None
        self.matches: list[int] = []
        self.fork: int | None = None
        """A position to mark as where a child branch leaves this one."""
        self._layout = TokenLayout(80)
        self._entropy: list[float] = []
        self._codes: list[int] = []
        self._match_set: frozenset[int] = frozenset()
        self._styles: dict[int, Style] = {}
        self._disagreements: list[int] = []
        self._touched: list[int] = []
        """Positions whose token is not the base's own pick: forced by the user, or substituted by an intervention."""

    # --- data ---------------------------------------------------------------------------

    def show(self, branch: Branch | None, cursor: int = 0, fork: int | None = None) -> None:
        """Display another branch (or nothing), with the cursor on `cursor`."""
        self.branch = branch
        self.fork = fork
        self._entropy, self._codes = [], []
        self._disagreements, self._touched = [], []
        self._layout = TokenLayout(self._text_width())
        self.matches, self._match_set = [], frozenset()
        self._take(0)
        # A fork's cursor may sit on a token still to stream in; it is drawn once it arrives.
        busy = branch is not None and branch.busy
        self.cursor = max(cursor, 0) if busy else min(max(cursor, 0), max(len(self._codes) - 1, 0))
        self._resize_virtual()
        if branch is not None:
            # After the layout: its per-token lists are long-lived too.
            self._freezer_saw(branch)
        self.refresh()
        self.scroll_to_cursor()
        self.post_message(self.CursorMoved(self, self.cursor))

    def sync(self) -> None:
        """Take the tokens the branch grew since the last call (streaming)."""
        if self.branch is None:
            return
        seen = len(self._codes)
        if len(self.branch.tokens) < seen:
            self.show(self.branch, self.cursor, self.fork)
            return
        first_line = self._layout.token_line[-1] if seen else 0
        self._take(seen)
        self._resize_virtual()
        self.refresh_lines(first_line, self._layout.line_count - first_line)
        if seen <= self.cursor < len(self._codes):
            self.scroll_to_cursor()
            self.post_message(self.CursorMoved(self, self.cursor))

    def restyle(self) -> None:
        """Recompute what the tokens are (entropy, teacher class) after the branch was re-scored."""
        if self.branch is None:
            return
        if len(self.branch.tokens) != len(self._codes):
            self.show(self.branch, self.cursor, self.fork)
            return
        self._entropy, self._codes, self._disagreements, self._touched = [], [], [], []
        self._measure(0)
        self._freezer_saw(self.branch)
        self.refresh()
        self.post_message(self.CursorMoved(self, self.cursor))

    def _freezer_saw(self, branch: Branch) -> None:
        # The app owns the one Freezer, as the process owns the one collector; a bare host app has none.
        freezer = getattr(self.app, "freezer", None)
        if freezer is not None:
            freezer.shown(branch)

    def _take(self, start: int) -> None:
        tokens = self.branch.tokens if self.branch is not None else []
        self._measure(start)
        self._layout.add([token.text for token in tokens[start:]])

    def _measure(self, start: int) -> None:
        branch = self.branch
        if branch is None:
            return
        tokens = branch.tokens[start:]
        entropies = [token.entropy for token in tokens]
        self._entropy += entropies
        # Heatmap.index inlined (entropies are never negative): it runs once per token of 32k-token rollouts.
        ceiling, top = HEAT.ceiling, STOPS - 1
        codes = [bucket if (bucket := int(e / ceiling * STOPS)) < top else top for e in entropies]
        classes = [token.cls for token in tokens]
        disagreements = [i for i, cls in enumerate(classes) if cls == "reranked" or cls == "shifted"]
        for i in disagreements:
            codes[i] |= RERANKED if classes[i] == "reranked" else SHIFTED
        self._disagreements += [start + i for i in disagreements]
        sources = branch.sources[start:start + len(tokens)]
        touched = [i for i, source in enumerate(sources) if source != "base"]
        for i in touched:
            codes[i] |= STEERED if sources[i] in STEERING else TOUCHED
        self._touched += [start + i for i in touched]
        for i in range(0, min(branch.shared, start + len(tokens)) - start):
            codes[i] |= SHARED
        if self.fork is not None and start <= self.fork < start + len(tokens):
            codes[self.fork - start] |= FORK
        self._codes += codes

    def set_tau(self, nats: float | None) -> None:
        """Move the gate: which tokens glow changes, the text does not."""
        if nats == self.tau:
            return
        old, self.tau = self.tau, nats
        if old is None or nats is None or not self.is_mounted:
            self.refresh()
            return
        # Only lines holding a token between the old and the new τ change: repaint just those.
        low, high = min(old, nats), max(old, nats)
        entropy = self._entropy
        top = self.scroll_offset.y
        for line in self._layout.lines_holding(top, top + self.scrollable_content_region.height,
                                               lambda token: low < entropy[token] <= high):
            self.refresh_line(line)

    def set_matches(self, matches: list[int]) -> None:
        self.matches = matches
        self._match_set = frozenset(matches)
        self.refresh()

    def decision(self, start: int, direction: int) -> int | None:
        """The nearest token after (direction > 0) or before `start` whose base entropy is above τ.

        A scan from `start` rather than a list of every decision point: after τ moves, no full pass.
        """
        tau, entropy = self.tau, self._entropy
        if tau is None:
            return None
        steps = range(start + 1, len(entropy)) if direction > 0 else range(start - 1, -1, -1)
        return next((index for index in steps if entropy[index] > tau), None)

    # --- rendering ----------------------------------------------------------------------

    def _text_width(self) -> int:
        return max(self.scrollable_content_region.width, 8) if self.is_mounted else 80

    def _resize_virtual(self) -> None:
        self.virtual_size = Size(self._layout.width, self._layout.line_count)

    def on_resize(self, event: events.Resize) -> None:
        width = self._text_width()
        if width != self._layout.width:
            self._layout.reflow(width)
            self._resize_virtual()
            self.refresh()
            self.scroll_to_cursor()

    def notify_style_update(self) -> None:
        self._styles.clear()
        super().notify_style_update()

    def on_focus(self) -> None:
        self._refresh_cursor()

    def on_blur(self) -> None:
        self._refresh_cursor()

    def _refresh_cursor(self) -> None:
        if self.cursor < len(self._codes):
            self._refresh_token(self.cursor)

    def _style(self, code: int) -> Style:
        """The style for a token code with its dynamic marks (above τ, cursor, match) already set."""
        style = self._styles.get(code)
        if style is None:
            kind = "hot" if code & HOT else "cool"
            style = self.get_component_rich_style(f"token-view--{kind}-{code & BUCKET}")
            for flag, name in DECORATIONS:
                if code & flag:
                    style += self.get_component_rich_style(f"token-view--{name}", partial=True)
            self._styles[code] = style
        return style

    def render_line(self, y: int) -> Strip:
        fragments = self._layout.fragments(self.scroll_offset.y + y)
        width = self.scrollable_content_region.width
        codes, entropy, matches, cursor = self._codes, self._entropy, self._match_set, self.cursor
        tau = float("inf") if self.tau is None else self.tau
        styles, style = self._styles, self._style
        # The focused heatmap's cursor is bright, the other one's dim: which view do keys act on is visible.
        cursor_mark = CURSOR if self.has_focus else IDLE_CURSOR
        segments = []
        used = 0
        for index, text, cells in fragments:
            code = codes[index]
            if entropy[index] > tau:
                code |= HOT
            if index == cursor:
                code |= cursor_mark
            if index in matches:
                code |= MATCH
            segments.append(Segment(text, styles.get(code) or style(code)))
            used += cells
        if used < width:
            # The widget's own style walks the DOM each time: keep it with the token styles.
            background = styles.get(-1)
            if background is None:
                background = styles[-1] = self.rich_style
            segments.append(Segment(" " * (width - used), background))
        return Strip(segments, max(used, width))

    # --- cursor ---------------------------------------------------------------------------

    def move_to(self, index: int) -> None:
        """Put the cursor on a token, keep it in view and tell the screen."""
        if not self._codes:
            return
        index = min(max(index, 0), len(self._codes) - 1)
        old, self.cursor = self.cursor, index
        if old < len(self._codes):
            self._refresh_token(old)
        self._refresh_token(index)
        self.scroll_to_cursor()
        self.post_message(self.CursorMoved(self, index))

    def _refresh_token(self, index: int) -> None:
        first = self._layout.token_line[index]
        last = self._layout.token_line[index + 1] if index + 1 < len(self._layout.token_line) else first
        self.refresh_lines(first, last - first + 1)

    def scroll_to_cursor(self) -> None:
        """Bring the cursor's line to the middle of the view, but only once it has left the view.

        Scrolling repaints every visible line; a half-page jump does it once per half page, not per line.
        """
        if not self.is_mounted or self.cursor >= len(self._codes):
            return
        line = self._layout.token_line[self.cursor]
        top = self.scroll_offset.y
        if top <= line < top + self.scrollable_content_region.height:
            return
        self.scroll_to_region(Region(0, line, 1, 1), animate=False, center=True, immediate=True)

    def action_step(self, delta: int) -> None:
        self.move_to(self.cursor + delta)

    def action_line(self, delta: int) -> None:
        if not self._codes:
            return
        layout = self._layout
        line, column = layout.token_line[self.cursor], layout.column_of(self.cursor)
        # A token cut over several lines (a long one, or blank lines) is stepped over whole.
        while 0 <= (line := line + delta) < layout.line_count:
            target = layout.token_at(line, column)
            if target is not None and target != self.cursor:
                self.move_to(target)
                return
        self.move_to(0 if delta < 0 else len(self._codes) - 1)

    def action_page(self, delta: int) -> None:
        for _ in range(max(self.scrollable_content_region.height - 1, 1)):
            self.action_line(delta)

    def action_first(self) -> None:
        self.move_to(0)

    def action_last(self) -> None:
        self.move_to(len(self._codes) - 1)

    def action_decision(self, direction: int) -> None:
        if self.tau is None:
            self.notify("τ is not set yet: there are no entropies to take its quantile over", severity="warning")
            return
        target = self.decision(self.cursor, direction)
        if target is None:
            where = "after" if direction > 0 else "before"
            self.notify(f"no decision point (entropy > {self.tau:.2f} nats) {where} this token", timeout=3)
            return
        self.move_to(target)

    def action_disagreement(self, direction: int) -> None:
        if self.branch is not None and not self.branch.scored:
            self.notify("this branch is not scored yet: the teacher's picks come with scoring", severity="warning")
            return
        if self.branch is not None and self.branch.tokens and self.branch.tokens[0].teacher is None:
            self.notify("no teacher is loaded: start rmx with --teacher or --teacher-adapter", severity="warning")
            return
        self._jump(self._disagreements, direction, "no teacher disagreement")

    def action_touched(self, direction: int) -> None:
        self._jump(self._touched, direction, "no touched token (forced, or substituted by an intervention)")

    def jump_to_match(self, direction: int) -> bool:
        """Move to the next (or previous) search match; False when there is none."""
        return self._jump(self.matches, direction, "")

    def _jump(self, positions: list[int], direction: int, missing: str) -> bool:
        target = _neighbour(positions, self.cursor, direction)
        if target is None:
            if missing:
                where = "after" if direction > 0 else "before"
                self.notify(f"{missing} {where} this token", timeout=3)
            return False
        self.move_to(target)
        return True

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        target = self._layout.token_at(self.scroll_offset.y + offset.y, offset.x)
        if target is not None:
            self.move_to(target)


def _neighbour(positions: list[int], cursor: int, direction: int) -> int | None:
    """The nearest of these sorted positions after (direction > 0) or before the cursor."""
    if direction > 0:
        at = bisect_right(positions, cursor)
        return positions[at] if at < len(positions) else None
    at = bisect_left(positions, cursor) - 1
    return positions[at] if at >= 0 else None
