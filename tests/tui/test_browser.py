"""The rollout browser on the real engine: open, land on a decision point, navigate, move τ, search, themes, layout."""

from __future__ import annotations

import pytest

from engine.core.config import ModelSpec
from engine.service.workbench import Workbench

from rmx_tui.app import RmxApp
from rmx_tui.screens.browser import BrowserScreen
from rmx_tui.widgets.inspector import Inspector
from rmx_tui.widgets.legend import Legend
from rmx_tui.widgets.problem_list import ProblemList
from rmx_tui.widgets.status_bar import StatusBar
from tests.tui.harness import SIZE, rollout_ready, settings, until

pytestmark = pytest.mark.anyio


async def test_opens_on_a_scored_rollout_at_the_first_decision_point(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen: BrowserScreen = app.screen
        branch = screen.active
        view = screen.main_view
        assert branch.verdict is not None and branch.scored and len(branch.tokens) > 5
        assert all(token.teacher is not None for token in branch.tokens)
        tau = view.tau
        assert tau is not None
        first = next(i for i, token in enumerate(branch.tokens) if token.entropy > tau)
        assert view.cursor == first
        assert view.has_focus
        status = screen.query_one(StatusBar)
        assert status.gate.startswith("τ q0.9 of the root rollout =") and "above" in status.share
        assert "base llama" in status.models and "teacher llama+" in status.models
        assert screen.query_one(Inspector).index == first
        tree = screen.query_one(ProblemList)
        assert tree.cursor_node.data is branch
        assert app.freezer.counted[branch] == id(branch.tokens)  # its scored records count toward a gc.freeze


async def test_keys_move_between_tokens_decisions_and_disagreements(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen: BrowserScreen = app.screen
        view = screen.main_view
        branch = screen.active
        await pilot.press("home")
        assert view.cursor == 0
        await pilot.press("right", "l")
        assert view.cursor == 2
        await pilot.press("left")
        assert view.cursor == 1
        await pilot.press("end")
        assert view.cursor == len(branch.tokens) - 1
        await pilot.press("home", "n")
        decisions = [i for i, t in enumerate(branch.tokens) if t.entropy > view.tau]
        assert len(decisions) >= 2
        assert view.cursor == next(i for i in decisions if i > 0)
        at = view.cursor
        await pilot.press("end", "N")
        assert view.cursor == max(i for i in decisions if i < len(branch.tokens) - 1)
        await pilot.press("home", "n")
        assert view.cursor == at
        disagreements = [i for i, t in enumerate(branch.tokens) if t.cls in ("reranked", "shifted")]
        assert disagreements  # base and base+adapter disagree often
        await pilot.press("end", "D")
        assert view.cursor == max(i for i in disagreements if i < len(branch.tokens) - 1)
        await pilot.press("down")
        assert screen.query_one(Inspector).index == view.cursor


async def test_tau_keys_update_the_heatmap_and_counts_live(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen: BrowserScreen = app.screen
        view = screen.main_view
        status = screen.query_one(StatusBar)
        before_tau, before_share = view.tau, status.share
        await pilot.press(*["minus"] * 10)
        assert str(app.gate.tau) == "q0.8"
        assert view.tau < before_tau and status.share != before_share
        await pilot.press("q")
        assert not app.gate.tau.quantile
        nats = app.gate.tau.value
        assert status.gate == f"τ {nats:.2f} nats"
        await pilot.press("plus")
        assert abs(app.gate.tau.value - (nats + 0.1)) < 1e-9
        assert view.tau == app.gate.tau.value
        above = sum(t.entropy > view.tau for t in screen.active.tokens)
        assert status.share.endswith(f"({above}/{len(screen.active.tokens)})")
        await pilot.press("q")
        assert app.gate.tau.quantile


async def test_search_highlights_and_jumps_to_matches(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen: BrowserScreen = app.screen
        view = screen.main_view
        word = next(t.text.strip() for t in screen.active.tokens[3:] if len(t.text.strip()) >= 2)
        await pilot.press("home", "slash")
        await pilot.press(*word)
        assert view.matches and view.cursor in view.matches
        assert word.lower() in "".join(t.text for t in screen.active.tokens).lower()
        await pilot.press("escape")
        assert view.matches == [] and view.has_focus


async def test_themes_switch_the_heatmap_colours(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        view = app.screen.main_view

        def first_token_background():
            return next(iter(view.render_line(0))).style.bgcolor

        dark = first_token_background()
        app.theme = "rmx-light"
        await pilot.pause()
        light = first_token_background()
        assert light != dark
        app.theme = "rmx-contrast"
        await pilot.pause()
        assert first_token_background() not in (dark, light)
        app.theme = "textual-dark"  # a theme without heat variables falls back to viridis
        await pilot.pause()
        assert first_token_background() is not None


async def test_the_cursor_dims_when_the_heatmap_loses_focus(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        view = app.screen.main_view
        await pilot.press("home")

        def cursor_background():
            return next(iter(view.render_line(0))).style.bgcolor

        focused = cursor_background()
        app.screen.query_one(ProblemList).focus()
        await pilot.pause()
        assert cursor_background() != focused
        view.focus()
        await pilot.pause()
        assert cursor_background() == focused


async def test_narrow_terminal_hides_the_list_and_moves_the_inspector_below(make_app):
    app = make_app()
    async with app.run_test(size=(70, 30)) as pilot:
        await rollout_ready(pilot)
        screen: BrowserScreen = app.screen
        assert screen.has_class("-narrow")
        assert screen.query_one(ProblemList).region.width == 0
        side = screen.query_one("#side").region
        centre = screen.query_one("#centre").region
        assert side.y >= centre.bottom and side.width >= 60


async def test_a_model_that_fails_to_load_shows_a_panel_and_the_app_stays_usable(specs, tmp_path):


    app = RmxApp(settings(base=ModelSpec(str(tmp_path / "missing-model")), export_dir=tmp_path), Workbench())
    async with app.run_test(size=SIZE) as pilot:
        screen: BrowserScreen = app.screen
        notice = screen.query_one("#notice")
        await until(pilot, lambda: notice.has_class("-error"))
        assert "Could not load the models" in str(notice.render())
        assert len(app.session.entries) == 20  # the problems were still read
        await pilot.press("2")
        assert any("no token" in n.message or "no model" in n.message for n in app._notifications)
        await pilot.press("t")
        assert app.screen.__class__.__name__ == "CompareScreen"
        await pilot.press("escape")
        assert app.screen is screen
        # Load a working model from the dialog, then decode the first problem.
        await pilot.press("L")
        dialog = app.screen
        dialog.query_one("#base").value = specs[0].source
        await pilot.press("enter")
        await until(pilot, lambda: screen.loaded)
        assert not notice.display or not notice.has_class("-error")
        await pilot.press("enter")  # the problem list has focus: decode a rollout of its first problem
        await rollout_ready(pilot)
        assert screen.active.problem.id == "smoke_0"


async def test_loading_through_settings_reports_progress_and_the_models(specs, tmp_path):


    app = RmxApp(settings(base=specs[0], teacher=specs[1], export_dir=tmp_path), Workbench())
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        assert app.info.base.label == "llama" and app.info.teacher is not None
        assert not app.screen.query_one("#notice").display


async def test_the_legend_names_every_mark_within_its_two_lines(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        legend = app.screen.query_one(Legend)
        lines = legend.render().wrap(legend.content_region.width)
        assert len(lines) == legend.content_region.height == 2
        assert all(mark in lines[-1].plain for mark in ("reranked", "shifted", "forced", "steered", "shared"))


async def test_palette_lists_every_screen_action(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        commands = {command.title: command.help for command in app.get_system_commands(app.screen)}
        for expected in ("Next decision point: base entropy above τ", "Fork here with the teacher's pick",
                         "Sample continuations from this token and grade them: P(correct | token)",
                         "Back up to the parent branch", "Export SVG", "Export", "Search", "Table 2",
                         "Fork with a seeded draw from the base top-20, argmax excluded", "Force a typed token",
                         "Cancel decoding"):
            assert expected in commands, expected
        # The interventions menu and the touched-token jumps are off the footer: the palette is where they show.
        for title, key in (("Run oracle, random or gated on this problem: a new branch, its touched tokens highlighted",
                            "key i"),
                           ("Next touched token: one forced by you, or substituted by an intervention", "key f"),
                           ("Previous touched token", "key F")):
            assert commands.get(title) == key, title


async def test_line_moves_step_over_tokens_that_span_lines(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        view = app.screen.main_view
        layout = view._layout
        await pilot.press("home")
        visited = [view.cursor]
        for _ in range(layout.line_count + 2):
            await pilot.press("down")
            visited.append(view.cursor)
        lines = [layout.token_line[token] for token in visited]
        assert lines == sorted(lines) and visited[-1] == len(app.screen.active.tokens) - 1
        assert all(a != b for a, b in zip(visited, visited[1:]) if b != visited[-1])
