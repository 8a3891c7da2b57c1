"""The rollout browser: problems, the branch view with its heatmaps, the inspector, and every engine job."""

from __future__ import annotations

import json
import random
import re
import time
from bisect import bisect_right
from dataclasses import replace
from typing import TYPE_CHECKING

from engine.core.config import ModelSpec
from engine.core.decode import SamplingSpec
from engine.core.errors import RmxError
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Input, Static, Tree
from textual.worker import Worker, WorkerState, get_current_worker

from rmx_tui import workers
from rmx_tui.gate import TauReference, count_above
from rmx_tui.messages import (
    BranchDecoded, BranchExtended, DecodeCancelled, EngineFailed, EngineLoaded, InterventionRan, LoadProgressed,
    OutcomesSampled, ProblemsListed, RolloutScored,
)
from rmx_tui.ui_state import CANCELLED, DONE, FAILED, SCORING, UNSCORED, Branch, Entry, Verdict
from rmx_tui.screens.intervene_menu import InterventionMenu
from rmx_tui.screens.modals import LoadModel, TokenPrompt
from rmx_tui.settings import ALTERNATIVES
from rmx_tui.token_layout import quoted
from rmx_tui.widgets.branch_column import BranchColumn
from rmx_tui.widgets.inspector import Inspector
from rmx_tui.widgets.legend import Legend
from rmx_tui.widgets.outcome_bars import OutcomeBars
from rmx_tui.widgets.problem_list import ProblemList
from rmx_tui.widgets.problem_pane import ProblemPane
from rmx_tui.widgets.search_bar import SearchBar
from rmx_tui.widgets.status_bar import StatusBar
from rmx_tui.widgets.token_view import TokenView

if TYPE_CHECKING:
    from rmx_tui.app import RmxApp

NARROW = 120
"""Below this many columns the problem list becomes a drawer (ctrl+b) and the inspector moves under the heatmap."""
MIN_SIZE = (60, 20)
"""Below this the layout cannot work: one line says so instead."""
TYPED_ID = re.compile(r"^#(\d+)$")


class BrowserScreen(Screen):
    """Problems on the left, the branch (and its parent, split) in the centre, the inspector on the right."""

    app: "RmxApp"

    BINDINGS = [
        # The app's own keys first, so a narrow footer keeps them; the key map lists them under the app.
        Binding("J", "app.jobs", "jobs", tooltip="Jobs: runs with live progress, plots, cancel and resume"),
        Binding("question_mark", "app.help", "keys", tooltip="rmx's help: every key, the colours, τ and the classes"),
        Binding("n", "decision(1)", "decision", tooltip="Next decision point: base entropy above τ"),
        Binding("N", "decision(-1)", "previous decision point", show=False),
        Binding("d", "disagreement(1)", "disagree",
                tooltip="Next teacher disagreement: the teacher's pick differs from the base's argmax"),
        Binding("D", "disagreement(-1)", "previous teacher disagreement", show=False),
        Binding("f", "touched(1)", "next touched token", show=False,
                tooltip="Next touched token: one forced by you, or substituted by an intervention"),
        Binding("F", "touched(-1)", "previous touched token", show=False),
        Binding("plus,equals_sign", "tau(1)", "τ", key_display="+/-", tooltip="Raise τ (minus lowers it)"),
        Binding("minus", "tau(-1)", "lower τ", show=False),
        Binding("q", "tau_mode", "τ in nats or as a quantile", show=False),
        Binding("1", "force_top(1)", "force", key_display="1-5",
                tooltip="Fork here with the base's k-th most likely token (1-5)"),
        *(Binding(str(k), f"force_top({k})", f"force top-{k} alternative", show=False) for k in range(2, 6)),
        Binding("o", "force_teacher", "teacher", tooltip="Fork here with the teacher's pick"),
        Binding("r", "force_random", "force a random alternative", show=False,
                tooltip="Fork with a seeded draw from the base top-20, argmax excluded"),
        Binding("e", "force_typed", "force a typed token", show=False),
        Binding("c", "sample_outcomes", "P(correct)",
                tooltip="Sample continuations from this token and grade them: P(correct | token)"),
        Binding("i", "interventions", "interventions", show=False,
                tooltip="Run oracle, random or gated on this problem: a new branch, its touched tokens highlighted"),
        Binding("u,backspace", "up", "up", tooltip="Back up to the parent branch"),
        Binding("s", "new_rollout", "new sampled rollout", show=False),
        Binding("escape", "cancel", "cancel decoding", show=False),
        Binding("slash", "search", "search", show=False),
        Binding("t", "compare", "Table 2"),
        Binding("ctrl+b", "toggle_problems", "show or hide the problem list", show=False),
        Binding("p", "toggle_problem", "show or hide the problem statement", show=False),
        Binding("S", "export_svg", "export SVG", show=False),
        Binding("X", "export_rollout", "export", show=False),
        Binding("L", "load_models", "load models", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.active: Branch | None = None
        self.loaded = False
        self.stage = ""
        self.stage_started = 0.0
        self._ordered: tuple[str, int, bool, list[float]] = ("", -1, False, [])
        self._blocking: str | None = None
        """What the running one-call engine job (an intervention, an outcome estimate) is, to name it on esc."""

    # --- layout -------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="too-small")
        with Horizontal(id="body"):
            yield ProblemList(id="problems")
            with Horizontal(id="work"):
                with Vertical(id="centre"):
                    yield ProblemPane(id="problem")
                    yield Static(id="notice")
                    with Horizontal(id="columns"):
                        yield BranchColumn("parent", id="parent-column")
                        yield BranchColumn("branch", id="branch-column")
                    yield Legend()
                    yield SearchBar(id="search")
                with VerticalScroll(id="side"):
                    yield Inspector(id="inspector")
                    yield OutcomeBars(id="outcomes")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#parent-column").display = False
        # Tab moves between the problem list and the heatmaps; the inspector is read, not focused.
        self.query_one("#side").can_focus = False
        self.query_one(OutcomeBars).samples = self.app.settings.samples
        self.watch(self.app, "gate", self._update_gate, init=False)
        self.set_interval(1.0, self._tick)
        self._update_gate()
        settings = self.app.settings
        self._start_load(workers.LoadJob(settings.dataset, settings.limit, settings.rollouts, settings.base,
                                      settings.teacher))

    def on_resize(self) -> None:
        width, height = self.size
        narrow = width < NARROW
        if narrow != self.has_class("-narrow"):
            # Crossing the line opens or closes the drawer once; ctrl+b still toggles it either way.
            self.query_one(ProblemList).display = not narrow
        self.set_class(narrow, "-narrow")
        too_small = width < MIN_SIZE[0] or height < MIN_SIZE[1]
        self.set_class(too_small, "-too-small")
        if too_small:
            self.query_one("#too-small", Static).update(
                f"terminal too small ({width}×{height}); need {MIN_SIZE[0]}×{MIN_SIZE[1]}")

    # --- helpers --------------------------------------------------------------------------

    @property
    def main_view(self) -> TokenView:
        return self.query_one("#branch-column", BranchColumn).view

    @property
    def parent_view(self) -> TokenView:
        return self.query_one("#parent-column", BranchColumn).view

    def current_view(self) -> TokenView:
        """The heatmap the keys act on: the focused one, else the branch's."""
        focused = self.focused
        return focused if isinstance(focused, TokenView) else self.main_view

    def _columns(self) -> list[BranchColumn]:
        return list(self.query(BranchColumn))

    def _engine_busy(self) -> bool:
        return any(worker.group == "engine" and worker.state in (WorkerState.PENDING, WorkerState.RUNNING)
                   for worker in self.app.workers)

    def _set_notice(self, text: Content | str | None, error: bool = False) -> None:
        notice = self.query_one("#notice", Static)
        notice.display = text is not None
        notice.set_class(error, "-error")
        if text is not None:
            notice.update(text)

    def _tick(self) -> None:
        """While loading or in a one-call engine job, say how long it has taken: neither reports progress."""
        if self.stage:
            elapsed = int(time.monotonic() - self.stage_started)
            self.query_one(StatusBar).set_activity(f"{self.stage}… {elapsed} s")

    def _begin_blocking(self, stage: str, what: str) -> None:
        """Show a one-call engine job in the status bar, ticking, until its answer, its failure or esc."""
        self._blocking = what
        self.stage, self.stage_started = stage, time.monotonic()
        self._tick()

    def _end_blocking(self) -> None:
        self._blocking = None
        self.stage = ""
        self.query_one(StatusBar).set_activity("")
        self.query_one(OutcomeBars).set_progress(None)

    def _ordered_entropies(self) -> list[float]:
        """The entropies a quantile τ is taken over, sorted: the open problem's root rollout, for every branch."""
        branch = self.active
        if branch is None:
            return []
        while branch.parent is not None:
            branch = branch.parent
        key = (branch.key, len(branch.tokens), branch.scored)
        if self._ordered[:3] != key:
            self._ordered = (*key, sorted([token.entropy for token in branch.tokens]))
            self.app.tau_reference = TauReference("the root rollout", self._ordered[3])
        return self._ordered[3]

    def _update_gate(self) -> None:
        reference = self._ordered_entropies()
        gate = self.app.gate
        nats = gate.nats(reference)
        for column in self._columns():
            column.view.set_tau(nats)
        shown = sorted(token.entropy for token in self.active.tokens) if self.active is not None else []
        self.query_one(StatusBar).set_gate(self.app.describe_tau(), count_above(shown, nats), len(shown))
        self._inspect(self.current_view())

    def _inspect(self, view: TokenView) -> None:
        branch = view.branch
        self.query_one(Inspector).show(branch, view.cursor, view.tau)
        bars = self.query_one(OutcomeBars)
        if branch is None or not branch.tokens or view.cursor >= len(branch.tokens):
            bars.show([], None)
            return
        bars.show(self.app.session.outcomes_at(branch, view.cursor), branch.tokens[view.cursor].id)

    def _refresh_branch(self, branch: Branch, *, grown: bool = False, rescored: bool = False) -> None:
        """Repaint whatever shows this branch: its column(s), its tree node, the gate and the inspector."""
        for column in self._columns():
            if column.view.branch is branch:
                if rescored:
                    column.view.restyle()
                elif grown:
                    column.view.sync()
                column.retitle()
        self.query_one(ProblemList).changed()
        if branch is self.active:
            self._update_gate()

    def activate(self, branch: Branch, cursor: int | None = None) -> None:
        """Show a branch; a fork shows beside its parent, both with the cursor on the fork."""
        self.active = branch
        self.query_one(ProblemPane).show(branch, self.app.settings.template)
        split = branch.parent is not None
        parent_column = self.query_one("#parent-column", BranchColumn)
        notice = self.query_one("#notice", Static)
        rearranged = notice.display or parent_column.display != split
        parent_column.display = split
        self._set_notice(None)
        if rearranged:
            # The columns change width once the new arrangement is laid out: lay the tokens out after that, once.
            for column in self._columns():
                column.show(None)
            self.call_after_refresh(self._show, branch, cursor)
        else:
            self._show(branch, cursor)

    def _show(self, branch: Branch, cursor: int | None) -> None:
        if branch is not self.active:
            return  # another branch was opened before this one was laid out
        branch_column = self.query_one("#branch-column", BranchColumn)
        if branch.parent is not None:
            self.query_one("#parent-column", BranchColumn).show(branch.parent, cursor=branch.shared,
                                                                fork=branch.fork_pos)
            branch_column.show(branch, cursor=branch.shared if cursor is None else cursor)
        else:
            branch_column.show(branch, cursor=cursor or 0)
        self.query_one(ProblemList).select_branch(branch)
        self._update_gate()
        branch_column.view.focus()
        if branch.state == UNSCORED:
            if self._engine_busy():
                self.notify("the engine is busy: open this rollout again once it is free to score it",
                            severity="warning")
                return
            branch.state = SCORING
            self._refresh_branch(branch)
            self._run_score(branch.key, branch.prompt_ids, branch.stored_ids)

    def _target(self) -> tuple[Branch, int] | None:
        """The branch and position a fork applies to, or None after telling the user why not."""
        view = self.current_view()
        branch = view.branch
        if branch is None or not branch.tokens:
            self.notify("no token under the cursor: open a rollout first", severity="warning")
            return None
        if branch.busy:
            self.notify("this branch is still streaming: wait for it, or press esc to stop it", severity="warning")
            return None
        if self._engine_busy():
            self.notify("the engine is busy with another job: wait, or press esc to cancel it", severity="warning")
            return None
        if not self.loaded:
            self.notify("no model is loaded: press L to load one", severity="warning")
            return None
        return branch, view.cursor

    # --- engine workers -------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine")
    def _start_load(self, job: workers.LoadJob) -> None:
        workers.load(self.app.client, job, self.post_message)

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine")
    def _run_decode(self, job: workers.DecodeJob) -> None:
        worker = get_current_worker()
        workers.decode(self.app.client, job, self.post_message, lambda: worker.is_cancelled)

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine")
    def _run_score(self, key: str, prompt_ids: tuple[int, ...], ids: tuple[int, ...]) -> None:
        worker = get_current_worker()
        workers.score(self.app.client, key, prompt_ids, ids, self.post_message, lambda: worker.is_cancelled)

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine")
    def _run_sample(self, job: workers.SampleJob) -> None:
        worker = get_current_worker()
        workers.sample(self.app.client, job, self.post_message, lambda: worker.is_cancelled)

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine")
    def _run_intervention(self, job: workers.InterventionJob) -> None:
        worker = get_current_worker()
        workers.intervene(self.app.client, job, self.post_message, lambda: worker.is_cancelled)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # Jobs catch their own errors; this is the net for a bug in the job code itself.
        if event.state == WorkerState.ERROR:
            self.notify(f"{event.worker.name} failed: {event.worker.error}", severity="error")

    # --- engine messages ------------------------------------------------------------------

    def on_load_progressed(self, message: LoadProgressed) -> None:
        self.stage, self.stage_started = message.stage, time.monotonic()
        hint = ""
        if "demo" in message.stage:
            hint = "\n\nThe first demo run converts the model once (about 30 s); later runs take a few seconds."
        self._set_notice(Content.assemble((f"{message.stage}…", "bold"), (hint, "$foreground-muted")))
        self._tick()

    def on_problems_listed(self, message: ProblemsListed) -> None:
        session = self.app.session
        session.add_problems(message.problems)
        unknown = 0
        for stored in message.rollouts:
            entry = session.entries.get(stored.problem_id)
            if entry is None:
                unknown += 1
                continue
            session.add_stored(entry.problem, stored.prompt_ids, stored.completion_ids, f"stored {stored.sample}",
                               Verdict(answer=stored.answer, correct=stored.correct, reason="file"))
        if unknown:
            self.notify(f"{unknown} stored rollouts name problems that are not in {self.app.settings.dataset}",
                        severity="warning")
        self.query_one(ProblemList).set_entries(list(session.entries.values()))

    def on_engine_loaded(self, message: EngineLoaded) -> None:
        info = message.info
        self.loaded = info.base is not None
        self.stage = ""
        self.app.info = info
        self.query_one(StatusBar).set_models(info.base.label if info.base else None,
                                             info.teacher.label if info.teacher else None)
        self.query_one(StatusBar).set_activity("")
        if self.active is None:
            self._set_notice(Content.from_markup(
                "Models loaded. Pick a problem on the left and press [b $accent]enter[/] to decode a rollout."
                if self.loaded else "No model is loaded: press [b $accent]L[/] to load one."))
        if self.loaded and self.app.settings.autostart and self.active is None:
            if message.running_jobs:
                # Decoding now would compete with them for the CPU/GPU: wait for the user to pick a problem.
                plural = "s are" if message.running_jobs > 1 else " is"
                self._set_notice(Content.from_markup(
                    f"{message.running_jobs} job{plural} running ([b $accent]J[/] shows them), so nothing is "
                    "decoded until you ask: pick a problem on the left and press [b $accent]enter[/]."))
                problems = self.query_one(ProblemList)
                problems.display = True
                problems.focus()
                problems.cursor_line = 0  # enter decodes the first problem; ↑ ↓ pick another
                return
            self._autostart()

    def _autostart(self) -> None:
        """Open the first stored rollout, or decode one of the first problem (the load job is ending)."""
        entries = list(self.app.session.entries.values())
        if not entries:
            return
        if entries[0].roots:
            self.activate(entries[0].roots[0])
        else:
            self.generate_now(entries[0], 0)

    def on_branch_extended(self, message: BranchExtended) -> None:
        branch = self.app.session.branches[message.key]
        branch.extend(message.steps)
        self.query_one(StatusBar).set_activity(f"decoding {branch.label}: {len(branch.tokens)} tokens · esc stops")
        self._refresh_branch(branch, grown=True)

    def on_branch_decoded(self, message: BranchDecoded) -> None:
        branch = self.app.session.branches[message.key]
        branch.verdict = message.verdict
        branch.state = SCORING
        self.query_one(StatusBar).set_activity(f"scoring {branch.label}")
        self._refresh_branch(branch)
        if branch is self.active and branch.parent is None:
            self._land_on_decision()

    def _land_on_decision(self) -> None:
        view = self.main_view
        first = view.decision(-1, 1)
        if first is not None:
            view.move_to(first)

    def on_rollout_scored(self, message: RolloutScored) -> None:
        branch = self.app.session.branches[message.key]
        fresh = branch.state == SCORING and not branch.tokens
        branch.apply_score(message.rollout, message.texts)
        branch.state = DONE
        self.query_one(StatusBar).set_activity("")
        self._refresh_branch(branch, rescored=True)
        if fresh and branch is self.active:
            self._land_on_decision()

    def on_decode_cancelled(self, message: DecodeCancelled) -> None:
        branch = self.app.session.branches[message.key]
        self.query_one(StatusBar).set_activity("")
        branch.state = CANCELLED
        self._refresh_branch(branch)
        self.notify(f"stopped {branch.label} after {len(branch.tokens)} tokens: the partial branch is kept")

    def on_engine_failed(self, message: EngineFailed) -> None:
        status = self.query_one(StatusBar)
        self.stage = ""
        if message.during in ("load", "problems"):
            what = "load the models" if message.during == "load" else "read the problems"
            status.set_activity(f"could not {what}", failed=True)
            self._set_notice(Content.assemble(
                (f"Could not {what}\n\n", "bold $error"), (message.error, ""),
                ("\n\nPress L to load other models. Everything else keeps working.", "$foreground-muted"),
            ), error=True)
            self.notify(message.error, title=f"could not {what}", severity="error", timeout=10)
            return
        branch = self.app.session.branches.get(message.key) if message.key else None
        if message.during in ("sample", "intervention"):
            self._end_blocking()
        elif branch is not None:
            branch.state = FAILED if message.during == "decode" or not branch.tokens else DONE
            branch.error = message.error
            self._refresh_branch(branch)
        status.set_activity(f"{message.during} failed", failed=True)
        self.notify(message.error, title=f"{message.during} failed", severity="error", timeout=10)

    def on_outcomes_sampled(self, message: OutcomesSampled) -> None:
        branch = self.app.session.branches[message.key]
        self.app.session.record_outcome(branch, message.outcome)
        self._end_blocking()
        self._inspect(self.current_view())
        if self.has_class("-narrow"):
            self.query_one(OutcomeBars).scroll_visible(animate=False)

    def on_intervention_ran(self, message: InterventionRan) -> None:
        self._end_blocking()
        root = self.app.session.branches[message.key]
        child = self.app.session.new_intervention(root, message.result)
        self.query_one(ProblemList).add_branch(child)
        touched = message.result.touched
        # A run that matches the rollout to the end leaves it past its last token: land on the last one.
        self.activate(child, cursor=touched[0] if touched else min(child.fork_pos, max(len(child.tokens) - 1, 0)))
        self.query_one(StatusBar).set_activity(f"scoring {child.label}")
        self._run_score(child.key, child.prompt_ids, tuple(child.ids))

    # --- view events ----------------------------------------------------------------------

    def on_token_view_cursor_moved(self, message: TokenView.CursorMoved) -> None:
        if message.view is self.current_view():
            self._inspect(message.view)

    def on_descendant_focus(self, event) -> None:
        if isinstance(event.widget, TokenView):
            self._inspect(event.widget)

    @on(Tree.NodeSelected, "#problems")
    def _node_selected(self, event: Tree.NodeSelected) -> None:
        item = event.node.data
        if self.has_class("-narrow"):
            # The drawer closes once a problem or branch is chosen: the heatmap gets the width back.
            self.query_one(ProblemList).display = False
        if isinstance(item, Branch):
            self.activate(item)
        elif isinstance(item, Entry):
            if item.roots:
                self.activate(item.roots[-1])
            else:
                self.generate(item)

    # --- actions: rollouts ----------------------------------------------------------------

    def generate(self, entry: Entry, sample: int = 0) -> None:
        """Decode a new root rollout of a problem: greedy (as configured) or the `sample`-th seeded sample."""
        if not self.loaded:
            self.notify("no model is loaded yet: wait for loading, or press L", severity="warning")
            return
        if self._engine_busy():
            self.notify("the engine is busy with another job: wait, or press esc to cancel it", severity="warning")
            return
        self.generate_now(entry, sample)

    def generate_now(self, entry: Entry, sample: int) -> None:
        settings = self.app.settings
        sampling = settings.sampling
        if sample:
            sampling = replace(sampling, greedy=False, seed=settings.seed + sample)
        label = f"sample {sample}" if sample else ("greedy" if sampling.greedy else f"sample seed {sampling.seed}")
        self._decode_prompt(entry, label, sampling)

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine")
    def _decode_prompt(self, entry: Entry, label: str, sampling: SamplingSpec) -> None:
        """Build the prompt (an engine call, so on this thread) and decode; the branch is made on the UI thread."""
        try:
            choice = self.app.client.template_choice(self.app.settings.template)
            prompt = tuple(self.app.client.prompt_ids(entry.problem.problem, choice.template))
        except Exception as error:
            self.post_message(EngineFailed("prompt", workers.describe(error)))
            return
        self.app.call_from_thread(self.query_one(StatusBar).set_template, choice.template, choice.reason)
        key = self.app.call_from_thread(self._new_root, entry, prompt, label)
        worker = get_current_worker()
        workers.decode(self.app.client, workers.DecodeJob(key, prompt, entry.problem.answer, sampling), self.post_message,
                    lambda: worker.is_cancelled)

    def _new_root(self, entry: Entry, prompt: tuple[int, ...], label: str) -> str:
        branch = self.app.session.new_root(entry.problem, prompt, label)
        self.query_one(ProblemList).add_branch(branch)
        self.activate(branch)
        return branch.key

    def action_new_rollout(self) -> None:
        branch = self.current_view().branch
        entry = self._entry_for(branch)
        if entry is not None:
            self.generate(entry, sample=sum(root.label.startswith("sample") for root in entry.roots) + 1)

    def _entry_for(self, branch: Branch | None) -> Entry | None:
        if branch is not None:
            return self.app.session.entries[branch.problem.id]
        node = self.query_one(ProblemList).cursor_node
        item = node.data if node is not None else None
        if isinstance(item, Entry):
            return item
        self.notify("pick a problem first", severity="warning")
        return None

    # --- actions: forks -------------------------------------------------------------------

    def _fork(self, branch: Branch, pos: int, label: str, force: tuple[tuple[int, int], ...] = (),
              typed: str | None = None) -> None:
        if pos >= len(branch.tokens) - 1:
            self.notify("this is the last token: there is no continuation after it to change. "
                        "Fork at an earlier token.", severity="warning")
            return
        child = self.app.session.new_fork(branch, pos, label)
        self.query_one(ProblemList).add_branch(child)
        self.activate(child)
        job = workers.DecodeJob(child.key, branch.prompt_ids, branch.problem.answer, self.app.settings.sampling,
                             rollout=tuple(branch.ids), force=force, typed=typed, at=pos)
        self._run_decode(job)

    def action_force_top(self, k: int) -> None:
        target = self._target()
        if target is None:
            return
        branch, pos = target
        token = branch.tokens[pos]
        if k > len(token.top):
            self.notify(f"only {len(token.top)} alternatives are known here", severity="warning")
            return
        alt = token.top[k - 1]
        if alt.id == token.id:
            self.notify(f"top-{k} {quoted(alt.text)} is already the token here: pick another alternative",
                        severity="warning")
            return
        self._fork(branch, pos, f"@{pos} {quoted(token.text)}→{quoted(alt.text)}", ((pos, alt.id),))

    def action_force_teacher(self) -> None:
        target = self._target()
        if target is None:
            return
        branch, pos = target
        token = branch.tokens[pos]
        if token.teacher is None:
            reason = ("no teacher is loaded: start rmx with --teacher or --teacher-adapter"
                      if branch.scored else "the teacher's pick comes with scoring: wait for it")
            self.notify(reason, severity="warning")
            return
        if token.teacher.id == token.id:
            self.notify("the teacher agrees with the token here: nothing to force", severity="warning")
            return
        text = branch.text_of(pos, token.teacher.id)
        shown = quoted(text) if text is not None else f"#{token.teacher.id}"
        self._fork(branch, pos, f"@{pos} {quoted(token.text)}→{shown} teacher", ((pos, token.teacher.id),))

    def action_force_random(self) -> None:
        target = self._target()
        if target is None:
            return
        branch, pos = target
        token = branch.tokens[pos]
        pool = [alt for alt in token.top[:ALTERNATIVES] if alt.id not in (token.top[0].id, token.id)]
        if not pool:
            self.notify("no other top-20 alternative here", severity="warning")
            return
        # Seeded per branch and position: the same key press gives the same control draw.
        alt = random.Random(f"{self.app.settings.seed}:{branch.key}:{pos}").choice(pool)
        self._fork(branch, pos, f"@{pos} {quoted(token.text)}→{quoted(alt.text)} random", ((pos, alt.id),))

    def action_force_typed(self) -> None:
        target = self._target()
        if target is None:
            return
        branch, pos = target

        def forced(value: str | None) -> None:
            if value is None:
                return
            vocab = self.app.info.base.vocab_size if self.app.info and self.app.info.base else None
            match = TYPED_ID.match(value.strip())
            if match:
                token = int(match.group(1))
                if vocab is not None and token >= vocab:
                    self.notify(f"token id {token} is outside the vocabulary (0..{vocab - 1})", severity="error")
                    return
                self._fork(branch, pos, f"@{pos} {quoted(branch.tokens[pos].text)}→#{token}", ((pos, token),))
            else:
                self._fork(branch, pos, f"@{pos} {quoted(branch.tokens[pos].text)}→{quoted(value)} typed",
                           typed=value)

        self.app.push_screen(TokenPrompt(pos, quoted(branch.tokens[pos].text)), forced)

    def action_sample_outcomes(self) -> None:
        target = self._target()
        if target is None:
            return
        branch, pos = target
        settings = self.app.settings
        token = branch.tokens[pos]
        stage = f"sampling {settings.samples} continuations after {quoted(token.text)}"
        self._begin_blocking(stage, "outcome sampling")
        self.query_one(OutcomeBars).set_progress(f"{stage} · esc cancels")
        self._run_sample(workers.SampleJob(
            key=branch.key, prompt_ids=branch.prompt_ids, rollout=tuple(branch.ids), pos=pos, token=token.id,
            text=token.text, gold=branch.problem.answer,
            sampling=replace(settings.outcome_sampling, seed=settings.seed + pos), n=settings.samples))

    def action_up(self) -> None:
        branch = self.active
        if branch is None or branch.parent is None:
            self.notify("this is a root rollout: there is no parent branch", timeout=3)
            return
        self.activate(branch.parent, cursor=branch.fork_pos)

    def action_interventions(self) -> None:
        branch = self.current_view().branch
        if branch is None:
            self.notify("no rollout is open: pick a problem first, then press i to run an intervention on it",
                        severity="warning")
            return
        if not self.loaded:
            self.notify("no model is loaded: press L to load one", severity="warning")
            return
        if self._engine_busy():
            self.notify("the engine is busy with another job: wait, or press esc to cancel it", severity="warning")
            return
        root = branch
        while root.parent is not None:
            root = root.parent
        gate = self.app.gate
        nats = gate.nats(self._ordered_entropies())
        teacher = self.app.info is not None and self.app.info.teacher is not None

        def chosen(mode: str | None) -> None:
            if mode is not None:
                # τ as the heatmap shows it; a quantile with nothing to resolve it over goes to the engine as is.
                self._intervene(root, mode, nats if nats is not None else str(gate.tau))

        self.app.push_screen(InterventionMenu(root.problem.id, gate.describe(nats), teacher), chosen)

    def _intervene(self, root: Branch, mode: str, tau: float | str) -> None:
        stage = f"running {mode} on {root.problem.id}"
        self._begin_blocking(stage, f"the {mode} run")
        self.notify(f"{stage}: it opens as a branch beside the rollout when done · esc cancels", timeout=4)
        self._run_intervention(workers.InterventionJob(root.key, root.prompt_ids, mode, root.problem.answer,
                                                    self.app.settings.sampling, tau))

    def action_cancel(self) -> None:
        if not self._engine_busy():
            return
        self.app.workers.cancel_group(self, "engine")
        if self._blocking is not None:
            self.notify(f"{self._blocking} cancelled: the engine stops at its next token")
            self._end_blocking()

    # --- actions: navigation and gate -------------------------------------------------------

    def action_decision(self, direction: int) -> None:
        self.current_view().action_decision(direction)

    def action_disagreement(self, direction: int) -> None:
        self.current_view().action_disagreement(direction)

    def action_touched(self, direction: int) -> None:
        self.current_view().action_touched(direction)

    def action_tau(self, steps: int) -> None:
        self.app.gate = self.app.gate.moved(steps)

    def action_tau_mode(self) -> None:
        self.app.gate = self.app.gate.toggled(self._ordered_entropies())

    def action_search(self) -> None:
        problems = self.query_one(ProblemList)
        self.query_one(SearchBar).open(problems=problems.display and (problems.has_focus or self.active is None))

    def _problems_matching(self, query: str) -> list[Entry]:
        needle = query.lower().strip()
        return [entry for entry in self.app.session.entries.values()
                if needle in entry.problem.problem.lower() or needle in entry.problem.id.lower()]

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        if self.query_one(SearchBar).problems:
            self.query_one(ProblemList).set_entries(self._problems_matching(event.value))
            return
        view = self.current_view()
        view.set_matches(_matches(view.branch, event.value))
        if view.matches and not view.jump_to_match(1):
            view.move_to(view.matches[0])

    @on(Input.Submitted, "#search")
    def _search_next(self, event: Input.Submitted) -> None:
        search = self.query_one(SearchBar)
        if search.problems:
            found = self._problems_matching(event.value)
            if not found:
                self.notify(f"no problem mentions '{event.value}'", timeout=3)
                return
            search.action_close()
            entry = found[0]
            self.activate(entry.roots[-1]) if entry.roots else self.generate(entry)
            return
        view = self.current_view()
        if not view.matches:
            self.notify(f"'{event.value}' is not in this completion", timeout=3)
        elif not view.jump_to_match(1):
            view.move_to(view.matches[0])

    def on_search_bar_closed(self) -> None:
        if self.query_one(SearchBar).problems:
            problems = self.query_one(ProblemList)
            problems.set_entries(list(self.app.session.entries.values()))
            if self.active is not None:
                problems.select_branch(self.active)
        for column in self._columns():
            column.view.set_matches([])
        self.main_view.focus()

    def action_compare(self) -> None:
        from rmx_tui.screens.compare import CompareScreen

        branch = self.current_view().branch
        while branch is not None and branch.parent is not None:
            branch = branch.parent
        self.app.push_screen(CompareScreen(branch))

    def action_toggle_problems(self) -> None:
        problems = self.query_one(ProblemList)
        problems.display = not problems.display

    def action_toggle_problem(self) -> None:
        self.query_one(ProblemPane).toggle()

    # --- actions: export and models -----------------------------------------------------------

    def action_export_svg(self) -> None:
        path = self.app.save_screenshot(path=str(self.app.settings.export_dir))
        self.notify(f"saved {path}")

    def action_export_rollout(self) -> None:
        from rmx_tui.figures.comparison import comparison_data, comparison_from_data
        from rmx_tui.figures.rollout_file import free_path, rollout_from_data
        from rmx_tui.figures.write import export_rollout
        from rmx_tui.screens.modals import ExportFormat

        branch = self.current_view().branch
        if branch is None or not branch.tokens:
            self.notify("no branch to export", severity="warning")
            return
        data = branch.to_json()
        # A fork is exported beside its parent (what the branch view shows); a root rollout alone.
        compared = branch.parent is not None and branch.fork_pos is not None and branch.parent.tokens
        if compared:
            data = comparison_data(branch.parent.to_json(), data, branch.fork_pos)

        def write(fmt: str | None) -> None:
            if fmt is None:
                return
            name = "rmx-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", branch.key) + ("-vs-parent" if compared else "") + "." + fmt
            try:
                if fmt == "json":  # the full branch (and parent): everything `rmx export` and a reload need
                    path = free_path(self.app.settings.export_dir / name)
                    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
                else:
                    figure = (comparison_from_data(data, branch.key) if compared
                              else rollout_from_data(data, branch.key, f"{branch.problem.id} · {branch.label}"))
                    path = export_rollout(figure, fmt, free_path(self.app.settings.export_dir / name))
            except (OSError, RmxError) as error:
                self.notify(f"export failed: {error}", severity="error")
                return
            self.notify(f"saved {path}")

        self.app.push_screen(ExportFormat(), write)

    def action_load_models(self) -> None:
        settings = self.app.settings
        info = self.app.info
        current = settings.base.source if settings.base else (info.base.source if info and info.base else "demo")
        teacher = settings.teacher.source if settings.teacher else None

        def load(choice: tuple[str, str | None] | None) -> None:
            if choice is None:
                return
            if self._engine_busy():
                self.notify("the engine is busy: press esc first", severity="warning")
                return
            template = settings.base or ModelSpec(choice[0])
            base = replace(template, source=choice[0], adapter=None)
            teacher_spec = replace(template, source=choice[1], adapter=None) if choice[1] else None
            self.loaded = False
            self._start_load(workers.LoadJob(None, None, None, base, teacher_spec))

        self.app.push_screen(LoadModel(current, teacher), load)


def _matches(branch: Branch | None, query: str) -> list[int]:
    """Token positions covered by a case-insensitive occurrence of `query` in the completion text."""
    if branch is None or not query:
        return []
    starts: list[int] = []
    parts: list[str] = []
    offset = 0
    for token in branch.tokens:
        starts.append(offset)
        parts.append(token.text)
        offset += len(token.text)
    text = "".join(parts).lower()
    needle = query.lower()
    found: set[int] = set()
    at = text.find(needle)
    while at >= 0:
        first = bisect_right(starts, at) - 1
        last = bisect_right(starts, at + len(needle) - 1) - 1
        found.update(range(first, last + 1))
        at = text.find(needle, at + 1)
    return sorted(found)

