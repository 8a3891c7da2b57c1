"""Cancelling a job ends it `cancelled`, never `failed`, whatever its kind: every kind stops the one way (Stopped)."""

from __future__ import annotations

import json
import signal
import time
from dataclasses import asdict
from pathlib import Path

import pytest

import engine.jobs.intervene
import engine.jobs.kinds
import engine.jobs.runner as runner
import engine.jobs.store as store
from engine.core.config import ModelSpec
from engine.core.errors import RmxError, Stopped
from engine.jobs.store import JobSpec, create_run, read_status
from tests.test_intervene_job import config as intervene_config
from tests.test_train import _spec, make_rollouts

assert engine.jobs.intervene and engine.jobs.kinds  # imported to register the kinds in this process


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def configs(kind: str, tiny_llama: Path, teacher: Path, adapter: Path, tmp_path: Path) -> dict:
    model = asdict(ModelSpec(str(tiny_llama), dtype="float32"))
    rollouts = str(make_rollouts(tmp_path / "r.jsonl", problems=2, k=2))
    small_eval = {"benchmarks": ["smoke"], "limit": 2, "max_new_tokens": 4, "template": "raw"}
    return {
        "rollouts": {"model": model, "rollouts": {"dataset": "smoke", "limit": 2, "k": 2, "max_new_tokens": 4,
                                                  "template": "raw"}},
        "train": {"model": model, "train": asdict(_spec(Path(rollouts)))},
        "eval": {"model": model, "eval": small_eval},
        "distill": {"model": model, "teacher": asdict(ModelSpec(str(teacher), dtype="float32")),
                    "distill": {"rollouts": rollouts, "top_k": 16, "batch_size": 1, "grad_accum": 1, "lora_r": 4,
                                "lora_alpha": 8}},
        "sweep": {"model": model, "train": asdict(_spec(Path(rollouts), max_steps=2)),
                  "sweep": {"taus": "q0.5,q0.9", "holdout": 2, "holdout_dataset": "smoke", "holdout_offset": 10,
                            "max_new_tokens": 4, "template": "raw"}},
        "pipeline": {"pipeline": {
            "model": {"base": str(tiny_llama), "dtype": "float32"},
            "rollouts": {"dataset": "smoke", "limit": 2, "k": 2, "max_new_tokens": 4, "template": "raw"},
            "train": {"tau": "q0.7", "grad_accum": 2, "lr": 1e-3, "lora_r": 4, "lora_alpha": 8},
            "eval": small_eval}},
        "intervene": intervene_config(tiny_llama, adapter, limit=1),
    }[kind]


@pytest.mark.parametrize("kind", ["rollouts", "train", "eval", "distill", "sweep", "pipeline", "intervene"])
def test_a_cancelled_job_of_every_kind_ends_cancelled(kind, tiny_llama, tiny_llama_teacher, tiny_llama_adapter,
                                                       tmp_path, monkeypatch):
    # The cancel arrives once the kind is running: the runner's own check before starting it says go, every
    # later one (the recipe's, between steps) says stop.
    asked: list[int] = []

    def should_stop(self) -> bool:
        asked.append(1)
        return len(asked) > 1

    monkeypatch.setattr(store.RunContext, "should_stop", should_stop)
    config = configs(kind, tiny_llama, tiny_llama_teacher, tiny_llama_adapter, tmp_path)
    known = store.resolve_entry(kind, None)
    if known.validate is not None:
        known.validate(config)
    run_dir = create_run(JobSpec(kind=kind, entry=known.entry, config=config, rmx_version="test", created=time.time()))
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = runner.run_job(run_dir)
    finally:
        signal.signal(signal.SIGTERM, previous)
        status = json.loads((run_dir / "status.json").read_text())
        (run_dir / "status.json").write_text(json.dumps({**status, "pid": None}))  # not a job for teardown to kill
    final = read_status(run_dir)
    assert (final.state, final.error) == ("cancelled", None), (kind, final.error)
    assert code == 0 and len(asked) > 1


def test_stopped_is_the_one_stop_and_still_a_one_line_error():
    assert issubclass(Stopped, RmxError)  # the CLI still prints it as one line, exit 2
    from engine.core.errors import Interrupted

    assert issubclass(Interrupted, Stopped)
