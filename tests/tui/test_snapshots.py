"""Snapshots at 120x36 of the browser, the inspector, the branch view and the compare view (greedy, seeded, fp32)."""

from __future__ import annotations

from tests.tui.harness import SIZE, rollout_ready, until


def test_browser(snap_compare, make_app):
    async def opened(pilot):
        await rollout_ready(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=opened)


def test_inspector_at_a_teacher_disagreement_with_outcomes(snap_compare, make_app):
    async def inspected(pilot):
        await rollout_ready(pilot)
        await pilot.press("home", "d", "c")
        await until(pilot, lambda: bool(pilot.app.session.outcomes))

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=inspected)


def test_branch_view_after_forcing_an_alternative(snap_compare, make_app):
    async def forked(pilot):
        await rollout_ready(pilot)
        await pilot.press("home", "right", "right", "2")
        screen = pilot.app.screen
        await until(pilot, lambda: screen.active.parent is not None and screen.active.state == "done")

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=forked)


def test_compare_view(snap_compare, make_app):
    async def compared(pilot):
        await rollout_ready(pilot)
        await pilot.press("t", "minus")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=compared)
