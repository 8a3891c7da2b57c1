"""ctrl+q quits promptly even while the engine scores a rollout: the cancel reaches the scorer."""

from __future__ import annotations

import time

import pytest

from tests.tui.harness import SIZE, SlowScoringClient, until


@pytest.mark.anyio
async def test_ctrl_q_mid_scoring_stops_the_scorer_within_a_second(make_app, client):
    slow = SlowScoringClient(client)
    app = make_app(engine=slow)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: slow.scoring)
        pressed = time.monotonic()
        await pilot.press("ctrl+q")
    deadline = time.monotonic() + 5
    while slow.returned_at is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slow.returned_at is not None and slow.returned_at - pressed < 1.0
