"""Jobs: run dirs, the event log, heartbeats and staleness, cancel, resume, the kind registry, `rmx jobs`."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import engine.jobs.store as jobs
import engine.jobs.selftest
from engine.core.errors import RmxError
from engine.jobs.store import (
    EventTail, EventWriter, JobConflict, JobNotFound, JobSpec, JobStatus, LocalJobs, RunContext, create_run,
    find_run, json_bytes, list_runs, pid_alive, read_status, register_job_kind, resume_job, submit_job,
    tail_events, write_json_atomic,
)

HEARTBEAT_S = 0.2


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def kill_jobs() -> None:
    """SIGKILL every job process of the current data dir that still lives (test teardown)."""
    for status in list_runs():
        if status.pid and pid_alive(status.pid):
            try:
                os.killpg(status.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def status_when(run_dir: Path, predicate, timeout: float = 15.0, what: str = "a status") -> JobStatus:
    """The first status of `run_dir` that satisfies `predicate`."""
    def check():
        status = read_status(run_dir)
        return status if predicate(status) else None
    return wait_for(check, timeout, what)


def finished(job_id: str, timeout: float = 15.0) -> JobStatus:
    return status_when(find_run(job_id), lambda s: not s.active, timeout, f"{job_id} to end")


def values(run_dir: Path) -> list[int]:
    return [e["selftest/value"] for e in tail_events(run_dir, follow=False) if "selftest/value" in e]


@pytest.fixture(autouse=True)
def _fast_heartbeat(monkeypatch):
    monkeypatch.setenv("RMX_HEARTBEAT_S", str(HEARTBEAT_S))
    yield
    kill_jobs()


def test_a_job_leaves_a_complete_run_dir():
    status = submit_job("selftest", {"count": 4, "sleep": 0.01})
    assert re.match(r"^\d{8}-\d{6}-selftest-[0-9a-f]{4}$", status.id)
    assert status.state == "queued"
    final = finished(status.id)
    run_dir = find_run(status.id)
    assert final.state == "done" and final.error is None
    assert (final.step, final.total) == (4, 4)
    assert final.pid and final.started and final.ended and final.heartbeat
    config = json.loads((run_dir / "config.json").read_text())
    assert set(config) == {"kind", "entry", "config", "rmx_version", "created"}
    assert config["kind"] == "selftest" and config["entry"] == "engine.jobs.selftest:selftest"
    assert config["config"] == {"count": 4, "sleep": 0.01}
    on_disk = json.loads((run_dir / "status.json").read_text())
    assert {"state", "pid", "started", "heartbeat", "step", "total", "last_event", "error"} <= set(on_disk)
    events = list(tail_events(run_dir, follow=False))
    assert all({"t", "step"} <= set(e) for e in events)
    assert all("/" in k for e in events for k in e if k not in ("t", "step"))
    assert [e["selftest/value"] for e in events if "selftest/value" in e] == [0, 1, 2, 3]
    assert events[0]["job/state"] == "running" and events[-1] == final.last_event
    assert events[-1]["job/state"] == "done"
    assert json.loads((run_dir / "artifacts" / "checkpoint.json").read_text()) == {"next": 4}
    assert [s.id for s in list_runs()] == [status.id]


def test_runs_are_listed_oldest_first_and_ignore_stray_folders():
    first = finished(submit_job("selftest", {"count": 1}).id)
    second = finished(submit_job("selftest", {"count": 1}).id)
    (jobs.runs_dir() / "notes").mkdir()
    (jobs.runs_dir() / ".20261130-000000-x-0000.tmp").mkdir()
    assert [s.id for s in list_runs()] == [first.id, second.id]


def test_heartbeat_advances_while_the_job_runs():
    status = submit_job("selftest", {"count": 100, "sleep": 0.02})
    run_dir = find_run(status.id)
    first = status_when(run_dir, lambda s: s.state == "running")
    later = status_when(run_dir, lambda s: s.heartbeat > first.heartbeat + HEARTBEAT_S)
    assert later.state == "running" and later.step > 0 and later.total == 100
    assert later.last_event and "selftest/value" in later.last_event


def test_cancel_finishes_the_step_and_ends_cancelled():
    status = submit_job("selftest", {"count": 10_000, "sleep": 0.01})
    run_dir = find_run(status.id)
    wait_for(lambda: len(values(run_dir)) >= 3, what="a few events")
    assert jobs.cancel_job(status.id).state in ("running", "cancelled")
    final = finished(status.id)
    assert final.state == "cancelled" and final.error is None
    seen = values(run_dir)
    assert seen == list(range(len(seen))) and len(seen) < 10_000
    assert list(tail_events(run_dir, follow=False))[-1]["job/state"] == "cancelled"
    with pytest.raises(JobConflict, match="already cancelled"):
        jobs.cancel_job(status.id)


def test_a_failed_job_resumes_from_its_checkpoint():
    status = submit_job("selftest", {"count": 6, "fail_at": 3})
    failed = finished(status.id)
    assert failed.state == "failed" and failed.error == "selftest failed at step 3, as configured"
    assert failed.last_event == {**failed.last_event, "job/state": "failed", "job/error": failed.error}
    resumed = resume_job(status.id)
    assert resumed.state == "queued" and resumed.attempt == 2
    done = finished(status.id)
    assert done.state == "done" and done.attempt == 2
    assert values(find_run(status.id)) == [0, 1, 2, 3, 4, 5]  # each value exactly once across both attempts
    starts = [e["job/attempt"] for e in tail_events(find_run(status.id), False) if e.get("job/state") == "running"]
    assert starts == [1, 2]
    with pytest.raises(JobConflict, match="already done"):
        resume_job(status.id)


def test_a_late_reaper_leaves_a_resumed_run_alone():
    """The watcher of attempt 1 may wake after attempt 2 started: it must not fail the new attempt."""
    status = finished(submit_job("selftest", {"count": 3, "fail_at": 0}).id)
    resume_job(status.id)

    class Exited:
        pid = status.pid

        def wait(self) -> int:
            return 1

    jobs._watch(Exited(), find_run(status.id), attempt=1)
    assert finished(status.id).state == "done"


def test_a_diverging_job_ends_diverged():
    status = submit_job("selftest", {"count": 5, "diverge_at": 1})
    final = finished(status.id)
    assert final.state == "diverged" and "diverged at step 1" in final.error


def test_resume_refuses_a_running_job_and_lookups_refuse_bad_ids():
    status = submit_job("selftest", {"count": 1000, "sleep": 0.01})
    with pytest.raises(JobConflict, match="still"):
        resume_job(status.id)
    for bad in ("../../etc", "20261130-000000-selftest-0000", "", "x/y"):
        with pytest.raises(JobNotFound):
            find_run(bad)


def test_read_status_fails_a_running_job_whose_process_is_gone(tmp_path):
    run_dir = create_run(JobSpec("selftest", "engine.jobs.selftest:selftest", {"count": 1}, "0", time.time()))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    writer = EventWriter(run_dir / "events.jsonl")
    writer.write({"t": 1.0, "step": 7, "selftest/value": 6})
    writer.close()
    status = JobStatus.from_json(json.loads((run_dir / "status.json").read_text()))
    running = JobStatus(**{**status.to_json(), "state": "running", "pid": dead.pid, "heartbeat": time.time()})
    write_json_atomic(run_dir / "status.json", running.to_json())
    verdict = read_status(run_dir)
    assert verdict.state == "failed" and "died" in verdict.error
    assert verdict.last_event == {"t": 1.0, "step": 7, "selftest/value": 6}
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"  # written back


def test_a_job_on_another_machine_is_judged_by_its_heartbeat_alone():
    """On a shared home (NFS) a run dir may belong to another node: its pid means nothing here."""
    run_dir = create_run(JobSpec("selftest", "engine.jobs.selftest:selftest", {"count": 1}, "0", time.time()))
    status = read_status(run_dir)
    elsewhere = JobStatus(**{**status.to_json(), "state": "running", "pid": 2**22 + 7, "host": "gpu-node-7",
                             "heartbeat": time.time()})
    write_json_atomic(run_dir / "status.json", elsewhere.to_json())
    assert read_status(run_dir).state == "running"
    with pytest.raises(JobConflict, match="still running"):
        resume_job(run_dir.name)
    stale = JobStatus(**{**elsewhere.to_json(), "heartbeat": time.time() - 10 * HEARTBEAT_S})
    write_json_atomic(run_dir / "status.json", stale.to_json())
    verdict = read_status(run_dir)
    assert verdict.state == "failed" and "heartbeat" in verdict.error


def test_a_job_that_never_starts_fails_after_the_grace(monkeypatch):
    run_dir = create_run(JobSpec("selftest", "engine.jobs.selftest:selftest", {"count": 1}, "0", time.time() - 5))
    assert read_status(run_dir).state == "queued"
    monkeypatch.setattr(jobs, "QUEUED_GRACE_S", 1.0)
    verdict = read_status(run_dir)
    assert verdict.state == "failed" and "never started" in verdict.error


def test_job_main_refuses_a_run_that_is_not_queued():
    status = finished(submit_job("selftest", {"count": 1}).id)
    result = subprocess.run([sys.executable, "-m", "engine.jobs.runner", str(find_run(status.id))],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "not starting it twice" in result.stderr
    assert read_status(find_run(status.id)).state == "done"


def test_tail_tolerates_a_truncated_last_line(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_bytes(b'{"a/b": 1}\n{"a/b": 2}\n{"a/b": 3, "par')
    tail = EventTail(tmp_path)
    assert tail.read() == [{"a/b": 1}, {"a/b": 2}]
    assert tail.offset == len(b'{"a/b": 1}\n{"a/b": 2}\n')
    assert tail.read() == []
    with log.open("ab") as handle:
        handle.write(b'tial": true}\n')
    assert tail.read() == [{"a/b": 3, "partial": True}]
    assert list(tail_events(tmp_path, follow=False, from_offset=len(b'{"a/b": 1}\n'))) == [
        {"a/b": 2}, {"a/b": 3, "partial": True}]


def test_tail_skips_damaged_lines_and_counts_them(tmp_path):
    (tmp_path / "events.jsonl").write_bytes(b'{"a/b": 1}\nnot json\n[1, 2]\n\n{"a/b": 2}\n')
    tail = EventTail(tmp_path)
    assert tail.read() == [{"a/b": 1}, {"a/b": 2}]
    assert tail.skipped == 2


def test_a_writer_closes_a_torn_last_line_and_counts_it(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_bytes(b'{"a/b": 1}\n{"a/b": 2, "cut')
    writer = EventWriter(log)
    writer.write({"a/b": 3})
    assert writer.dropped == 1
    with log.open("ab") as handle:  # cut again while the writer runs (a hand edit, a short write)
        handle.write(b'{"a/b": 4, "cu')
    writer.write({"a/b": 5})
    writer.close()
    assert log.read_bytes() == b'{"a/b": 1}\n{"a/b": 2, "cut\n{"a/b": 3}\n{"a/b": 4, "cu\n{"a/b": 5}\n'
    assert writer.dropped == 2
    tail = EventTail(tmp_path)
    assert tail.read() == [{"a/b": 1}, {"a/b": 3}, {"a/b": 5}] and tail.skipped == 2


def test_follow_replays_then_streams_until_the_job_ends():
    status = submit_job("selftest", {"count": 15, "sleep": 0.02})
    events = list(tail_events(find_run(status.id), follow=True))
    assert [e["selftest/value"] for e in events if "selftest/value" in e] == list(range(15))
    assert events[-1]["job/state"] == "done"
    assert list(LocalJobs().job_events(status.id, since=len(events) - 1)) == events[-1:]


def test_event_keys_need_a_slash_and_values_become_standard_json(tmp_path):
    run_dir = create_run(JobSpec("selftest", "engine.jobs.selftest:selftest", {"count": 1}, "0", time.time()))
    writer = EventWriter(run_dir / "events.jsonl")
    run = RunContext(run_dir, read_status(run_dir), writer)
    with pytest.raises(ValueError, match="slash"):
        run.emit({"loss": 1.0})
    run.set_progress(3, 9)
    run.emit({"train/loss": math.nan, "train/grad": [math.inf, 1.5]})
    writer.close()
    line = (run_dir / "events.jsonl").read_text()
    assert "NaN" not in line and "Infinity" not in line
    event = json.loads(line)
    assert event["train/loss"] is None and event["train/grad"] == [None, 1.5] and event["step"] == 3
    assert json_bytes({"x": float("-inf")}) == b'{"x": null}'
    assert json.loads(json_bytes({"x": "\ud800é"})) == {"x": "\ud800é"}  # escaped, not an encode error


def test_the_registry_refuses_unknown_kinds_foreign_entries_and_bad_configs():
    before = set(os.listdir(jobs.runs_dir())) if jobs.runs_dir().exists() else set()
    with pytest.raises(RmxError, match="unknown job kind 'nope'"):
        submit_job("nope", {})
    with pytest.raises(RmxError, match="inside engine or rmx_tui"):
        submit_job("selftest", {"count": 1}, entry="os:system")
    with pytest.raises(RmxError, match="registered by engine.jobs.selftest:selftest"):
        submit_job("selftest", {"count": 1}, entry="engine.jobs.store:list_runs")
    with pytest.raises(RmxError, match="cannot import"):
        submit_job("selftest", {"count": 1}, entry="engine.no_such_module:f")
    with pytest.raises(RmxError, match="count must be"):
        submit_job("selftest", {"count": "many"})
    with pytest.raises(RmxError, match="unknown config keys"):
        submit_job("selftest", {"count": 1, "rm": "-rf"})
    after = set(os.listdir(jobs.runs_dir())) if jobs.runs_dir().exists() else set()
    assert after == before  # nothing was created for a refused submit
    with pytest.raises(ValueError, match="already registered"):
        register_job_kind("selftest", test_the_registry_refuses_unknown_kinds_foreign_entries_and_bad_configs)
    with pytest.raises(ValueError, match="lowercase"):
        register_job_kind("Bad Kind", engine.jobs.selftest.selftest)


def test_heartbeat_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("RMX_HEARTBEAT_S", "0.5")
    assert jobs.heartbeat_interval() == 0.5
    monkeypatch.setenv("RMX_HEARTBEAT_S", "soon")
    with pytest.raises(RmxError, match="RMX_HEARTBEAT_S"):
        jobs.heartbeat_interval()
    monkeypatch.delenv("RMX_HEARTBEAT_S")
    assert jobs.heartbeat_interval() == jobs.DEFAULT_HEARTBEAT_S


def test_rmx_jobs_commands():
    from rmx_tui.cli import app

    runner = CliRunner()
    status = submit_job("selftest", {"count": 3, "fail_at": 1})
    finished(status.id)
    listed = runner.invoke(app, ["jobs", "list"])
    assert listed.exit_code == 0 and status.id in listed.output and "failed" in listed.output
    as_json = json.loads(runner.invoke(app, ["jobs", "list", "--json"]).output)
    assert [j["id"] for j in as_json] == [status.id]
    shown = runner.invoke(app, ["jobs", "show", status.id])
    assert "selftest failed at step 1" in shown.output and "engine.jobs.selftest:selftest" in shown.output
    assert json.loads(runner.invoke(app, ["jobs", "show", status.id, "--json"]).output)["spec"]["kind"] == "selftest"
    logs = runner.invoke(app, ["jobs", "logs", status.id])
    assert "selftest/value=0" in logs.output and "job/state=failed" in logs.output
    resumed = runner.invoke(app, ["jobs", "resume", status.id])
    assert resumed.exit_code == 0 and "attempt 2" in resumed.output
    followed = runner.invoke(app, ["jobs", "logs", "-f", "--json", status.id])
    lines = [json.loads(line) for line in followed.output.splitlines()]
    assert [e["selftest/value"] for e in lines if "selftest/value" in e] == [0, 1, 2]
    assert lines[-1]["job/state"] == "done"
    cancelled = runner.invoke(app, ["jobs", "cancel", status.id])
    assert isinstance(cancelled.exception, JobConflict)
    missing = runner.invoke(app, ["jobs", "show", "20990101-000000-selftest-0000"])
    assert isinstance(missing.exception, JobNotFound)
