"""The first-run tour: `rmx demo` opens with it until it is dismissed once; T on the help screen brings it back."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Markdown

from rmx_tui.preferences import load_preferences, preferences_path
from rmx_tui.screens.help import HelpScreen
from rmx_tui.screens.tour import TourScreen
from tests.tui.harness import SIZE, rollout_ready


@pytest.mark.anyio
async def test_the_tour_shows_once_and_comes_back_from_the_help_screen(make_app):
    assert not load_preferences().tour_dismissed
    app = make_app(tour=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, TourScreen)
        text = app.screen.query_one(Markdown).source
        for what in ("colours", "teacher", "`d`", "Force a token", "`J`", "train"):
            assert what in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, TourScreen)
        await rollout_ready(pilot)
    assert json.loads(preferences_path().read_text())["tour_dismissed"] is True
    again = make_app(tour=True)
    async with again.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        assert not isinstance(again.screen, TourScreen)  # dismissed once: never shown again on its own
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(again.screen, HelpScreen)
        await pilot.press("T")
        await pilot.pause()
        assert isinstance(again.screen, TourScreen)
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(again.screen, (TourScreen, HelpScreen))


@pytest.mark.anyio
async def test_rmx_tui_does_not_open_with_the_tour(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        assert not isinstance(app.screen, TourScreen)


def test_an_unreadable_preferences_file_gives_the_defaults():
    preferences_path().parent.mkdir(parents=True, exist_ok=True)
    preferences_path().write_text("{broken")
    assert load_preferences().tour_dismissed is False
    preferences_path().write_text(json.dumps({"tour_dismissed": "yes"}))
    assert load_preferences().tour_dismissed is False
