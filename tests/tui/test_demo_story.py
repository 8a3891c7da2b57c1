"""The README's first-run walkthrough, key by key, in the app `rmx demo` opens on the real demo model and teacher."""

from __future__ import annotations

import pytest

from rmx_tui.ui_state import CANCELLED, DONE, FAILED
from tests.tui.harness import demo_app, past_the_tour, until

pytestmark = pytest.mark.anyio


def _text(branch) -> str:
    return "".join(token.text for token in branch.tokens)


async def test_the_readme_walkthrough_flips_smoke_0_in_rmx_demo():
    app = demo_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await past_the_tour(pilot)
        screen = app.screen
        root = screen.active
        # 1. The base's greedy answer is wrong.
        assert root.problem.id == "smoke_0" and "The answer is: 11" in _text(root)
        assert root.verdict.answer == "11" and not root.verdict.correct
        # 2. The teacher disagrees at the first token and at 8, 22, 27, 31; `d` walks them.
        disagreements = [i for i, t in enumerate(root.tokens) if t.teacher is not None and t.teacher.id != t.id]
        assert disagreements[:5] == [0, 8, 22, 27, 31]
        await pilot.press("home", "d")
        assert screen.main_view.cursor == 8
        await pilot.press("d")
        assert screen.main_view.cursor == 22
        # 3. Token 12 is " number"; `2` forks on the base's second choice " amount", and the answer flips.
        await pilot.press("home", *["right"] * 12)
        token = root.tokens[12]
        assert screen.main_view.cursor == 12 and token.text == " number" and token.top[1].text == " amount"
        assert token.entropy == pytest.approx(3.2, abs=0.05)
        await pilot.press("2")
        await until(pilot, lambda: screen.active is not root and screen.active.state in (DONE, FAILED, CANCELLED),
                    timeout=600)
        child = screen.active
        assert child.parent is root and child.fork_pos == 12 and child.state == DONE
        assert "current amount of pencils" in _text(child) and "The answer is: 7" in _text(child)
        assert child.verdict.answer == "7" and child.verdict.correct
