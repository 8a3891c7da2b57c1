"""One τ at a time: a quantile is resolved over the root rollout, named in the status bar, used by every view."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from rmx_tui.gate import Gate
from rmx_tui.widgets.status_bar import StatusBar
from tests.tui.harness import SIZE, rollout_ready, until


@pytest.mark.anyio
async def test_a_quantile_tau_is_the_root_rollouts_for_branches_and_table_2(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        screen = app.screen
        root = screen.active
        expected = Gate(app.gate.tau).nats(sorted(t.entropy for t in root.tokens))
        status = screen.query_one(StatusBar)
        assert status.gate == f"τ q0.9 of the root rollout = {expected:.2f} nats"
        await pilot.press("home", "right", "right", "2")
        await until(pilot, lambda: screen.active.parent is root and screen.active.state == "done")
        fork = screen.active
        own = Gate(app.gate.tau).nats(sorted(t.entropy for t in fork.tokens))
        assert own != pytest.approx(expected)  # the fork's own quantile differs: it must not be used
        assert status.gate.endswith(f"= {expected:.2f} nats")
        assert screen.main_view.tau == pytest.approx(expected)
        await pilot.press("t")
        await pilot.pause()
        compare = app.screen
        assert compare.query_one(StatusBar).gate == status.gate
        table = compare.query_one("#table2", DataTable)
        rows = {table.get_row_at(i)[0]: table.get_row_at(i)[1] for i in range(table.row_count)}
        assert rows["τ"] == f"{expected:.3f} nats"
