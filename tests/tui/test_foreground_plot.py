"""The jobs screen plots a foreground `rmx train` from its run folder, as it plots a detached job."""

from __future__ import annotations

import pytest

import engine.jobs.kinds  # noqa: F401  (registers the train kind)
from engine.core.config import ModelSpec
from engine.jobs.foreground import foreground_run
from engine.jobs.store import LocalJobs, list_runs
from engine.recipes.train import TrainSpec, train
from rmx_tui.screens.run import RunScreen
from rmx_tui.widgets.job_table import JobTable
from tests.test_train import make_rollouts
from tests.tui.harness import SIZE, until
from tests.tui.test_jobs_screen import Host

pytestmark = pytest.mark.anyio


async def test_a_foreground_train_is_listed_and_its_loss_plotted(tiny_llama, tmp_path):
    from dataclasses import asdict

    model = ModelSpec(str(tiny_llama), dtype="float32")
    spec = TrainSpec(str(make_rollouts(tmp_path / "r.jsonl")), tau="q0.7", grad_accum=2, lr=1e-3, lora_r=4,
                     lora_alpha=8)
    echoed: list[dict] = []
    with foreground_run("train", {"model": asdict(model), "train": asdict(spec)}, tmp_path / "out",
                        echoed.append) as run:
        result = train(model, spec, tmp_path / "out", emit=run.emit, progress=run.set_progress)
    assert result.state == "done"
    (status,) = list_runs()
    async with Host().run_test(size=SIZE) as pilot:
        table = pilot.app.screen.query_one(JobTable)
        await until(pilot, lambda: table.row_count == 1)
        assert "done" in " ".join(cell.plain for cell in table.get_row(status.id))
        pilot.app.push_screen(RunScreen(LocalJobs(), status.id))
        await pilot.pause()
        screen = pilot.app.screen
        await until(pilot, lambda: screen.ended and len(screen.series.get("train/loss", ())) == 12)
        losses = [e["train/loss"] for e in echoed if "train/loss" in e and "train/alarm" not in e]
        assert list(screen.series["train/loss"].ys) == pytest.approx(losses)
        assert screen.plots  # the run view draws its metrics, as for a detached job
