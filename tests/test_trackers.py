"""Trackers mirror a run's events for real: TensorBoard and trackio read back, W&B offline, export after the fact."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from engine.core.errors import RmxError
from engine.jobs.store import list_runs
from engine.recipes.trackers import Mirror, ReportSpec, event_metrics, own_step
from tests.test_pipeline import _config, coin_grader  # noqa: F401  (a fixture, used by name)
from tests.test_train import make_rollouts

ROOT = Path(__file__).parents[1]


@pytest.fixture
def trackio_dir(tmp_path, monkeypatch) -> Path:
    """trackio's local store in the test's folder (it reads TRACKIO_DIR when first imported)."""
    import trackio.sqlite_storage

    folder = tmp_path / "trackio"
    folder.mkdir()
    monkeypatch.setattr(trackio.sqlite_storage, "TRACKIO_DIR", folder)
    monkeypatch.setenv("TRACKIO_DIR", str(folder))
    return folder


def _scalars(logdir: Path, key: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(logdir))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(key)]


def _trackio_logs(project: str, run: str) -> list[dict]:
    from trackio.sqlite_storage import SQLiteStorage

    return SQLiteStorage.get_logs(project, run)


def test_events_become_scalars_at_their_own_step():
    event = {"t": 1.0, "step": 3, "train/step": 4, "train/loss": 0.5, "train/lr": 1e-3, "train/warning": "x",
             "train/flag": True, "train/grad_norm": float("nan")}
    assert event_metrics(event) == {"train/step": 4.0, "train/loss": 0.5, "train/lr": 1e-3}
    assert own_step(event) == 4 and own_step({"step": 2}) is None
    assert event_metrics({"eval/benchmark": "gsm8k", "eval/score": 0.5}) == {"eval/gsm8k/score": 0.5}
    assert ReportSpec(("none",)).report_to == () and ReportSpec(("tensorboard,trackio",)).report_to == (
        "tensorboard", "trackio")
    with pytest.raises(RmxError, match="unknown tracker 'mlflow'"):
        ReportSpec(("mlflow",))


def test_a_stage_event_without_its_own_step_is_filed_at_the_stage_s_last_step(tmp_path):
    """A pipeline reports no progress: rollouts/tok_s goes where rollouts/done last was, not all at step 0."""
    mirror = Mirror(ReportSpec(("tensorboard",)), "run", tmp_path, {})
    for done in (1, 2):
        mirror.log({"step": 0, "rollouts/done": done, "rollouts/correct": done})
        mirror.log({"step": 0, "rollouts/tok_s": 10.0 * done})
    mirror.log({"step": 5, "eval/benchmark": "smoke", "eval/score": 0.5})
    mirror.close()
    assert _scalars(tmp_path / "tensorboard", "rollouts/tok_s") == [(1, 10.0), (2, 20.0)]
    assert _scalars(tmp_path / "tensorboard", "eval/smoke/score") == [(5, 0.5)]


def test_a_pipeline_is_mirrored_to_tensorboard_and_trackio(tiny_llama, tmp_path, coin_grader, trackio_dir):  # noqa: F811
    import engine.jobs.kinds  # noqa: F401
    from engine.jobs.foreground import foreground_run
    from engine.recipes.pipeline import check_pipeline, run_pipeline

    checked = check_pipeline({**_config(tiny_llama), "report": {"report_to": ["tensorboard", "trackio"],
                                                                  "project": "rmx-test"}})
    events: list[dict] = []
    with foreground_run("pipeline", {"pipeline": checked}, tmp_path / "run", events.append) as run:
        run_pipeline(checked, tmp_path / "run", emit=run.emit, should_stop=run.should_stop)
    (status,) = list_runs()
    losses = [(e["train/step"], e["train/loss"]) for e in events if "train/step" in e and "train/alarm" not in e]
    scores = [e["eval/score"] for e in events if "eval/score" in e]
    assert losses and len(scores) == 2

    logdir = run.run_dir / "tensorboard"
    assert [step for step, _ in _scalars(logdir, "train/loss")] == [step for step, _ in losses]
    assert [value for _, value in _scalars(logdir, "train/loss")] == pytest.approx([v for _, v in losses], rel=1e-6)
    assert [value for _, value in _scalars(logdir, "eval/smoke/score")] == pytest.approx(scores)

    logged = _trackio_logs("rmx-test", status.id)
    assert [(row["step"], row["train/loss"]) for row in logged if "train/loss" in row] == pytest.approx(losses)
    assert [row["eval/smoke/score"] for row in logged if "eval/smoke/score" in row] == pytest.approx(scores)


def test_runs_export_replays_a_sweep_with_one_tensorboard_run_per_tau(tiny_llama, tmp_path):
    from typer.testing import CliRunner

    import engine.jobs.kinds  # noqa: F401
    from engine.core.config import ModelSpec
    from engine.jobs.foreground import foreground_run
    from engine.recipes.sweep import SweepSpec, sweep
    from engine.recipes.train import TrainSpec
    from rmx_tui.cli import app

    model = ModelSpec(str(tiny_llama), dtype="float32")
    spec = TrainSpec(str(make_rollouts(tmp_path / "r.jsonl")), grad_accum=4, lr=1e-3, lora_r=4, lora_alpha=8,
                     max_steps=2)
    sweep_spec = SweepSpec(taus="q0.5,q0.9", holdout=1, holdout_dataset="smoke", holdout_offset=10,
                           max_new_tokens=4, template="raw")
    from dataclasses import asdict

    events: list[dict] = []
    config = {"model": asdict(model), "train": asdict(spec), "sweep": asdict(sweep_spec)}
    with foreground_run("sweep", config, tmp_path / "sweep", events.append) as run:
        sweep(model, spec, sweep_spec, tmp_path / "sweep", emit=run.emit, should_stop=run.should_stop)
    assert not (run.run_dir / "tensorboard").exists()  # no tracker was asked for

    result = CliRunner().invoke(app, ["runs", "export", run.run_dir.name, "--to", "tensorboard", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["logdir"] == str(run.run_dir / "tensorboard")
    for tau in ("q0.5", "q0.9"):
        expected = [e["train/loss"] for e in events if e.get("sweep/tau") == tau and "train/step" in e]
        lane = run.run_dir / "tensorboard" / f"tau-{tau}"
        assert [value for _, value in _scalars(lane, "train/loss")] == pytest.approx(expected, rel=1e-6)
    again = CliRunner().invoke(app, ["runs", "export", run.run_dir.name, "--to", "tensorboard"])
    assert again.exit_code != 0 and "already holds TensorBoard logs" in str(again.exception)


def _wandb_records(path: Path):
    """The protobuf records of a .wandb file (leveldb log format: 32 KiB blocks of checksummed chunks)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pending = path.read_bytes(), 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def test_train_reports_to_wandb_offline_and_trackio_with_clean_ndjson(tiny_llama, tmp_path, trackio_dir):
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RMX_DATA_DIR": str(data), "WANDB_MODE": "offline",
           "WANDB_DIR": str(tmp_path / "wandb"), "WANDB_SILENT": "true", "TRACKIO_DIR": str(trackio_dir)}
    (tmp_path / "wandb").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "rmx_tui", "train", "--rollouts", str(make_rollouts(tmp_path / "r.jsonl")),
         "--base", str(tiny_llama), "--out", str(tmp_path / "out"), "--tau", "q0.7", "--grad-accum", "4",
         "--max-steps", "3", "--lr", "1e-3", "--lora-r", "4", "--lora-alpha", "8", "--dtype", "float32",
         "--report-to", "wandb", "--report-to", "trackio", "--json"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]  # the trackers' chatter stays off stdout
    losses = [(e["train/step"], e["train/loss"]) for e in lines[:-1] if "train/step" in e]
    assert len(losses) == 3 and lines[-1]["state"] == "done"
    run_id = lines[0]["job/run"]

    (wandb_file,) = (tmp_path / "wandb").glob("wandb/offline-run-*/run-*.wandb")
    history, config, tags = [], {}, []
    for record in _wandb_records(wandb_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            if "train/loss" in row:
                history.append((row["_step"], row["train/loss"]))
        elif kind == "run":
            config = {item.key: json.loads(item.value_json) for item in record.run.config.update}
            tags = list(record.run.tags)
            assert record.run.display_name == run_id
    assert history == pytest.approx(losses)
    assert config["train"]["tau"] == "q0.7" and config["kind"] == "train" and tags == ["train"]
    logged = _trackio_logs("rmx", run_id)
    assert [(row["step"], row["train/loss"]) for row in logged if "train/loss" in row] == pytest.approx(losses)


BLOCK_WANDB = """
import sys
class _NoWandb:
    def find_spec(self, name, path=None, target=None):
        if name == "wandb" or name.startswith("wandb."):
            raise ModuleNotFoundError("No module named 'wandb'")
sys.meta_path.insert(0, _NoWandb())
"""


def test_report_to_wandb_without_the_package_is_one_line_before_any_work(tmp_path, tiny_llama):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCK_WANDB)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "rmx_tui", "train", "--rollouts", str(make_rollouts(tmp_path / "r.jsonl")),
         "--base", str(tiny_llama), "--out", str(tmp_path / "out"), "--report-to", "wandb"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == "rmx: error: --report-to wandb needs the wandb package: pip install 'rmx[wandb]'"
    assert list_runs() == [] and not (tmp_path / "out").exists()


def test_a_detached_train_job_mirrors_to_tensorboard(tiny_llama, tmp_path):
    import time
    from dataclasses import asdict

    import engine.jobs.kinds  # noqa: F401
    from engine.core.config import ModelSpec
    from engine.jobs.store import find_run, read_status, submit_job
    from engine.recipes.train import TrainSpec

    spec = TrainSpec(str(make_rollouts(tmp_path / "r.jsonl")), tau="q0.7", grad_accum=4, lr=1e-3, lora_r=4,
                     lora_alpha=8, max_steps=3)
    status = submit_job("train", {"model": asdict(ModelSpec(str(tiny_llama), dtype="float32")), "train": asdict(spec),
                                  "report": ReportSpec(("tensorboard",)).to_json()})
    run_dir = find_run(status.id)
    deadline = time.time() + 240
    while read_status(run_dir).active and time.time() < deadline:
        time.sleep(0.2)
    final = read_status(run_dir)
    assert final.state == "done", (final.error, (run_dir / "job.log").read_text()[-2000:])
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    losses = [e["train/loss"] for e in events if "train/step" in e and "train/alarm" not in e]
    assert [v for _, v in _scalars(run_dir / "tensorboard", "train/loss")] == pytest.approx(losses, rel=1e-6)
