"""Run folders under faults: damaged files, torn event lines, full disks; every run stays listed, no value is lost."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import engine.jobs.runner as runner
import engine.jobs.selftest
import engine.jobs.store as store
from engine.core.diskfull import DiskFull, check_space, disk_full, is_disk_full
from engine.jobs.repair import repair_run
from engine.jobs.store import (
    EventTail, JobConflict, JobSpec, LocalJobs, RunDamaged, cancel_job, create_run, find_run, list_runs, load_run,
    read_status, resume_job, submit_job, write_json_atomic,
)
from engine.service.server import create_app
from engine.service.workbench import Workbench
from rmx_tui.cli import app as cli_app
from tests.test_jobs import finished, kill_jobs, wait_for

SELFTEST = "engine.jobs.selftest:selftest"


@pytest.fixture(autouse=True)
def _fast_heartbeat(monkeypatch):
    monkeypatch.setenv("RMX_HEARTBEAT_S", "0.2")
    yield
    kill_jobs()


def new_run(config: dict | None = None) -> Path:
    spec = JobSpec(kind="selftest", entry=SELFTEST, config=config or {"count": 3}, rmx_version="test",
                   created=time.time())
    return create_run(spec)


DAMAGES = {
    "status.json: not an object": lambda d: (d / "status.json").write_text("[1, 2]"),
    "status.json: not valid JSON (cut short?)": lambda d: (d / "status.json").write_text('{"id": "x", "sta'),
    "status.json: empty": lambda d: (d / "status.json").write_text(""),
    "status.json: missing": lambda d: (d / "status.json").unlink(),
    "status.json: 'step' is str, not int": lambda d: (d / "status.json").write_text(
        json.dumps({**json.loads((d / "status.json").read_text()), "step": "3"})),
    "status.json: unknown job state 'exploded': use one of queued, running, done, failed, cancelled, diverged, "
    "damaged": lambda d: (d / "status.json").write_text(
        json.dumps({**json.loads((d / "status.json").read_text()), "state": "exploded"})),
    "config.json: missing": lambda d: (d / "config.json").unlink(),
    "config.json: no 'entry'": lambda d: (d / "config.json").write_text('{"kind": "selftest", "created": 1.0}'),
    "events.jsonl: missing": lambda d: (d / "events.jsonl").unlink(),
}


def test_each_kind_of_damaged_run_is_listed_with_its_reason_and_never_hides_the_others():
    healthy = finished(submit_job("selftest", {"count": 2}).id)
    damaged = {}
    for reason, damage in DAMAGES.items():
        run_dir = new_run()
        damage(run_dir)
        damaged[run_dir.name] = reason
    listed = {s.id: s for s in list_runs()}
    assert set(listed) == {healthy.id, *damaged}
    assert listed[healthy.id].state == "done"
    for job_id, reason in damaged.items():
        assert listed[job_id].state == "damaged" and listed[job_id].error == reason, (job_id, listed[job_id])
        assert listed[job_id].kind == "selftest"

    result = CliRunner().invoke(cli_app, ["jobs", "list"])
    assert result.exit_code == 0 and healthy.id in result.output
    for job_id, reason in damaged.items():
        line = next(line for line in result.output.splitlines() if line.startswith(job_id))
        assert "damaged" in line and reason in line

    status = CliRunner().invoke(cli_app, ["engine", "status"])  # no daemon: it still counts the active jobs
    assert status.exit_code == 1 and status.output.strip() == "engine: not running (0 active jobs)"

    api = TestClient(create_app(Workbench()))
    listing = api.get("/jobs")
    assert listing.status_code == 200 and {j["id"] for j in listing.json()} == set(listed)
    for job_id, reason in damaged.items():
        view = api.get(f"/jobs/{job_id}")
        assert view.status_code == 200 and view.json()["status"]["state"] == "damaged"
        assert view.json()["status"]["error"] == reason
        shown = CliRunner().invoke(cli_app, ["jobs", "show", job_id])
        assert shown.exit_code == 0 and reason in shown.output and "rmx jobs repair" in shown.output
        with pytest.raises(JobConflict, match="damaged"):
            cancel_job(job_id)
        with pytest.raises(JobConflict, match="damaged"):
            resume_job(job_id)


def test_a_missing_event_log_ends_a_stream_with_a_one_line_reason():
    run_dir = new_run()
    (run_dir / "events.jsonl").unlink()
    with pytest.raises(RunDamaged, match=r"events.jsonl: missing\): run rmx jobs repair"):
        list(LocalJobs().job_events(run_dir.name))
    lines = TestClient(create_app(Workbench())).get(f"/jobs/{run_dir.name}/events").text.splitlines()
    assert json.loads(lines[-1])["error"].startswith(f"job {run_dir.name} is damaged (events.jsonl: missing)")


def test_repair_rebuilds_status_from_the_event_log_and_says_what_it_could_not():
    status = finished(submit_job("selftest", {"count": 4, "fail_at": 2}).id)
    run_dir = find_run(status.id)
    (run_dir / "status.json").write_text('{"id": "20')  # cut short
    assert load_run(run_dir)[0].state == "damaged"
    report = repair_run(status.id)
    assert report.status.state == "failed" and report.status.error == "selftest failed at step 2, as configured"
    assert report.status.step == 2 and report.status.attempt == 1
    assert any("step total" in line for line in report.lost)
    resume_job(status.id)  # a repaired run resumes like any other
    assert finished(status.id).state == "done"

    cut = new_run()
    (cut / "events.jsonl").write_text('{"t": 1.0, "step": 1, "job/state": "running", "job/attempt": 1}\n')
    (cut / "status.json").write_text("[]")
    (cut / "config.json").unlink()
    result = CliRunner().invoke(cli_app, ["jobs", "repair", cut.name])
    assert result.exit_code == 0
    assert "no job process alive, so it failed" in result.output
    assert "config.json: missing: the job's kind and settings cannot be rebuilt" in result.output
    assert f"{cut.name}: damaged (config.json: missing)" in result.output
    assert read_status(cut).state == "failed"  # status.json itself is sound again

    healthy = finished(submit_job("selftest", {"count": 1}).id)
    assert "nothing to repair" in CliRunner().invoke(cli_app, ["jobs", "repair", healthy.id]).output


def test_a_torn_line_in_a_running_job_is_closed_and_counted_not_glued_to_the_next_event():
    status = submit_job("selftest", {"count": 60, "sleep": 0.03})
    run_dir = find_run(status.id)
    wait_for(lambda: len(EventTail(run_dir).read()) >= 5, what="the job to run")
    with (run_dir / "events.jsonl").open("ab") as handle:
        handle.write(b'{"t": 1.0, "step": 3, "selftest/val')  # a line cut short under the running writer
    assert finished(status.id, 30).state == "done"
    events = list(LocalJobs().job_events(status.id))
    assert [e["selftest/value"] for e in events if "selftest/value" in e] == list(range(60))
    assert [e["log/dropped"] for e in events if "log/dropped" in e] == [1]
    tail = EventTail(run_dir)
    tail.read()
    assert tail.skipped == 1


# --- full disks ----------------------------------------------------------------------------------------------


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class FullDisk:
    """os.write / open / Path.write_bytes raise ENOSPC once `full` is set; pwrite (into space already held) works."""

    def __init__(self, monkeypatch) -> None:
        self.full = False
        real_write, real_write_bytes = os.write, Path.write_bytes

        def write(fd, data):
            return _enospc() if self.full else real_write(fd, data)

        def write_bytes(path, data):
            return _enospc() if self.full else real_write_bytes(path, data)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(Path, "write_bytes", write_bytes)


def run_in_process(run_dir: Path, sizes: list[int] | None = None) -> int:
    """The job runner in this process (so monkeypatched writes reach it), as `python -m engine.jobs.runner` runs;
    `sizes` gets the size of the status.json it left."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        return runner.run_job(run_dir)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if sizes is not None:
            sizes.append((run_dir / "status.json").stat().st_size)
        # The status names this test's own pid: teardown's kill_jobs must not take it for a job to kill.
        status = json.loads((run_dir / "status.json").read_text())
        (run_dir / "status.json").write_text(json.dumps({**status, "pid": None}))


@pytest.mark.parametrize("site", ["event", "checkpoint"])
def test_enospc_at_each_job_write_site_ends_the_job_failed_with_the_reason_on_disk(monkeypatch, site):
    disk = FullDisk(monkeypatch)
    run_dir = new_run({"count": 6})
    real_emit, real_atomic = store.RunContext.emit, engine.jobs.selftest.write_json_atomic

    def emit(self, event):
        if site == "event" and event.get("selftest/value") == 3:
            disk.full = True
        return real_emit(self, event)

    def checkpoint(path, data):
        if site == "checkpoint" and data == {"next": 3}:
            disk.full = True
        return real_atomic(path, data)

    monkeypatch.setattr(store.RunContext, "emit", emit)
    monkeypatch.setattr(engine.jobs.selftest, "write_json_atomic", checkpoint)
    assert run_in_process(run_dir) == 1
    disk.full = False
    status = read_status(run_dir)
    assert status.state == "failed"
    assert status.error.startswith("no space left on ")
    assert f"while writing {run_dir}" in status.error and "MB free" in status.error
    kept = "step-3" if site == "event" else "step-2"
    assert status.error.endswith(f"the last good checkpoint is {kept}; free space and run rmx jobs resume "
                                 f"{run_dir.name}")
    assert not (run_dir / runner.SLOT_NAME).exists()
    listed = CliRunner().invoke(cli_app, ["jobs", "list"])
    assert run_dir.name in listed.output and "no space left" in listed.output


def test_a_full_disk_at_the_final_status_write_uses_the_reserved_slot(monkeypatch):
    disk = FullDisk(monkeypatch)
    run_dir = new_run({"count": 3})
    real_emit = store.RunContext.emit

    def emit(self, event):
        if event.get("selftest/done"):
            disk.full = True  # the work is done; its last event and the final status meet a full disk
        return real_emit(self, event)

    monkeypatch.setattr(store.RunContext, "emit", emit)
    sizes: list[int] = []
    assert run_in_process(run_dir, sizes) == 1
    disk.full = False
    status = read_status(run_dir)
    assert status.state == "failed" and status.error.startswith("no space left on")
    assert sizes == [runner.SLOT_BYTES]  # written into the pre-allocated slot
    assert [e["selftest/value"] for e in EventTail(run_dir).read() if "selftest/value" in e] == [0, 1, 2]


def test_listing_on_a_full_disk_lists_every_run_even_one_whose_verdict_cannot_be_written(monkeypatch):
    done = finished(submit_job("selftest", {"count": 1}).id)
    dead = new_run()
    status = json.loads((dead / "status.json").read_text())
    write_json_atomic(dead / "status.json", {**status, "state": "running", "pid": 2**22 + 7, "heartbeat": 1.0})
    FullDisk(monkeypatch).full = True
    runs = {s.id: s for s in list_runs()}
    assert runs[done.id].state == "done"
    assert runs[dead.name].state == "failed" and "died" in runs[dead.name].error
    result = CliRunner().invoke(cli_app, ["jobs", "list"])
    assert result.exit_code == 0 and done.id in result.output and dead.name in result.output


def test_library_disk_errors_are_recognised_and_checkpoints_check_space_first(tmp_path, monkeypatch):
    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed")
    assert is_disk_full(torch_error)
    assert is_disk_full(Exception("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                                  "\"No space left on device\" })"))
    assert is_disk_full(OSError(errno.EDQUOT, "quota"))
    assert not is_disk_full(RuntimeError("shape mismatch"))

    from engine.recipes import loop

    out = tmp_path / "run"
    old = out / loop.CHECKPOINTS / "step-000002"
    old.mkdir(parents=True)
    (old / loop.STATE_FILE).write_bytes(b"x" * 3_000_000)

    def failing(model, state, folder):
        raise torch_error

    monkeypatch.setattr(loop, "_write_checkpoint", failing)
    with pytest.raises(DiskFull) as caught:
        loop.save_checkpoint(None, {}, out, 4)
    message = str(caught.value)
    assert message.startswith("no space left on ") and "(3 MB needed, " in message
    assert message.endswith("the last good checkpoint is step-000002; free space and rerun with --resume")
    assert (old / loop.STATE_FILE).exists() and loop.latest_checkpoint(out) == old

    class Stat:
        f_bavail, f_frsize = 1, 1 << 20  # 1 MB free
    monkeypatch.setattr(os, "statvfs", lambda path: Stat())
    with pytest.raises(DiskFull, match=r"\(3 MB needed, 1 MB free\)"):
        check_space(out, 3_000_000, "step-000002")
    Stat.f_bavail = 4
    assert "low disk space" in check_space(out, 3_000_000)
    Stat.f_bavail = 100
    assert check_space(out, 3_000_000) is None
    assert str(disk_full(out / "x", 2 << 20)).startswith("no space left on ")


def test_the_cli_says_a_full_disk_in_one_line_with_exit_2(monkeypatch, capsys):
    from rmx_tui import cli

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(store.LocalJobs, "list_jobs", full)
    monkeypatch.setattr(sys, "argv", ["rmx", "jobs", "list"])
    with pytest.raises(SystemExit) as code:
        cli.main()
    assert code.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rmx: no space left on ")


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                            capture_output=True, timeout=10)
    return result.returncode == 0


def test_a_real_full_tmpfs_fails_the_job_with_the_reason_and_every_run_stays_listed(tmp_path, monkeypatch):
    mount = tmp_path / "small"
    if not _mount_tmpfs(mount, "2m"):
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        monkeypatch.setenv("RMX_DATA_DIR", str(mount))
        first = finished(submit_job("selftest", {"count": 2}).id)
        status = submit_job("selftest", {"count": 100_000, "sleep": 0.001})
        run_dir = find_run(status.id)
        wait_for(lambda: read_status(run_dir).state == "running", what="the job to start")
        filler = mount / "filler"
        with filler.open("wb") as handle:  # take every free byte
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError as error:
                assert error.errno == errno.ENOSPC
        final = finished(status.id, 60)
        assert final.state == "failed" and final.error.startswith("no space left on tmpfs (")
        assert final.error.endswith(f"free space and run rmx jobs resume {status.id}")
        listed = CliRunner().invoke(cli_app, ["jobs", "list"])
        assert listed.exit_code == 0 and first.id in listed.output and status.id in listed.output
        filler.unlink()
        resume_job(status.id)  # space is back: it continues from its checkpoint
        wait_for(lambda: read_status(run_dir).attempt == 2 and read_status(run_dir).state == "running",
                 what="the resumed job")
        cancel_job(status.id)
        finished(status.id, 30)
    finally:
        kill_jobs()
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10)


def test_the_event_log_is_fsynced_at_each_checkpoint_and_only_there(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    writer = store.EventWriter(tmp_path / "events.jsonl")
    status = store.JobStatus(id="20260101-000000-selftest-0000", kind="selftest", state="running", created=0.0)
    run = store.RunContext(tmp_path, status, writer)
    run.emit({"train/loss": 1.0})
    assert synced == []
    run.emit({"train/checkpoint": str(tmp_path / "checkpoints" / "step-000004")})
    assert synced == [writer._fd] and run.checkpoint == "step-000004"
    writer.close()
