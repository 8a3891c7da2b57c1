"""The workbench at any terminal size: the question on screen, a drawer below 120 columns, a line below 60×20."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from textual.widgets import Footer, Static

from rmx_tui.token_layout import quoted
from rmx_tui.widgets.inspector import Inspector
from rmx_tui.widgets.problem_list import ProblemList, short_id, title
from rmx_tui.widgets.problem_pane import ProblemPane
from tests.tui.harness import rollout_ready, until

EDGE_GLYPHS = set("▕▔▁▂▃▄▅▆▇")
"""Right-eighth borders and scrollbar thumbs: what reads as stray blocks at a pane's edge (bars use left eighths)."""


def screen_text(app) -> str:
    """The screen as plain text, as a screenshot would show it."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, color_system="truecolor",
                      force_terminal=True, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text(styles=False)


def test_titles_cut_at_a_word_and_ids_stay_whole():
    assert title("Sam has 4 pencils and gets 3 more.", 14) == "Sam has 4…"
    assert title("Sam has 4 pencils", 40) == "Sam has 4 pencils"
    assert short_id("test/precalculus/807.json") == "precalculus/807"
    assert short_id("smoke_0") == "smoke_0"


@pytest.mark.anyio
async def test_at_80x24_the_question_a_wide_heatmap_and_a_whole_top_5(make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await rollout_ready(pilot)
        screen = app.screen
        assert screen.main_view.size.width >= 60
        text = screen_text(app)
        assert "Sam has 4 pencils" in text and "gold 7" in text and "template chat" in text
        inspector = screen.query_one(Inspector)
        branch, cursor = screen.active, screen.main_view.cursor
        shown = inspector.render().plain
        assert all(quoted(alt.text) in shown for alt in branch.tokens[cursor].top[:5])
        assert "…" not in shown
        footer_keys = {key.key_display for key in app.screen.query_one(Footer).query("FooterKey")}
        assert {"?", "J"} <= footer_keys
        assert not EDGE_GLYPHS & set(text)
        # The problem list is a drawer: ctrl+b opens it, choosing a problem closes it.
        problems = screen.query_one(ProblemList)
        assert not problems.display
        await pilot.press("ctrl+b")
        assert problems.display
        problems.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert not problems.display


@pytest.mark.anyio
async def test_a_wide_terminal_keeps_the_list_and_the_side_inspector(make_app):
    app = make_app()
    async with app.run_test(size=(200, 60)) as pilot:
        await rollout_ready(pilot)
        assert app.screen.query_one(ProblemList).display
        text = screen_text(app)
        assert "Sam has 4 pencils and gets 3 more. How many pencils does Sam have now?" in text
        assert not EDGE_GLYPHS & set(text)
        pane = app.screen.query_one(ProblemPane)
        await pilot.press("p")
        await pilot.pause()
        assert pane.size.height == 1 and "How many pencils" not in screen_text(app)


@pytest.mark.anyio
async def test_too_small_says_so(make_app):
    app = make_app()
    async with app.run_test(size=(50, 15)) as pilot:
        await rollout_ready(pilot)
        line = app.screen.query_one("#too-small", Static)
        assert line.display and "terminal too small (50×15); need 60×20" in screen_text(app)
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert not line.display and app.screen.main_view.size.width >= 60


@pytest.mark.anyio
async def test_slash_on_the_problem_list_searches_the_problems(make_app):
    app = make_app(autostart=False)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.loaded and bool(app.session.entries))
        problems = screen.query_one(ProblemList)
        problems.focus()
        await pilot.press("slash", *"boxes")
        await pilot.pause()
        shown = [node.data.problem.id for node in problems.root.children]
        assert shown and all("box" in app.session.entries[pid].problem.problem.lower() for pid in shown)
        assert len(shown) < len(app.session.entries)
        await pilot.press("enter")
        await until(pilot, lambda: screen.active is not None and screen.active.state == "done")
        assert screen.active.problem.id == shown[0]
        assert len(problems.root.children) == len(app.session.entries)


@pytest.mark.anyio
async def test_with_jobs_running_rmx_waits_for_a_choice_and_says_so(make_app):
    import engine.jobs.selftest  # noqa: F401  (registers the selftest kind in this process)
    from engine.jobs.store import cancel_job, submit_job

    job = submit_job("selftest", {"count": 600, "sleep": 0.1})
    try:
        app = make_app()
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            await until(pilot, lambda: screen.loaded)
            await pilot.pause(0.3)
            assert screen.active is None and not app.session.branches  # nothing decoded
            assert "1 job is running" in screen_text(app)
            await pilot.press("enter")
            await until(pilot, lambda: screen.active is not None and screen.active.state == "done")
    finally:
        cancel_job(job.id)
