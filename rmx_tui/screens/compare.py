"""The compare view: the paper's Table 2 over the scored rollouts, and how well the τ gate finds disagreements."""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING

from engine.core.config import Tau
from engine.core.scoring import gate_quality, summarize
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.color import Color
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual_plotext import PlotextPlot

from rmx_tui import workers
from rmx_tui.gate import count_above
from rmx_tui.messages import EditsCompared, EngineFailed
from rmx_tui.ui_state import Branch
from rmx_tui.widgets.edit_overlap import KIND_NAMES, EditOverlap
from rmx_tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from rmx_tui.app import RmxApp

SWEEP = 40
"""τ values on the precision/recall curve."""


def _fmt(value: float | int | None, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value}{unit}"
    return f"{value:.{digits}f}{unit}"


class CompareScreen(Screen):
    """Table 2 and the gate's precision/recall against the teacher, both following τ as it moves; below, the edit
    overlap of the teacher and an adapter on the base's greedy rollout of the open problem."""

    app: "RmxApp"

    BINDINGS = [
        Binding("escape,t", "app.pop_screen", "back"),
        Binding("plus,equals_sign", "tau(1)", "τ up", key_display="+/-"),
        Binding("minus", "tau(-1)", "τ down", show=False),
        Binding("q", "tau_mode", "τ nats/quantile"),
        Binding("a", "pick_adapter", "overlap: adapter"),
        Binding("1", "edit('teacher')", "next edit", key_display="1-3"),
        Binding("2", "edit('adapter')", "next adapter edit", show=False),
        Binding("3", "edit('both')", "next both edit", show=False),
        Binding("n", "any_edit(1)", "next / previous edit", key_display="n/N"),
        Binding("N", "any_edit(-1)", "previous edit", show=False),
    ]

    def __init__(self, root: Branch | None = None) -> None:
        super().__init__()
        self.root = root
        """The open problem's root rollout: its prompt is what the edit overlap decodes."""
        self.adapter: str | None = None
        """The adapter last compared (offered again the next time `a` is pressed)."""

    def compose(self) -> ComposeResult:
        yield Static(id="compare-title")
        with Horizontal(id="compare-body"):
            yield DataTable(id="table2", cursor_type="none", zebra_stripes=True)
            with Vertical(id="gate-side"):
                yield DataTable(id="gate", cursor_type="none", zebra_stripes=True)
                yield PlotextPlot(id="curve")
        yield EditOverlap(id="overlap")
        yield StatusBar(id="compare-status")
        yield Footer()

    def on_mount(self) -> None:
        for table in self.query(DataTable):
            table.add_columns("metric", "value")
        self.watch(self.app, "gate", self.refresh_tables, init=False)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.refresh_tables())
        self.refresh_tables()

    def on_screen_resume(self) -> None:
        self.refresh_tables()


    def action_pick_adapter(self) -> None:
        from rmx_tui.adapter_choice import newest_adapter
        from rmx_tui.screens.modals import AdapterPrompt

        if self.root is None:
            self.notify("open a problem first: the overlap decodes its prompt", severity="warning")
            return
        if self.app.info is None or self.app.info.teacher is None:
            self.notify("load a teacher first: the overlap compares its edits with an adapter's", severity="warning")
            return

        def compare(adapter: str | None) -> None:
            if adapter is None:
                return
            self.adapter = adapter
            self.query_one(EditOverlap).say(f"decoding the base greedily and scoring under the teacher and {adapter}…")
            max_new = self.app.settings.sampling.max_new_tokens
            self._compare_edits(self.root.problem.id, self.root.prompt_ids, adapter, max_new)

        self.app.push_screen(AdapterPrompt(self.adapter or newest_adapter(self.app.client)), compare)

    @work(thread=True, exclusive=True, exit_on_error=False, group="overlap")
    def _compare_edits(self, problem_id: str, prompt_ids: tuple[int, ...], adapter: str, max_new: int) -> None:
        workers.compare_edits(self.app.client, problem_id, prompt_ids, adapter, max_new, self.post_message)

    def on_edits_compared(self, message: EditsCompared) -> None:
        self.query_one(EditOverlap).show(message.problem_id, message.edits, message.names)

    def on_engine_failed(self, message: EngineFailed) -> None:
        self.query_one(EditOverlap).say(f"overlap failed: {message.error}")
        self.notify(f"{message.during} failed: {message.error}", severity="error")

    def action_edit(self, kind: str) -> None:
        self._landed(self.query_one(EditOverlap).jump(kind), KIND_NAMES[kind])

    def action_any_edit(self, direction: int) -> None:
        self._landed(self.query_one(EditOverlap).jump(None, direction), "any")

    def _landed(self, pos: int | None, what: str) -> None:
        overlap = self.query_one(EditOverlap)
        if overlap.edits is None:
            self.notify("no overlap yet: press a to pick an adapter", severity="warning")
        elif pos is None:
            self.notify(f"no {what} edit on this rollout", severity="warning")
        else:
            overlap.scroll_visible()

    def action_tau(self, steps: int) -> None:
        self.app.gate = self.app.gate.moved(steps)

    def action_tau_mode(self) -> None:
        self.app.gate = self.app.gate.toggled(self.app.tau_reference.ordered)

    def refresh_tables(self) -> None:
        rollouts = self.app.session.scored_roots()
        tokens = [t for rollout in rollouts for t in rollout.tokens]
        ordered = sorted(t.entropy for t in tokens)
        info = self.app.info
        status = self.query_one(StatusBar)
        # The browser's τ, resolved over its one reference rollout: never re-resolved over these rollouts.
        nats = self.app.tau_nats()
        status.set_gate(self.app.describe_tau(), count_above(ordered, nats), len(ordered))
        if info is not None and info.base is not None:
            status.set_models(info.base.label, info.teacher.label if info.teacher else None)
        plural = "" if len(rollouts) == 1 else "s"
        self.query_one("#compare-title", Static).update(
            f"Table 2 over {len(rollouts)} scored root rollout{plural} ({len(tokens)} tokens; forks left out), "
            "the status bar's τ · esc returns")
        table2 = self.query_one("#table2", DataTable)
        table2.clear()
        if not rollouts:
            table2.add_row("no scored rollouts yet", "open or decode one")
            self._gate_rows(None)
            return
        summary = summarize(rollouts, Tau(nats) if nats is not None else None)
        for row in (
            ("sequences", _fmt(summary.sequences)), ("tokens", _fmt(summary.tokens)),
            ("mean base entropy", _fmt(summary.mean_entropy, " nats")), ("τ", _fmt(summary.tau, " nats")),
            ("tokens above τ", _fmt(summary.above_tau_pct, " %", 1)),
            ("reranked", _fmt(summary.reranked_pct, " %", 1)), ("shifted", _fmt(summary.shifted_pct, " %", 1)),
            ("unshifted", _fmt(summary.unshifted_pct, " %", 1)),
            ("mean teacher rank at reranked", _fmt(summary.mean_teacher_rank_reranked, "", 2)),
            ("mean entropy at reranked", _fmt(summary.mean_entropy_reranked, " nats")),
            ("mean entropy at unshifted", _fmt(summary.mean_entropy_unshifted, " nats")),
            ("entropy ratio (reranked ÷ unshifted)", _fmt(summary.entropy_ratio, "×", 2)),
        ):
            table2.add_row(*row)
        has_teacher = any(t.cls is not None for t in tokens)
        self._gate_rows(gate_quality(tokens, summary.tau) if has_teacher and summary.tau is not None else None)
        self._plot(tokens, summary.tau if has_teacher else None)

    def _gate_rows(self, quality) -> None:
        table = self.query_one("#gate", DataTable)
        table.clear()
        if quality is None:
            table.add_row("gate vs teacher", "needs a teacher and scored rollouts")
            self.query_one(PlotextPlot).plt.clear_data()
            self.query_one(PlotextPlot).refresh()
            return
        for row in (
            ("gated tokens (H > τ)", _fmt(quality.gated)),
            ("teacher disagreements", _fmt(quality.disagreements)),
            ("gated ∩ disagreements", _fmt(quality.hits)),
            ("precision", _fmt(quality.precision)), ("recall", _fmt(quality.recall)),
        ):
            table.add_row(*row)

    def _plot(self, tokens, tau: float | None) -> None:
        """Precision and recall of the gate over a sweep of τ, with the current τ marked."""
        widget = self.query_one(PlotextPlot)
        plt = widget.plt
        plt.clear_data()
        plt.clear_figure()
        if tau is None or not tokens:
            widget.refresh()
            return
        every = sorted(t.entropy for t in tokens)
        disagree = sorted(t.entropy for t in tokens if t.cls not in (None, "unshifted"))
        top = every[-1] or 1.0
        xs = [top * i / SWEEP for i in range(SWEEP)]
        precision, recall = [], []
        for x in xs:
            gated = len(every) - bisect_right(every, x)
            hits = len(disagree) - bisect_right(disagree, x)
            precision.append(hits / gated if gated else 0.0)
            recall.append(hits / len(disagree) if disagree else 0.0)
        colours = self.app.theme_variables
        plt.plot(xs, precision, label="precision", color=Color.parse(colours["primary"]).rgb, marker="braille")
        plt.plot(xs, recall, label="recall", color=Color.parse(colours["accent"]).rgb, marker="braille")
        plt.vline(tau, color=Color.parse(colours["warning"]).rgb)
        plt.ylim(0, 1)
        plt.xlabel("τ (nats)")
        plt.title("gate vs teacher disagreement")
        widget.refresh()
