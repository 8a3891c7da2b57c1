"""The compare view: the paper's Table 2 over the scored rollouts, and how well the τ gate finds disagreements."""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING

from engine.core.config import Tau
from engine.core.scoring import gate_quality, summarize
from textual.app import ComposeResult
from textual.binding import Binding
from textual.color import Color
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual_plotext import PlotextPlot

from rmx_tui.gate import count_above
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
    """Table 2 and the gate's precision/recall against the teacher, both following τ as it moves."""

    app: "RmxApp"

    BINDINGS = [
        Binding("escape,t", "app.pop_screen", "back"),
        Binding("plus,equals_sign", "tau(1)", "τ up", key_display="+/-"),
        Binding("minus", "tau(-1)", "τ down", show=False),
        Binding("q", "tau_mode", "τ nats/quantile"),
    ]

    def compose(self) -> ComposeResult:
        yield Static(id="compare-title")
        with Horizontal(id="compare-body"):
            yield DataTable(id="table2", cursor_type="none", zebra_stripes=True)
            with Vertical(id="gate-side"):
                yield DataTable(id="gate", cursor_type="none", zebra_stripes=True)
                yield PlotextPlot(id="curve")
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
