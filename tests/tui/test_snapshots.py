"""Snapshots at 120x36 (and the browser at 80x24, 120x40, 200x60) of the browser, the inspector, the branch view and the compare view, with and without its edit overlap (greedy, seeded, fp32)."""

from __future__ import annotations

import pytest

from tests.tui.harness import SIZE, rollout_ready, until


def test_browser(snap_compare, make_app):
    async def opened(pilot):
        await rollout_ready(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=opened)


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 60)], ids=["80x24", "120x40", "200x60"])
def test_browser_at_terminal_size(snap_compare, make_app, size):
    """80×24: the drawer closed, the inspector under a full-width heatmap; 120×40 and 200×60: three panes."""

    async def opened(pilot):
        await rollout_ready(pilot)

    assert snap_compare(make_app(), terminal_size=size, run_before=opened)


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


def test_compare_view_with_the_edit_overlap(snap_compare, make_app, overlap_adapter, monkeypatch):
    from textual.widgets import Input

    from rmx_tui.widgets.edit_overlap import EditOverlap

    monkeypatch.setattr("rmx_tui.adapter_choice.newest_adapter", lambda client: None)

    async def compared(pilot):
        await rollout_ready(pilot)
        await pilot.press("t", "a")
        await pilot.pause()
        pilot.app.screen.query_one("#adapter", Input).value = overlap_adapter.name
        await pilot.press("enter")
        overlap = pilot.app.screen.query_one(EditOverlap)
        await until(pilot, lambda: overlap.edits is not None)
        await pilot.press("3")
        await pilot.pause()

    monkeypatch.chdir(overlap_adapter.parent)  # a relative path: the title is the same on every machine
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=compared)
