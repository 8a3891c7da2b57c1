"""The compare view's edit-overlap source: the base's greedy rollout, each token marked by who would change it."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from engine.recipes.overlap import RolloutEdits
from rmx_tui.figures.marks import printable

KIND_STYLES = {
    "teacher": "bold $background on $primary",
    "adapter": "bold $background on $secondary",
    "both": "bold $background on $accent",
}
"""How each kind of edit is drawn: theme variables only, so every theme (and the legend) follows."""

KIND_NAMES = {"teacher": "teacher only", "adapter": "adapter only", "both": "both"}


class EditOverlap(Static):
    """A legend with the counts, then the tokens; a cursor the compare view moves from edit to edit."""

    DEFAULT_CSS = """
    EditOverlap { height: auto; padding: 0 1; background: $surface; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.edits: RolloutEdits | None = None
        self.names: dict[int, str] = {}
        self.problem_id: str | None = None
        self.cursor: int | None = None
        """The token position the navigation keys last landed on."""
        self.waiting: str | None = None
        """What the view says while there is nothing to show (no adapter yet, or computing)."""

    def on_mount(self) -> None:
        self.update(self._content())

    def show(self, problem_id: str, edits: RolloutEdits, names: dict[int, str]) -> None:
        self.problem_id, self.edits, self.names, self.cursor, self.waiting = problem_id, edits, names, None, None
        self.update(self._content())

    def say(self, text: str) -> None:
        self.waiting = text
        self.update(self._content())

    def positions(self, kind: str | None) -> list[int]:
        """Positions edited as `kind` (teacher, adapter, both), or by anyone when `kind` is None."""
        if self.edits is None:
            return []
        return [pos for pos, k in enumerate(self.edits.kinds) if k is not None and (kind is None or k == kind)]

    def jump(self, kind: str | None, direction: int = 1) -> int | None:
        """Move the cursor to the next (or previous) edit of `kind`, wrapping; None when there is none."""
        found = self.positions(kind)
        if not found:
            return None
        here = -1 if self.cursor is None and direction > 0 else (len(self.edits.kinds) if self.cursor is None
                                                                 else self.cursor)
        later = [pos for pos in found if (pos > here if direction > 0 else pos < here)]
        self.cursor = (later[0] if direction > 0 else later[-1]) if later else (found[0] if direction > 0
                                                                              else found[-1])
        self.update(self._content())
        return self.cursor

    def _legend(self) -> list[tuple[str, str] | str]:
        edits = self.edits
        parts: list[tuple[str, str] | str] = [("edit overlap ", "bold")]
        for kind, style in KIND_STYLES.items():
            count = f" {edits.count(kind)}" if edits is not None else ""
            parts += [(f" {KIND_NAMES[kind]}{count} ", style), " "]
        parts.append((" keys 1/2/3 · n/N · a: adapter", "$foreground-muted"))
        return parts

    def _content(self) -> Content:
        legend = self._legend()
        edits = self.edits
        if edits is None:
            note = self.waiting or "press a to compare the teacher's edits with an adapter's (the newest trained one)"
            return Content.assemble(*legend, "\n", (note, "$foreground-muted"))
        union = len(self.positions(None))
        both = edits.count("both")
        jaccard = f"{both / union:.2f}" if union else "–"
        head = (f"{self.problem_id} · base greedy, {len(edits.ids)} tokens · teacher {edits.teacher} · adapter "
                f"{edits.adapter} · Jaccard {jaccard}")
        parts: list[tuple[str, str] | str] = [*legend, "\n", (head, "$foreground-muted"), "\n"]
        if self.waiting:
            parts += [(self.waiting, "$warning"), "\n"]
        for pos, (token, kind) in enumerate(zip(edits.ids, edits.kinds)):
            text = self.names.get(token, f"#{token}")
            style = KIND_STYLES.get(kind, "") if kind else ""
            if pos == self.cursor:
                style = f"{style} reverse underline".strip()
            parts.append((printable(text, newline="⏎\n") or "∅", style))
        if self.cursor is not None:
            parts += ["\n", (self._describe(self.cursor), "$foreground-muted")]
        return Content.assemble(*parts)

    def _describe(self, pos: int) -> str:
        edits = self.edits
        kind = edits.kinds[pos]
        def name(token: int) -> str:
            return repr(self.names.get(token, f"#{token}"))

        return (f"token {pos} ({KIND_NAMES.get(kind, 'no edit')}): base {name(edits.ids[pos])} → teacher "
                f"{name(edits.teacher_ids[pos])}, adapter {name(edits.adapter_ids[pos])} · base entropy "
                f"{edits.entropies[pos]:.2f} nats")
