"""The small dialogs: their long hints wrap inside the box instead of running past it."""

from __future__ import annotations

import pytest
from textual.containers import Vertical
from textual.widgets import Label

from engine.service.workbench import Workbench
from rmx_tui.app import RmxApp
from rmx_tui.screens.modals import LoadModel, TokenPrompt
from rmx_tui.settings import Settings
from tests.tui.harness import SIZE

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("make_dialog", [lambda: TokenPrompt(12, "' Wait'"), lambda: LoadModel("demo", None)],
                         ids=["token-prompt", "load-model"])
async def test_hints_wrap_inside_the_dialog(make_dialog):
    # No engine needed: the dialogs only lay out text, so an empty client and no autostart.
    app = RmxApp(Settings(autostart=False, dataset="smoke"), Workbench())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        dialog = make_dialog()
        app.push_screen(dialog)
        await pilot.pause()
        box = dialog.query_one(Vertical).content_region
        hint = dialog.query_one("Label.hint", Label)
        assert hint.region.height > 1, "the hint is longer than the box is wide: it must wrap"
        for label in dialog.query(Label):
            assert box.x <= label.region.x and label.region.right <= box.right, label.render()
