"""The pool inspector: a rollouts file's pass-rate histogram, correct vs wrong lengths, and decision points per τ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.service.client import EngineClient
from engine.recipes.pool import DecisionRate, LengthStats, PoolStats
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from rmx_tui.workers import describe
from rmx_tui.widgets.pass_rate_histogram import PassRateHistogram

KEEP_STEP = 0.05
"""How much one press of +/- moves the fraction of rollouts the length trim keeps."""


def rollouts_file_of(outputs: dict[str, str], kind: str, config: dict[str, Any]) -> Path | None:
    """The rollouts file a run sampled or selected from, None for kinds that have none or a run that has not
    finished: a rollouts or pipeline run's from the outputs its result.json lists, a pool run's from its config."""
    if kind in ("rollouts", "pipeline"):
        rollouts = outputs.get("rollouts")
        return Path(rollouts) if rollouts else None
    if kind == "pool":
        pool = config.get("pool")
        rollouts = pool.get("rollouts") if isinstance(pool, dict) else None
        return Path(rollouts) if isinstance(rollouts, str) and rollouts else None
    return None


class PoolInspected(Message):
    """The pool's stats were read; they carry the decision rates per τ when the pool was scored under the base."""

    def __init__(self, stats: PoolStats) -> None:
        super().__init__()
        self.stats = stats


class PoolInspectionFailed(Message):
    """Reading or scoring the pool raised; `scoring` says which."""

    def __init__(self, error: str, scoring: bool) -> None:
        super().__init__()
        self.error = error
        self.scoring = scoring


def _tokens(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


class PoolScreen(Screen):
    """What `rmx pool show` prints, for one rollouts file, through the engine client; esc goes back."""

    DEFAULT_CSS = """
    PoolScreen #pool-title { height: auto; padding: 0 1; background: $panel; text-style: bold; }
    PoolScreen #pool-summary { height: auto; padding: 0 1; }
    PoolScreen #pool-notice { height: 1; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    PoolScreen #pool-notice.-busy { color: $warning; }
    PoolScreen #pool-notice.-error { color: $error; }
    PoolScreen #pool-body { height: 1fr; }
    PoolScreen #pool-histogram { width: 1fr; border-right: solid $foreground 20%; }
    PoolScreen #pool-tables { width: 1fr; }
    PoolScreen DataTable { height: auto; margin: 0 1 1 1; }
    PoolScreen #pool-decision-hint { height: auto; padding: 0 1; color: $foreground-muted; }
    """

    BINDINGS = [
        Binding("b", "score", "score under the base",
                tooltip="Entropies of the pool's rollouts under the loaded base (cached beside the rollouts), "
                        "then the share of tokens above each τ"),
        Binding("plus,equals_sign", "keep(1)", "keep more", key_display="+/-"),
        Binding("minus", "keep(-1)", "keep fewer", show=False),
        Binding("r", "reread", "reread", tooltip="Read the rollouts file again (a rollouts run may still be writing)"),
        Binding("escape", "app.pop_screen", "back"),
    ]

    def __init__(self, client: EngineClient, rollouts_path: str | Path, *, size: int | None = None,
                 keep_shortest: float = 1.0) -> None:
        super().__init__()
        self.client = client
        self.rollouts = str(rollouts_path)
        self.pool_size = size
        """Keep the N mixed problems closest to a pass rate of 0.5, as `rmx pool select --size`."""
        self.keep_shortest = keep_shortest
        self.stats: PoolStats | None = None
        self.decision: list[DecisionRate] | None = None
        """Kept apart from `stats`: the rates are over the untrimmed pool, so a new trim leaves them valid."""
        self.scoring = False
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"pool · {self.rollouts}", id="pool-title")
        yield Static(id="pool-summary")
        yield Static(id="pool-notice")
        with Horizontal(id="pool-body"):
            yield PassRateHistogram(id="pool-histogram")
            with Vertical(id="pool-tables"):
                yield DataTable(id="pool-lengths", cursor_type="none", zebra_stripes=True)
                yield Static(id="pool-decision-hint")
                yield DataTable(id="pool-decision", cursor_type="none", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        lengths = self.query_one("#pool-lengths", DataTable)
        lengths.add_columns("length (tokens)", "rollouts", "mean", "median", "p90")
        decision = self.query_one("#pool-decision", DataTable)
        decision.add_columns("τ", "nats", "decision points", "in correct", "in wrong")
        self._show()
        self._read(self.keep_shortest)

    # --- workers ----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="pool-read")
    def _read(self, keep_shortest: float) -> None:
        try:
            self.post_message(PoolInspected(self.client.pool_stats(self.rollouts, self.pool_size, keep_shortest)))
        except Exception as error:
            self.post_message(PoolInspectionFailed(describe(error), scoring=False))

    @work(thread=True, exclusive=True, exit_on_error=False, group="pool-score")
    def _score(self, keep_shortest: float) -> None:
        try:
            stats = self.client.pool_stats(self.rollouts, self.pool_size, keep_shortest, with_base=True)
            self.post_message(PoolInspected(stats))
        except Exception as error:
            self.post_message(PoolInspectionFailed(describe(error), scoring=True))

    # --- actions ----------------------------------------------------------------------------

    def action_score(self) -> None:
        if self.scoring:
            return  # one pass at a time: a second would only wait for the first on the engine's lock
        self.scoring = True
        self.error = None
        self._score(self.keep_shortest)
        self._show()

    def action_keep(self, steps: int) -> None:
        keep = round(min(1.0, max(KEEP_STEP, self.keep_shortest + steps * KEEP_STEP)), 2)
        if keep != self.keep_shortest:
            self.keep_shortest = keep
            self._read(keep)

    def action_reread(self) -> None:
        self.decision = None  # the file may have grown since it was scored
        self.error = None
        self._read(self.keep_shortest)
        self._show()

    # --- what the workers report ------------------------------------------------------------

    def on_pool_inspected(self, message: PoolInspected) -> None:
        stats = message.stats
        if stats.decision is not None:
            self.decision = stats.decision
            self.scoring = False
        if stats.keep_shortest == self.keep_shortest:  # else a newer trim is on its way
            self.stats = stats
            self.error = None
        self._show()

    def on_pool_inspection_failed(self, message: PoolInspectionFailed) -> None:
        if message.scoring:
            self.scoring = False
        else:
            self.stats = None  # what was shown came from a file that can no longer be read
        self.error = message.error
        self._show()

    # --- drawing ----------------------------------------------------------------------------

    def _show(self) -> None:
        self._show_notice()
        stats = self.stats
        summary = self.query_one("#pool-summary", Static)
        self.query_one(PassRateHistogram).show(stats.pass_rates if stats else [])
        self._show_lengths(stats)
        self._show_decision()
        if stats is None:
            summary.update("reading the rollouts…" if self.error is None else "")
            return
        chosen = "" if self.pool_size is None else f" (the {self.pool_size} closest to a pass rate of 0.5)"
        summary.update(
            f"{stats.problems} problems at K={stats.k}: {stats.mixed} mixed, {stats.all_correct} all correct, "
            f"{stats.all_wrong} all wrong · pool: {stats.selected} problems{chosen}, {stats.rollouts} rollouts "
            f"after keeping the shortest {stats.keep_shortest:.0%}" + (
                f" of each problem's (the trim removed {stats.trim_removed_problems} problems and "
                f"{stats.trim_removed_rollouts} rollouts)" if stats.keep_shortest < 1.0 else ""))

    def _show_notice(self) -> None:
        notice = self.query_one("#pool-notice", Static)
        notice.set_class(self.error is not None, "-error")
        notice.set_class(self.error is None and self.scoring, "-busy")
        if self.error is not None:
            notice.update(self.error)
        elif self.scoring:
            notice.update("scoring the pool under the base… (entropies are cached beside the rollouts)")
        else:
            notice.update("")

    def _show_lengths(self, stats: PoolStats | None) -> None:
        table = self.query_one("#pool-lengths", DataTable)
        table.clear()
        if stats is None:
            return
        kept = f"{stats.keep_shortest:.0%} kept"
        rows: list[tuple[str, LengthStats]] = [
            ("correct", stats.lengths_correct), ("wrong", stats.lengths_wrong),
            (f"correct, {kept}", stats.trimmed_correct), (f"wrong, {kept}", stats.trimmed_wrong),
        ]
        for name, lengths in rows:
            table.add_row(name, str(lengths.count), _tokens(lengths.mean), _tokens(lengths.median),
                          _tokens(lengths.p90))

    def _show_decision(self) -> None:
        table = self.query_one("#pool-decision", DataTable)
        hint = self.query_one("#pool-decision-hint", Static)
        table.clear()
        if self.decision is None:
            table.display = False
            hint.update("decision points per τ: press b to score the pool under the loaded base")
            return
        table.display = True
        hint.update("decision points per τ: share of the pool's completion tokens whose base entropy is above τ")
        for row in self.decision:
            table.add_row(row.tau, f"{row.nats:.2f}", _percent(row.fraction), _percent(row.correct),
                          _percent(row.wrong))
