"""The jobs screen and the run view, driven by Pilot against real selftest jobs in a temporary data dir."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
from textual.app import App

import engine.jobs.selftest  # noqa: F401  (registers the selftest kind in this process)
from engine.service.daemon import client_for, start_daemon, stop_daemon
from engine.jobs.store import (
    EventTail, EventWriter, JobsClient, JobSpec, LocalJobs, create_run, find_run, list_runs, pid_alive, read_status,
    runs_dir, submit_job, write_json_atomic,
)
from rmx_tui.screens.jobs import ConfirmCancel, JobsScreen
from rmx_tui.screens.run import RunScreen
from rmx_tui.widgets.job_table import JobTable
from rmx_tui.widgets.tau_grid import TauGrid
from tests.tui.harness import SIZE, until
from themes.workbench import workbench_themes

pytestmark = pytest.mark.anyio

HEARTBEAT_S = 0.2
FIXED_ID = "20260101-120000-selftest-0001"
FIXED_T = 1_767_268_800.0
"""2026-01-01 12:00 UTC: every time stamp of a normalised run is counted from here."""


class Host(App[None]):
    """A bare app in the workbench's theme that opens the jobs screen: no models loaded, jobs through `client`."""

    def __init__(self, client: JobsClient | None = None) -> None:
        super().__init__()
        for theme in workbench_themes():
            self.register_theme(theme)
        self.theme = "rmx-dark"
        self.client = client or LocalJobs()

    def on_mount(self) -> None:
        self.push_screen(JobsScreen(self.client))


@pytest.fixture(autouse=True)
def _fast_heartbeat(monkeypatch):
    """Short heartbeats; every job process still alive afterwards is killed."""
    monkeypatch.setenv("RMX_HEARTBEAT_S", str(HEARTBEAT_S))
    yield
    for status in list_runs():
        if status.pid and pid_alive(status.pid):
            try:
                os.killpg(status.pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended meanwhile
                pass


def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def state_of(job_id: str) -> str:
    return read_status(find_run(job_id)).state


def row(pilot, job_id: str) -> list[str]:
    """The cells of a run's row, as shown."""
    table = pilot.app.screen.query_one(JobTable)
    return [cell.plain for cell in table.get_row(job_id)]


def pin(run_dir: Path, job_id: str, **changes) -> str:
    """Rename a finished run to `job_id` and rewrite its status with `changes`: ids carry a random part."""
    target = runs_dir() / job_id
    run_dir.rename(target)
    status = json.loads((target / "status.json").read_text())
    write_json_atomic(target / "status.json", {**status, "id": job_id, **changes})
    return job_id


def normalised_run(count: int) -> str:
    """A finished selftest run renamed to FIXED_ID, its clocks, pid and host made fixed: a stable picture."""
    job = submit_job("selftest", {"count": count})
    wait_for(lambda: state_of(job.id) == "done")
    run_dir = find_run(job.id)
    wait_for(lambda: not pid_alive(read_status(run_dir).pid))
    spec = json.loads((run_dir / "config.json").read_text())
    write_json_atomic(run_dir / "config.json", {**spec, "created": FIXED_T})
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    (run_dir / "events.jsonl").write_text("".join(
        json.dumps({**event, "t": FIXED_T + 1 + index * 0.25}) + "\n" for index, event in enumerate(events)))
    last = read_status(run_dir).last_event
    return pin(run_dir, FIXED_ID, created=FIXED_T, started=FIXED_T + 1, ended=FIXED_T + 4.5, heartbeat=FIXED_T + 4.5,
               pid=None, host="node", last_event={**last, "t": FIXED_T + 4.5})


def train_run(tau: str, losses: list[float], frac: float, pass_at_1: float | None) -> str:
    """A finished `train` run written through the engine's run-dir API: what the τ grid reads."""
    index = len(list_runs()) + 1
    created = FIXED_T + 60 * index
    run_dir = create_run(JobSpec(kind="train", entry="engine.jobs.kinds:train_job",
                                 config={"model": {"source": "demo"}, "train": {"rollouts": "r.jsonl", "tau": tau}},
                                 rmx_version="0", created=created))
    writer = EventWriter(run_dir / "events.jsonl")
    for step, loss in enumerate(losses, start=1):
        writer.write({"t": created + step, "step": step, "train/loss": loss, "train/decision_frac": frac,
                      "train/tok_s": 1234.0})
    if pass_at_1 is not None:
        writer.write({"t": created + 9, "step": len(losses), "eval/pass@1": pass_at_1})
    writer.close()
    return pin(run_dir, f"20260101-12{index:02d}00-train-{index:04x}", state="done", started=created + 1,
               ended=created + 10, heartbeat=created + 10, step=len(losses), total=len(losses), host="node",
               last_event={"t": created + 9, "train/tok_s": 1234.0})


async def test_the_jobs_screen_lists_a_running_job_and_its_progress():
    job = submit_job("selftest", {"count": 1000, "sleep": 0.02})
    async with Host().run_test(size=SIZE) as pilot:
        table = pilot.app.screen.query_one(JobTable)
        await until(pilot, lambda: job.id in table.statuses and table.statuses[job.id].step > 0, timeout=15)
        first = table.statuses[job.id].step
        cells = row(pilot, job.id)
        assert cells[:3] == [job.id, "selftest", "running"]
        assert cells[3].endswith(f" {first}/1000")
        await until(pilot, lambda: table.statuses[job.id].step > first, timeout=15)
        cells = row(pilot, job.id)
        assert cells[3].endswith(f" {table.statuses[job.id].step}/1000")
        assert cells[4].endswith("s") and cells[6].endswith("s")  # an ETA and a running time
        assert "1 run · 1 active" in str(pilot.app.screen.query_one("#jobs-title").render())


async def test_the_run_view_replays_the_history_then_follows_the_job():
    job = submit_job("selftest", {"count": 1000, "sleep": 0.02})
    wait_for(lambda: read_status(find_run(job.id)).step >= 10)  # a history to replay, and more to come
    async with Host().run_test(size=SIZE) as pilot:
        table = pilot.app.screen.query_one(JobTable)
        await until(pilot, lambda: job.id in table.statuses)
        table.focus()
        await pilot.press("enter")
        run = pilot.app.screen
        assert isinstance(run, RunScreen) and run.job_id == job.id
        await until(pilot, lambda: len(run.series.get("selftest/value", ())) >= 10)
        seen = len(run.series["selftest/value"])
        await until(pilot, lambda: len(run.series["selftest/value"]) > seen + 5)  # live, after the history
        assert not run.ended
        LocalJobs().cancel_job(job.id)
        await until(pilot, lambda: run.ended and run.view.status.state == "cancelled", timeout=15)
        values = [event["selftest/value"] for event in EventTail(find_run(job.id)).read() if "selftest/value" in event]
        assert list(run.series["selftest/value"].ys) == values == list(range(len(values)))
        plot = run.plots["selftest/value"]  # picked on its own: the first key that is not job/…
        await until(pilot, lambda: plot.drawn == len(values))
        assert plot.border_subtitle == f"last {values[-1]} · {len(values)} points"
        await pilot.press("escape")
        assert isinstance(pilot.app.screen, JobsScreen)


async def test_reopening_a_finished_run_replays_its_whole_history_and_keys_can_be_picked():
    job = submit_job("selftest", {"count": 25})
    wait_for(lambda: state_of(job.id) == "done")
    async with Host().run_test(size=SIZE) as pilot:
        pilot.app.push_screen(RunScreen(LocalJobs(), job.id))
        await pilot.pause()
        run = pilot.app.screen
        await until(pilot, lambda: run.ended and run.view is not None)
        assert list(run.series["selftest/value"].ys) == list(range(25))
        assert run.received == 28  # job/state running, 25 values, selftest/done, job/state done
        assert list(run.plots) == ["selftest/value"]
        keys = run.query_one("#run-keys")
        assert [keys.get_option_at_index(i).value for i in range(keys.option_count)] == [
            "job/attempt", "selftest/value", "selftest/done"]
        keys.focus()
        await pilot.press("end", "space")  # pick selftest/done as well
        await until(pilot, lambda: set(run.plots) == {"selftest/value", "selftest/done"})
        await pilot.press("f")
        assert not run.following


async def test_cancel_from_the_screen_asks_then_ends_the_job_cancelled():
    job = submit_job("selftest", {"count": 1000, "sleep": 0.05})
    async with Host().run_test(size=SIZE) as pilot:
        table = pilot.app.screen.query_one(JobTable)
        await until(pilot, lambda: job.id in table.statuses and table.statuses[job.id].state == "running")
        await pilot.press("c")
        assert isinstance(pilot.app.screen, ConfirmCancel)
        await pilot.press("n")
        assert isinstance(pilot.app.screen, JobsScreen)
        assert state_of(job.id) == "running"
        await pilot.press("c")
        await pilot.press("y")
        await until(pilot, lambda: table.statuses[job.id].state == "cancelled", timeout=15)
        assert row(pilot, job.id)[2] == "cancelled"
        await pilot.press("c")  # nothing to cancel any more: no dialog
        assert isinstance(pilot.app.screen, JobsScreen)


async def test_a_killed_job_shows_as_failed_and_resumes_from_its_checkpoint():
    job = submit_job("selftest", {"count": 1000, "sleep": 0.02})
    wait_for(lambda: read_status(find_run(job.id)).step >= 5)
    async with Host().run_test(size=SIZE) as pilot:
        table = pilot.app.screen.query_one(JobTable)
        await until(pilot, lambda: job.id in table.statuses)
        os.killpg(read_status(find_run(job.id)).pid, signal.SIGKILL)
        await until(pilot, lambda: table.statuses[job.id].state == "failed", timeout=15)
        assert row(pilot, job.id)[2] == "failed"
        assert "killed by signal 9" in str(pilot.app.screen.query_one("#job-detail").render())
        await pilot.press("r")
        await until(pilot, lambda: table.statuses[job.id].attempt == 2 and table.statuses[job.id].active)
        assert row(pilot, job.id)[2].startswith("running #2") or row(pilot, job.id)[2].startswith("queued #2")
        await pilot.press("c", "y")
        await until(pilot, lambda: table.statuses[job.id].state == "cancelled", timeout=15)
    values = [event["selftest/value"] for event in EventTail(find_run(job.id)).read() if "selftest/value" in event]
    assert values == sorted(values) and values[0] == 0  # the second attempt went on from the checkpoint


async def test_both_screens_work_through_the_daemon(monkeypatch):
    """The same screens over RemoteClient: list, open, replay and follow a job the daemon launched."""
    root = Path(tempfile.mkdtemp(prefix="rmx-", dir="/tmp"))  # a Unix socket path must stay short
    monkeypatch.setenv("RMX_RUNTIME_DIR", str(root / "run"))
    client = client_for(start_daemon())
    try:
        job = client.submit_job("selftest", {"count": 30, "sleep": 0.03})
        async with Host(client).run_test(size=SIZE) as pilot:
            table = pilot.app.screen.query_one(JobTable)
            await until(pilot, lambda: job.id in table.statuses)
            table.focus()
            await pilot.press("enter")
            run = pilot.app.screen
            await until(pilot, lambda: run.ended and run.view is not None and run.view.status.state == "done",
                        timeout=15)
            assert list(run.series["selftest/value"].ys) == list(range(30))
    finally:
        client.close()
        stop_daemon()
        shutil.rmtree(root, ignore_errors=True)


async def test_the_tau_grid_shows_each_train_run_at_its_tau():
    train_run("q0.97", [0.9, 0.5], 0.031, 0.42)
    train_run("1.4", [0.8, 0.7, 0.6], 0.012, None)
    async with Host().run_test(size=SIZE) as pilot:
        grid = pilot.app.screen.query_one(TauGrid)
        await until(pilot, lambda: grid.row_count == 2)
        assert grid.display
        rows = [[cell.plain for cell in grid.get_row_at(index)] for index in range(2)]
        assert [r[0] for r in rows] == ["1.4", "q0.97"]  # nats first, then quantiles
        assert rows[0][2:] == ["0.012", "0.6", "—"] and rows[1][2:] == ["0.031", "0.5", "0.42"]
        table = pilot.app.screen.query_one(JobTable)
        assert [row(pilot, job_id)[5] for job_id in table.statuses] == ["1234", "1234"]


def test_snapshot_of_the_jobs_screen(snap_compare):
    normalised_run(12)
    train_run("1.4", [0.8, 0.6], 0.012, 0.38)

    async def listed(pilot):
        table = pilot.app.screen.query_one(JobTable)
        await until(pilot, lambda: table.row_count == 2 and pilot.app.screen.query_one(TauGrid).row_count == 1)
        await pilot.press("down")  # the selftest run, whose last event shows under the table
        await pilot.pause()  # the header is laid out a frame after the rows widen the columns

    assert snap_compare(Host(), terminal_size=SIZE, run_before=listed)


def test_snapshot_of_the_run_view(snap_compare):
    job_id = normalised_run(12)

    async def opened(pilot):
        table = pilot.app.screen.query_one(JobTable)
        await until(pilot, lambda: table.row_count == 1)
        table.focus()
        await pilot.press("enter")
        run = pilot.app.screen
        await until(pilot, lambda: run.ended and run.view is not None and run.plots
                    and run.plots["selftest/value"].drawn == 12)
        assert run.job_id == job_id

    assert snap_compare(Host(), terminal_size=SIZE, run_before=opened)


async def test_p_opens_the_pool_of_a_rollouts_run_and_refuses_other_kinds():
    from rmx_tui.screens.pool import PoolScreen
    from rmx_tui.widgets.pass_rate_histogram import PassRateHistogram
    from engine.jobs.store import find_run, write_result
    from tests.tui.test_pool_screen import write_rollouts

    normalised_run(3)
    run_dir = create_run(JobSpec(kind="rollouts", entry="engine.jobs.kinds:rollouts_job", config={}, rmx_version="0",
                                 created=FIXED_T + 120))
    (run_dir / "artifacts").mkdir(exist_ok=True)
    write_rollouts(run_dir / "artifacts" / "rollouts.jsonl")
    job_id = pin(run_dir, "20260101-120200-rollouts-0002", state="done", started=FIXED_T + 121, ended=FIXED_T + 130,
                 heartbeat=FIXED_T + 130, host="node")
    artifacts = find_run(job_id) / "artifacts"  # pinned: renamed to its fixed id
    write_result(artifacts, {}, {"rollouts": str(artifacts / "rollouts.jsonl")})
    async with Host().run_test(size=SIZE) as pilot:
        table = pilot.app.screen.query_one(JobTable)
        await until(pilot, lambda: table.row_count == 2)
        table.focus()
        assert table.selected.id == job_id  # newest first
        await pilot.press("down", "p")  # the selftest run
        await until(pilot, lambda: "has no pool" in " ".join(str(n.message) for n in pilot.app._notifications))
        assert isinstance(pilot.app.screen, JobsScreen)
        await pilot.press("up", "p")  # the rollouts file comes from the outputs the jobs client lists
        await until(pilot, lambda: isinstance(pilot.app.screen, PoolScreen))
        screen = pilot.app.screen
        await until(pilot, lambda: screen.stats is not None)
        assert screen.stats.problems == 6 and screen.stats.mixed == 4
        assert screen.query_one(PassRateHistogram).display
        await pilot.press("escape")
        assert isinstance(pilot.app.screen, JobsScreen)


def test_the_configured_tau_is_read_where_each_kind_keeps_it():
    from rmx_tui.widgets.tau_grid import configured_tau

    assert configured_tau({"model": {}, "train": {"tau": "q0.97"}}) == "q0.97"  # train and sweep jobs
    assert configured_tau({"model": {}, "train": {"tau": 1.4, "tau_wrong": 1.8}}) == "1.4|1.8"
    assert configured_tau({"pipeline": {"model": {}, "train": {"tau": "q0.95"}}}) == "q0.95"
    assert configured_tau({"model": {}}) == "?" and configured_tau({"pipeline": "broken"}) == "?"


async def test_a_damaged_run_is_listed_with_its_reason_next_to_the_others():
    healthy = submit_job("selftest", {"count": 1})
    damaged = create_run(JobSpec("selftest", "engine.jobs.selftest:selftest", {"count": 1}, "test", time.time()))
    (damaged / "status.json").write_text("[1, 2]")
    async with Host().run_test(size=SIZE) as pilot:
        table = pilot.app.screen.query_one(JobTable)
        await until(pilot, lambda: {healthy.id, damaged.name} <= set(table.statuses), timeout=15)
        assert row(pilot, damaged.name)[:3] == [damaged.name, "selftest", "damaged"]
        assert table.statuses[damaged.name].error == "status.json: not an object"
        table.move_cursor(row=table.get_row_index(damaged.name))
        await pilot.pause()
        await until(pilot, lambda: "status.json: not an object" in str(
            pilot.app.screen.query_one("#job-detail").render()), timeout=5)


async def test_the_run_view_cycles_through_every_series_it_lists_and_plots_them_all():
    normalised_run(4)
    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(JobTable)
        await until(pilot, lambda: table.row_count == 1)
        table.focus()
        await pilot.press("enter")
        run = app.screen
        await until(pilot, lambda: run.ended and bool(run.plots))
        listed = run._listed()
        assert len(listed) > 2 and list(run.plots) == ["selftest/value"]
        seen = []
        for _ in listed:
            await pilot.press("s")
            await pilot.pause()
            assert len(run.plots) == 1
            seen += list(run.plots)
        assert sorted(seen) == sorted(listed)  # every listed series gets its plot in turn
        await pilot.press("a")
        await pilot.pause()
        assert sorted(run.plots) == sorted(listed)
