"""Forks on the real engine: force an alternative, continue, walk the tree, cancel, survive faults, sample outcomes."""

from __future__ import annotations

import json
import time

import pytest

from engine.core.decode import SamplingSpec
from engine.core.interventions import Interrupted

from rmx_tui.ui_state import CANCELLED, DONE, FAILED
from rmx_tui.screens.browser import BrowserScreen
from rmx_tui.screens.modals import TokenPrompt
from rmx_tui.widgets.problem_list import ProblemList
from tests.tui.harness import SIZE, FailingClient, SlowClient, rollout_ready, until

pytestmark = pytest.mark.anyio


def _messages(app) -> str:
    return " | ".join(notification.message for notification in app._notifications)


async def _fork_done(pilot) -> None:
    screen = pilot.app.screen
    await until(pilot, lambda: screen.active.parent is not None and screen.active.state in (DONE, FAILED, CANCELLED))


async def test_forcing_the_second_alternative_continues_into_a_new_branch_beside_the_original(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen: BrowserScreen = app.screen
        root = screen.active
        pos = 3
        await pilot.press("home", *["right"] * pos)
        alternative = root.tokens[pos].top[1]
        await pilot.press("2")
        await _fork_done(pilot)
        child = screen.active
        assert child.parent is root and child.fork_pos == pos and child.state == DONE
        assert child.ids[:pos] == root.ids[:pos]
        assert child.tokens[pos].id == alternative.id and child.sources[pos] == "forced"
        assert child.verdict is not None and child.scored
        assert screen.query_one("#parent-column").display
        assert screen.parent_view.branch is root and screen.parent_view.cursor == pos
        assert screen.main_view.branch is child and screen.main_view.cursor == pos
        assert screen.query_one(ProblemList).cursor_node.data is child
        assert child.label == f"@{pos} '{root.tokens[pos].text}'→'{alternative.text}'".replace("\n", "⏎")
        # Fork the fork, then walk back up the tree.
        await pilot.press("right", "right", "3")
        await _fork_done(pilot)
        grandchild = screen.active
        assert grandchild.parent is child and grandchild.fork_pos == pos + 2
        await pilot.press("u")
        assert screen.active is child and screen.main_view.cursor == pos + 2
        await pilot.press("u")
        assert screen.active is root and not screen.query_one("#parent-column").display
        await pilot.press("u")
        assert "root rollout" in _messages(app)


async def test_teacher_random_and_typed_forks(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen: BrowserScreen = app.screen
        root = screen.active
        disagreement = next(i for i, t in enumerate(root.tokens[:-1]) if t.cls in ("reranked", "shifted"))
        await pilot.press("home", *["right"] * disagreement, "o")
        await _fork_done(pilot)
        assert screen.active.tokens[disagreement].id == root.tokens[disagreement].teacher.id
        assert screen.active.label.endswith("teacher")
        await pilot.press("u", "r")
        await _fork_done(pilot)
        forced = screen.active.tokens[disagreement]
        top20 = [alt.id for alt in root.tokens[disagreement].top]
        assert forced.id in top20[1:] and forced.id != root.tokens[disagreement].id
        # The same key on the same token draws the same control token.
        await pilot.press("u", "r")
        await _fork_done(pilot)
        assert screen.active.tokens[disagreement].id == forced.id
        await pilot.press("u", "e")
        assert isinstance(app.screen, TokenPrompt)
        await pilot.press("#", "5", "enter")
        await _fork_done(pilot)
        assert screen.active.tokens[disagreement].id == 5
        await pilot.press("u", "e", "b", "o", "x", "e", "d", "enter")
        await _fork_done(pilot)
        typed = app.client.tokenize("boxed")
        assert screen.active.ids[disagreement:disagreement + len(typed)] == typed
        assert all(source == "forced" for source in screen.active.sources[disagreement:disagreement + len(typed)])


async def test_refusals_come_as_notifications(make_app, client):
    app = make_app(engine=SlowClient(client), sampling=SamplingSpec(max_new_tokens=60))
    async with app.run_test(size=SIZE) as pilot:
        screen: BrowserScreen = app.screen
        await until(pilot, lambda: screen.active is not None and len(screen.active.tokens) >= 3)
        await pilot.press("home", "2")
        assert "still streaming" in _messages(app)
        await rollout_ready(pilot)
        await pilot.press("end", "2")
        assert "last token" in _messages(app)
        assert screen.active.parent is None and not screen.active.children
        await pilot.press("home", "1")
        assert "already the token here" in _messages(app)


async def test_escape_cancels_a_continuation_and_keeps_the_partial_branch(make_app, client):
    app = make_app(engine=SlowClient(client, delay=0.05),
                   sampling=SamplingSpec(max_new_tokens=200))
    async with app.run_test(size=SIZE) as pilot:
        screen: BrowserScreen = app.screen
        await until(pilot, lambda: screen.active is not None and len(screen.active.tokens) >= 4)
        await pilot.press("escape")
        await until(pilot, lambda: screen.active.state == CANCELLED)
        root = screen.active
        assert 4 <= len(root.tokens) < 200 and root.verdict is None
        assert "partial branch is kept" in _messages(app)
        await pilot.press("home", "right", "2")
        await until(pilot, lambda: screen.active.parent is root and len(screen.active.tokens) >= 4)
        await pilot.press("escape")
        await _fork_done(pilot)
        assert screen.active.state == CANCELLED
        assert "cancelled" in str(screen.query_one("#branch-column .branch-title").render())
        # The engine lock was released: a new fork runs to the end.
        app.client.delay = 0.0
        await pilot.press("u", "home", "right", "3")
        await _fork_done(pilot)
        assert screen.active.state == DONE


async def test_an_engine_error_mid_continuation_keeps_the_branch_partial_and_marked(make_app, client):
    app = make_app(engine=FailingClient(client, after=3))
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen: BrowserScreen = app.screen
        await pilot.press("home", "right", "right", "2")
        await _fork_done(pilot)
        child = screen.active
        assert child.state == FAILED and "out of memory" in child.error
        assert len(child.tokens) == 2 + 3
        assert "out of memory" in _messages(app)
        assert "failed: partial" in str(screen.query_one("#branch-column .branch-title").render())
        assert child.mark == "⚠"


async def test_sampling_continuations_gives_outcome_bars(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen: BrowserScreen = app.screen
        await pilot.press("home", "right", "c")
        await until(pilot, lambda: bool(app.session.outcomes))
        root = screen.active
        [outcome] = app.session.outcomes_at(root, 1)
        assert outcome.n == 3 and outcome.token == root.tokens[1].id
        assert 0.0 <= outcome.low <= outcome.p <= outcome.high <= 1.0
        bars = str(screen.query_one("#outcomes").render())
        assert "P(" not in bars and f"P {outcome.p:.2f}" in bars
        # A fork at the same position shares the estimates there: P(correct | each choice) side by side.
        await pilot.press("2")
        await _fork_done(pilot)
        await pilot.press("c")
        await until(pilot, lambda: len(app.session.outcomes_at(screen.active, 1)) == 2)
        tokens = {o.token for o in app.session.outcomes_at(screen.active, 1)}
        assert tokens == {root.tokens[1].id, screen.active.tokens[1].id}


class StalledEstimates:
    """The real client, its outcome estimates slowed (a pause at each question the engine asks between steps):
    time to press esc while the engine works on one. It counts the questions, the estimates returned and those
    stopped midway."""

    def __init__(self, inner, delay: float = 0.1) -> None:
        self.inner = inner
        self.delay = delay
        self.returned = 0
        self.stopped = 0
        self.asked = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def fork_outcomes(self, *args, should_stop, **kwargs):
        def slowed() -> bool:
            self.asked += 1
            time.sleep(self.delay)
            return should_stop()

        try:
            estimate = self.inner.fork_outcomes(*args, should_stop=slowed, **kwargs)
        except Interrupted:
            self.stopped += 1
            raise
        self.returned += 1
        return estimate


async def test_escape_drops_a_running_outcome_estimate(make_app, client):
    engine = StalledEstimates(client)
    app = make_app(engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen: BrowserScreen = app.screen
        await pilot.press("home", "right", "c")
        assert "sampling 3 continuations" in str(screen.query_one("#outcomes").render())
        assert "sampling 3 continuations" in str(screen.query_one("#status").render())
        await pilot.press("escape")
        assert "outcome sampling cancelled" in _messages(app)
        assert "sampling" not in str(screen.query_one("#outcomes").render())
        await until(pilot, lambda: engine.stopped == 1)
        await pilot.pause(0.2)
        assert not app.session.outcomes and engine.returned == 0
        engine.delay = 0.0
        await pilot.press("c")
        await until(pilot, lambda: bool(app.session.outcomes))


async def test_escape_during_an_estimate_lets_a_fork_run_at_once(make_app, client):
    engine = StalledEstimates(client, delay=0.2)
    app = make_app(engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen: BrowserScreen = app.screen
        root = screen.active
        await pilot.press("home", "right", "c")
        await until(pilot, lambda: engine.asked >= 2)
        await pilot.press("escape")
        # The fork's decode waits for the engine lock: for the abandoned estimate's current step, not its end.
        engine.delay = 0.0
        await pilot.press("2")
        await _fork_done(pilot)
        assert screen.active.parent is root and screen.active.state == DONE
        assert engine.stopped == 1 and engine.returned == 0 and not app.session.outcomes


async def test_exports_write_json_html_and_svg_and_never_replace_a_file(make_app, tmp_path):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        await pilot.press("X", "j")
        await pilot.pause()
        [exported] = tmp_path.glob("rmx-*.json")
        data = json.loads(exported.read_text())
        assert data["completion_ids"] == app.screen.active.ids and data["tokens"][0]["entropy"] >= 0
        await pilot.press("X", "h")
        await pilot.pause()
        [page] = tmp_path.glob("rmx-*.html")
        html = page.read_text()
        assert html.startswith("<!doctype html>") and html.count('class="tok') == len(app.screen.active.tokens)
        await pilot.press("X", "h")  # a second export of the same branch goes next to the first
        await pilot.pause()
        assert {p.name for p in tmp_path.glob("rmx-*.html")} == {page.name, page.stem + "-1.html"}
        assert page.read_text() == html
        await pilot.press("X", "escape")
        await pilot.pause()
        assert len(list(tmp_path.glob("rmx-*"))) == 3
        await pilot.press("S")
        await pilot.pause()
        assert list(tmp_path.glob("*.svg"))


async def test_export_on_a_fork_writes_the_branch_beside_its_parent(make_app, tmp_path):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen = app.screen
        root = screen.active
        await pilot.press("home", "right", "right", "2")
        await until(pilot, lambda: screen.active.parent is root and screen.active.state == "done")
        fork = screen.active
        await pilot.press("X", "j")
        await pilot.pause()
        [exported] = tmp_path.glob("rmx-*-vs-parent.json")
        data = json.loads(exported.read_text())
        assert data["kind"] == "comparison" and data["fork_pos"] == fork.fork_pos == 2
        assert data["parent"]["completion_ids"] == root.ids and data["branch"]["completion_ids"] == fork.ids
        assert data["branch"]["sources"][2] == "forced"
        await pilot.press("X", "h")
        await pilot.pause()
        [page] = tmp_path.glob("rmx-*-vs-parent.html")
        html = page.read_text()
        assert html.count('class="side"') == 2 and "src-forced" in html
        assert html.count('class="tok') == 2 + (len(root.tokens) - 2) + (len(fork.tokens) - 2)


async def test_stored_rollouts_are_listed_with_marks_and_scored_when_opened(make_app, client, tmp_path):
    from engine.core.data import load_problems
    from engine.core.records import Rollout

    problem = load_problems("smoke")[1]
    prompt = client.prompt_ids(problem.problem, "chat")
    ids = [step.id for step in client.decode(prompt, SamplingSpec(max_new_tokens=12))]
    file = tmp_path / "rollouts.jsonl"
    rows = [Rollout(problem_id=problem.id, sample=k, prompt_ids=tuple(prompt), completion_ids=tuple(ids),
                    text="", gold=problem.answer, answer=problem.answer if k else "0", correct=bool(k),
                    finish="length") for k in range(2)]
    file.write_text("".join(json.dumps(row.to_json()) + "\n" for row in rows))
    app = make_app(rollouts=str(file), autostart=False)
    async with app.run_test(size=SIZE) as pilot:
        screen: BrowserScreen = app.screen
        await until(pilot, lambda: screen.loaded)
        entry = app.session.entries[problem.id]
        assert entry.pass_rate == "1/2" and [r.state for r in entry.roots] == ["unscored", "unscored"]
        screen.activate(entry.roots[1])
        await until(pilot, lambda: entry.roots[1].state == DONE)
        assert entry.roots[1].ids == ids and entry.roots[1].verdict.correct
