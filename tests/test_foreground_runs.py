"""Foreground commands keep a run folder like a job's; `--json` streams NDJSON events, the summary last."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.core.errors import RmxError
from engine.jobs.store import LocalJobs, find_run, list_runs, read_status, run_outputs
from tests.test_train import make_rollouts

ROOT = Path(__file__).parents[1]


def _rmx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rmx_tui", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def foreground_train(tmp_path_factory, tiny_llama):
    """`rmx train --json` on the tiny base, in its own data dir: (stdout lines, out folder, data dir)."""
    root = tmp_path_factory.mktemp("fg")
    data = root / "data"
    rollouts = make_rollouts(root / "r.jsonl")
    previous = os.environ.get("RMX_DATA_DIR")
    os.environ["RMX_DATA_DIR"] = str(data)
    try:
        result = _rmx("train", "--rollouts", str(rollouts), "--base", str(tiny_llama), "--out", str(root / "out"),
                      "--tau", "q0.7", "--grad-accum", "2", "--lr", "1e-3", "--lora-r", "4", "--lora-alpha", "8",
                      "--dtype", "float32", "--json")
    finally:
        if previous is None:
            os.environ.pop("RMX_DATA_DIR")
        else:
            os.environ["RMX_DATA_DIR"] = previous
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines(), root / "out", data


def test_json_streams_every_event_then_the_unchanged_summary(foreground_train):
    lines, out, _ = foreground_train
    events = [json.loads(line) for line in lines[:-1]]
    summary = json.loads(lines[-1])
    assert events[0]["job/state"] == "running" and events[-1]["job/state"] == "done"
    assert all("t" in event and "step" in event for event in events)
    losses = [e for e in events if "train/loss" in e and "train/alarm" not in e]
    assert len(losses) == summary["total"] == 12
    # The summary is the TrainResult's JSON, as `--json` printed it before events were streamed.
    assert summary["state"] == "done" and summary["adapter"] == str(out / "adapter")
    assert "t" not in summary and "job/state" not in summary


def test_the_run_folder_holds_the_same_events_and_a_final_status(foreground_train, monkeypatch):
    lines, out, data = foreground_train
    monkeypatch.setenv("RMX_DATA_DIR", str(data))
    (status,) = list_runs()
    assert status.kind == "train" and status.state == "done" and status.step == 12 and status.total == 12
    run_dir = find_run(status.id)
    on_disk = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert on_disk == [json.loads(line) for line in lines[:-1]]
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["out"] == str(out) and config["foreground"] is True and config["train"]["tau"] == "q0.7"
    assert (run_dir / "artifacts").resolve() == out  # readers of job runs find the adapter and costs here
    outputs = run_outputs(run_dir)  # listed in result.json, as a detached job lists them
    assert outputs["adapter"] == str(out / "adapter") and Path(outputs["adapter"], "adapter_config.json").is_file()
    view = LocalJobs().job(status.id)
    assert view.status.state == "done" and read_status(run_dir).pid == view.status.pid


def test_jobs_show_reads_a_foreground_run(foreground_train, monkeypatch):
    _, _, data = foreground_train
    monkeypatch.setenv("RMX_DATA_DIR", str(data))
    (status,) = list_runs()
    result = _rmx("jobs", "show", status.id, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"]["state"] == "done"


def test_bad_input_fails_before_a_run_folder_exists(tmp_path, tiny_llama):
    result = _rmx("train", "--rollouts", str(tmp_path / "missing.jsonl"), "--base", str(tiny_llama),
                  "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert list_runs() == []


def test_a_failure_inside_the_run_is_recorded(tmp_path):
    import engine.jobs.kinds  # noqa: F401
    from engine.jobs.foreground import foreground_run

    make_rollouts(tmp_path / "r.jsonl")
    echoed: list[dict] = []
    with pytest.raises(RmxError, match="boom"):
        with foreground_run("pool", {"pool": {"rollouts": str(tmp_path / "r.jsonl")}}, tmp_path / "pool.jsonl",
                            echoed.append) as run:
            run.emit({"pool/phase": "select"})
            raise RmxError("boom")
    (status,) = list_runs()
    assert status.state == "failed" and status.error == "boom"
    assert [e.get("job/state") for e in echoed] == ["running", None, "failed"]


FAILING_POOL = """
import sys
import engine.jobs.kinds
from engine.core.errors import RmxError
from engine.jobs.foreground import foreground_run
with foreground_run("pool", {"pool": {"rollouts": sys.argv[1]}}, sys.argv[2], lambda event: None):
    raise RmxError("interrupted")
"""


def test_jobs_resume_continues_a_failed_foreground_run_in_its_own_output(tmp_path):
    import time

    from engine.jobs.store import resume_job

    make_rollouts(tmp_path / "r.jsonl")
    out = tmp_path / "pool.jsonl"
    failed = subprocess.run([sys.executable, "-c", FAILING_POOL, str(tmp_path / "r.jsonl"), str(out)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert failed.returncode == 1 and "interrupted" in failed.stderr
    (status,) = list_runs()
    assert status.state == "failed" and not out.exists()
    resume_job(status.id)
    deadline = time.time() + 120
    while read_status(find_run(status.id)).active and time.time() < deadline:
        time.sleep(0.1)
    assert read_status(find_run(status.id)).state == "done"
    assert out.exists() and len(out.read_text().splitlines()) > 0  # written where the foreground run pointed
