"""rmx's help: F1 and ? open it with every key grouped, and docs/keys.md is generated from the same bindings."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Markdown

from rmx_tui import keymap
from rmx_tui.screens.help import HelpScreen
from rmx_tui.screens.tour import TourScreen
from tests.tui.harness import SIZE, rollout_ready

DOC = Path(__file__).resolve().parents[2] / "docs" / "keys.md"


def test_docs_keys_is_generated_from_the_bindings():
    assert DOC.read_text(encoding="utf-8") == keymap.markdown(), (
        "docs/keys.md drifted from the bindings: run `python -m rmx_tui.keymap > docs/keys.md`")


def test_every_binding_has_a_line_and_every_line_a_binding():
    assert keymap.bound_actions() == set(keymap.WHAT)
    groups = {group.title: group for group in keymap.key_groups()}
    assert {"navigate", "fork", "compare", "jobs"} <= set(groups)
    keys = {line.keys for group in groups.values() for line in group.lines}
    assert {"n / N", "1-5", "t", "J", "? / F1", "ctrl+q"} <= keys


@pytest.mark.anyio
async def test_f1_and_question_mark_open_rmx_help(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.query_one(Markdown).source
        assert "decision point" in text and "## fork" in text and "reranked" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("question_mark")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        await pilot.pause()
        assert "T the first-run tour" in str(app.screen.query_one("#help-hint").render())
        await pilot.press("T")
        await pilot.pause()
        assert isinstance(app.screen, TourScreen)
