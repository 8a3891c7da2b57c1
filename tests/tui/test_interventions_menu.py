"""The interventions menu on the real engine: oracle, random, gated and the base alone as branches, touched tokens."""

from __future__ import annotations

import time

import pytest

from engine.core.errors import RmxError
from engine.service.workbench import Workbench
from engine.core.interventions import Interrupted
from textual.widgets import OptionList

from rmx_tui.ui_state import DONE
from rmx_tui.screens.browser import BrowserScreen
from rmx_tui.screens.intervene_menu import InterventionMenu
from rmx_tui.widgets.inspector import Inspector
from rmx_tui.widgets.token_view import STEERED, TOUCHED
from tests.tui.harness import SIZE, rollout_ready, until

pytestmark = pytest.mark.anyio


class RecordingClient:
    """The real client, keeping every intervention result it hands back; it counts the questions the engine asks
    between decoding steps and the runs stopped midway.

    `delay` slows the engine down: a pause at each question it asks between decoding steps.
    """

    def __init__(self, inner: Workbench, delay: float = 0.0) -> None:
        self.inner = inner
        self.delay = delay
        self.results = []
        self.stopped = 0
        self.asked = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def intervene(self, *args, should_stop, **kwargs):
        def slowed() -> bool:
            self.asked += 1
            time.sleep(self.delay)
            return should_stop()

        try:
            result = self.inner.intervene(*args, should_stop=slowed, **kwargs)
        except Interrupted:
            self.stopped += 1
            raise
        self.results.append(result)
        return result


class FailingClient(RecordingClient):
    """The real client whose interventions fail."""

    def intervene(self, *args, **kwargs):
        raise RmxError("the device ran out of memory (simulated)")


def _messages(app) -> str:
    return " | ".join(notification.message for notification in app._notifications)


async def _run(pilot, *keys: str):
    """Open the menu, pick a mode (its number, or arrows and enter), and wait for its branch to be scored."""
    screen: BrowserScreen = pilot.app.screen
    root = screen.active
    await pilot.press("i")
    assert isinstance(pilot.app.screen, InterventionMenu)
    await pilot.press(*keys)
    await until(pilot, lambda: screen.active is not root and screen.active.state == DONE)
    return root, screen.active


async def test_the_menu_lists_every_mode_with_tau_and_esc_closes_it(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen: BrowserScreen = app.screen
        await pilot.press("i")
        menu = app.screen
        assert isinstance(menu, InterventionMenu)
        options = menu.query_one(OptionList)
        assert [options.get_option_at_index(i).id for i in range(options.option_count)] == [
            "oracle", "random", "gated", "base"]
        assert not any(options.get_option_at_index(i).disabled for i in range(options.option_count))
        assert options.highlighted == 0
        nats = app.gate.nats(screen._ordered_entropies())
        assert app.gate.describe(nats) in str(options.get_option_at_index(2).prompt)
        await pilot.press("escape")
        assert app.screen is screen and not screen.active.children


async def test_oracle_opens_a_graded_branch_beside_the_rollout_with_its_touched_tokens(make_app, client):
    engine = RecordingClient(client)
    app = make_app(engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen: BrowserScreen = app.screen
        root, child = await _run(pilot, "1")
        [oracle] = engine.results
        assert oracle.mode == "oracle" and oracle.touched
        assert child.parent is root and root.children[-1] is child
        assert child.ids == list(oracle.completion_ids)
        assert child.label == f"oracle · {len(oracle.touched)} touched"
        assert child.verdict is not None and child.verdict.correct == oracle.correct
        assert child.verdict.answer == oracle.answer and child.scored
        # It leaves the rollout where their tokens first differ: the split view shows both, from there.
        assert child.ids[:child.fork_pos] == root.ids[:child.fork_pos]
        assert child.fork_pos == len(root.ids) or child.ids[child.fork_pos] != root.ids[child.fork_pos]
        assert screen.query_one("#parent-column").display
        assert screen.parent_view.branch is root and screen.main_view.branch is child
        view = screen.main_view
        assert view._touched == list(oracle.touched)
        assert [i for i, code in enumerate(view._codes) if code & STEERED] == list(oracle.touched)
        assert not any(code & TOUCHED for code in view._codes)
        assert all(child.sources[pos] == "teacher" for pos in oracle.touched)
        # The cursor lands on the first touched token; the inspector says what was put in place of what.
        first = oracle.touched[0]
        assert view.cursor == first
        argmax, token = child.tokens[first].top[0], child.tokens[first]
        assert token.id == token.teacher.id != argmax.id
        inspector = str(screen.query_one("#inspector").render())
        assert "chosen by the teacher" in inspector and f"substituted '{argmax.text}" in inspector
        if len(oracle.touched) > 1:
            await pilot.press("f")
            assert view.cursor == oracle.touched[1]
        await pilot.press("F", "F")
        assert view.cursor == first and "no touched token" in _messages(app)
        assert f"{child.verdict.mark} " in str(screen.query_one("#branch-column .branch-title").render())


async def test_random_and_gated_runs(make_app, client):
    engine = RecordingClient(client)
    app = make_app(engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen: BrowserScreen = app.screen
        nats = screen.main_view.tau
        root, control = await _run(pilot, "down", "enter")
        [random_run] = engine.results
        assert random_run.mode == "random"
        assert control.label == f"random · {len(random_run.touched)} touched"
        assert screen.main_view._touched == list(random_run.touched)
        for pos in random_run.touched:
            step = random_run.steps[pos]
            assert control.sources[pos] == "random" and step.id != step.top[0].id
        await pilot.press("u")
        assert screen.active is root
        _, gated = await _run(pilot, "3")
        gated_run = engine.results[-1]
        assert gated.parent is root and gated_run.tau == pytest.approx(nats)
        assert gated.label == f"gated τ={nats:.2f} · {len(gated_run.touched)} touched"
        assert list(gated_run.touched) == [step.pos for step in gated_run.steps if step.entropy > nats]
        assert screen.main_view._touched == list(gated_run.touched)


async def test_without_a_teacher_only_the_base_runs_and_the_others_say_why(make_app, specs):
    base_only = Workbench()
    base_only.load(specs[0])
    app = make_app(engine=base_only)
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        await pilot.press("i")
        options = app.screen.query_one(OptionList)
        disabled = [options.get_option_at_index(i).disabled for i in range(options.option_count)]
        assert disabled == [True, True, True, False] and options.highlighted == 3
        assert "needs a teacher" in str(options.get_option_at_index(0).prompt)
        await pilot.press("1")
        assert isinstance(app.screen, InterventionMenu) and "oracle needs a teacher" in _messages(app)
        screen: BrowserScreen = app.screen_stack[-2]
        root = screen.active
        await pilot.press("enter")
        await until(pilot, lambda: screen.active is not root and screen.active.state == DONE)
        assert screen.active.label == "base · 0 touched" and not screen.main_view._touched
        assert screen.active.verdict is not None
        assert screen.active.ids == root.ids  # the greedy base again: nothing differs, and the cursor is on a token
        assert screen.current_view().cursor == len(root.ids) - 1
        assert screen.query_one(Inspector).index == len(root.ids) - 1


async def test_with_no_rollout_open_i_says_so_in_one_line(make_app):
    app = make_app(autostart=False)
    async with app.run_test(size=SIZE) as pilot:
        screen: BrowserScreen = app.screen
        await until(pilot, lambda: screen.loaded)
        await pilot.press("i")
        assert app.screen is screen
        assert "no rollout is open" in _messages(app) and "\n" not in _messages(app)


async def test_an_engine_error_is_a_notification_and_the_app_stays_usable(make_app, client):
    app = make_app(engine=FailingClient(client))
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen: BrowserScreen = app.screen
        root = screen.active
        await pilot.press("i", "1")
        await until(pilot, lambda: "out of memory" in _messages(app))
        assert screen.active is root and not root.children and root.state == DONE
        assert "intervention failed" in str(screen.query_one("#status").render())
        await pilot.press("home", "right", "2")
        await until(pilot, lambda: screen.active.parent is root and screen.active.state == DONE)


async def test_escape_stops_a_running_intervention_and_the_next_one_runs(make_app, client):
    engine = RecordingClient(client, delay=0.2)
    app = make_app(engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen: BrowserScreen = app.screen
        root = screen.active
        await pilot.press("i", "1")
        assert "running oracle" in str(screen.query_one("#status").render())
        await until(pilot, lambda: engine.asked >= 2)  # decoding
        await pilot.press("escape")
        assert "the oracle run cancelled" in _messages(app)
        assert "running oracle" not in str(screen.query_one("#status").render())
        # At once, with the abandoned run perhaps still on its current step: it waits for that step only.
        engine.delay = 0.0
        await pilot.press("i", "2")
        await until(pilot, lambda: screen.active is not root and screen.active.state == DONE)
        assert engine.stopped == 1, "the engine stopped the oracle run midway"
        [random_run] = engine.results
        assert random_run.mode == "random" and [child.key for child in root.children] == [screen.active.key]


def test_snapshot_of_the_branch_view_after_a_gated_run(snap_compare, make_app):
    """Gated, not oracle: on the tiny random pair the teacher disagrees at every token, so the oracle touches all."""

    async def intervened(pilot):
        await rollout_ready(pilot)
        screen = pilot.app.screen
        root = screen.active
        await pilot.press("i", "3")
        await until(pilot, lambda: screen.active is not root and screen.active.state == DONE)
        # The "running gated" toast lasts 4 s: whether it is still up depends on the machine's speed.
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=intervened)
