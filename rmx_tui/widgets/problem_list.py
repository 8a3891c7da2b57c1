"""The problem list: each problem with its pass rate, and under it the tree of its rollouts and their forks."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from rmx_tui.ui_state import Branch, Entry

Item = Entry | Branch


def short_id(problem_id: str) -> str:
    """A problem id to show whole: `test/precalculus/807.json` → `precalculus/807`."""
    parts = problem_id.removesuffix(".json").split("/")
    return "/".join(parts[-2:]) if len(parts) > 2 else "/".join(parts)


def title(statement: str, width: int) -> str:
    """The statement's first words that fit in `width` cells, cut at a word with an ellipsis."""
    words = statement.split()
    if width < 2 or not words:
        return ""
    text = ""
    for word in words:
        candidate = f"{text} {word}" if text else word
        if len(candidate) > width - 1:
            return (text or word[: width - 1]) + "…"
        text = candidate
    return text


class ProblemList(Tree[Item]):
    """Problems → root rollouts → forks; ✓/✗ marks and labels are drawn from the live model on every paint."""

    COMPONENT_CLASSES = {"problem-list--correct", "problem-list--wrong", "problem-list--pending",
                         "problem-list--muted"}

    DEFAULT_CSS = """
    ProblemList { background: $panel; }
    ProblemList > .problem-list--correct { color: $success; text-style: bold; }
    ProblemList > .problem-list--wrong { color: $error; text-style: bold; }
    ProblemList > .problem-list--pending { color: $warning; }
    ProblemList > .problem-list--muted { color: $foreground-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("problems", id=id)
        self.show_root = False
        self.guide_depth = 2
        self._item_nodes: dict[str, TreeNode[Item]] = {}

    def set_entries(self, entries: list[Entry]) -> None:
        self.clear()
        self._item_nodes.clear()
        for entry in entries:
            node = self.root.add(entry.problem.id, data=entry, expand=True, allow_expand=False)
            self._item_nodes[entry.problem.id] = node
            for root in entry.roots:
                self._add(node, root)

    def add_branch(self, branch: Branch) -> None:
        parent = self._item_nodes[branch.parent.key if branch.parent else branch.problem.id]
        parent.allow_expand = True
        parent.expand()
        self._add(parent, branch)

    def _add(self, parent: TreeNode[Item], branch: Branch) -> None:
        node = parent.add(branch.key, data=branch, expand=True, allow_expand=bool(branch.children))
        self._item_nodes[branch.key] = node
        for child in branch.children:
            self._add(node, child)

    def select_branch(self, branch: Branch) -> None:
        """Put the tree's cursor on a branch's node, without sending a selection."""
        node = self._item_nodes.get(branch.key)
        if node is not None:
            # A node added this frame has no line yet; its line exists after the next refresh.
            self.call_after_refresh(self.move_cursor, node, animate=False)

    def on_resize(self) -> None:
        # Problem titles are cut to the width: a new width lays them out again.
        self.changed()

    def changed(self) -> None:
        """Labels read the live model; repaint them."""
        self._invalidate()
        self.refresh()

    def render_label(self, node: TreeNode[Item], base_style: Style, style: Style) -> Text:
        item = node.data
        if item is None:
            return super().render_label(node, base_style, style)
        if isinstance(item, Entry):
            mark, rest, muted = self._describe_problem(item, self.size.width - 4)
        else:
            mark, rest, muted = self._describe(item)
        mark_style = {"✓": "problem-list--correct", "✗": "problem-list--wrong"}.get(mark, "problem-list--pending")
        text = Text.assemble(
            (mark + " ", self.get_component_rich_style(mark_style, partial=True)) if mark else "",
            rest,
            (muted, self.get_component_rich_style("problem-list--muted", partial=True)),
        )
        text.stylize(style)
        if node.allow_expand:
            icon = self.ICON_NODE_EXPANDED if node.is_expanded else self.ICON_NODE
            return Text.assemble((icon, base_style), text)
        return text

    @staticmethod
    def _describe_problem(entry: Entry, width: int) -> tuple[str, str, str]:
        """(mark, the statement's first words, the id and pass rate dimmed): the id whole, the title cut at a word."""
        graded = entry.graded
        mark = ("✓" if any(v.correct for v in graded) else "✗") if graded else ""
        muted = f" {short_id(entry.problem.id)}" + (f" {entry.pass_rate}" if graded else "")
        room = width - len(mark) - (1 if mark else 0) - len(muted)
        return mark, title(entry.problem.problem, room), muted

    @staticmethod
    def _describe(item: Branch) -> tuple[str, str, str]:
        """(mark, label, muted detail) for a problem or a branch."""
        answer = ""
        if item.verdict is not None:
            answer = f" → {item.verdict.answer if item.verdict.answer is not None else 'no answer'}"
        elif item.state in ("cancelled", "failed"):
            answer = f" ({item.state}, partial)"
        return item.mark, item.label, answer
