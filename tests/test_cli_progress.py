"""Long CLI runs on a terminal: a live bar per stage with items done/total, tokens/s, elapsed, ETA, last verdict."""

from __future__ import annotations

import io

from rich.console import Console

from rmx_tui.cli.pipeline_cmd import _event_line
from rmx_tui.cli.progress import LiveProgress


def test_a_150_problem_rollout_run_shows_rate_eta_and_the_last_verdict():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160, color_system=None)
    with LiveProgress(console, _event_line) as live:
        live({"pipeline/stage": "rollouts", "pipeline/state": "running"})
        for done in (1, 2, 3):
            live({"rollouts/problem": f"smoke_{done}", "rollouts/correct": done, "rollouts/k": 8,
                  "rollouts/done": done, "rollouts/total": 150})
            live({"rollouts/tok_s": 812.4, "rollouts/tokens": 4000 * done})
        live({"train/checkpoint": "run/checkpoints/step-3", "step": 3})
        live.progress.refresh()
        task = live.progress.tasks[live.tasks["rollouts"]]
        assert (task.completed, task.total) == (3, 150)
    shown = screen.getvalue()
    assert "3/150" in shown and "812 tok/s" in shown and "ETA" in shown
    assert "smoke_3: 3/8 correct" in shown
    assert "▸ rollouts" in shown and "running" in shown  # the pipeline's bar for its stage
    assert "checkpoint: run/checkpoints/step-3" in shown  # what counts nothing stays a plain line


def test_figure2_and_table2_runs_draw_their_own_bars():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160, color_system=None)
    with LiveProgress(console, lambda event: None) as live:
        for done in (1, 2):
            live({"intervene/done": done, "intervene/total": 500, "intervene/problem": f"test/{done}",
                  "intervene/pass@1/oracle": done / 2})
        live({"analyze/done": 7, "analyze/total": 40})
        live.progress.refresh()
        assert (live.progress.tasks[live.tasks["intervene"]].completed,
                live.progress.tasks[live.tasks["analyze"]].total) == (2, 40)
    shown = screen.getvalue()
    assert "2/500" in shown and "test/2  oracle pass@1 1.00" in shown and "7/40" in shown
