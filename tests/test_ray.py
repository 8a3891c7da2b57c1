"""Sweeps and sharded evals/rollouts on a local Ray cluster: the same results as one process, a killed worker
retried from its checkpoint, and the refusals that come before any work."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from engine.core.config import ModelSpec
from engine.core.errors import RmxError
from tests.test_train import make_rollouts

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'rmx[ray]')")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    """One private two-CPU cluster for the module; every spec below reaches it through `local`."""
    from engine.recipes.lanes import RaySpec, connect

    connect(RaySpec("local"))
    yield
    ray.shutdown()


def _adapters_equal(a: str, b: str) -> bool:
    import torch
    from safetensors.torch import load_file

    left, right = load_file(f"{a}/adapter_model.safetensors"), load_file(f"{b}/adapter_model.safetensors")
    return left.keys() == right.keys() and all(torch.allclose(left[k], right[k], atol=1e-6) for k in left)


def _sweep_inputs(tiny_llama, tmp_path: Path):
    from engine.recipes.sweep import SweepSpec
    from engine.recipes.train import TrainSpec

    spec = TrainSpec(str(make_rollouts(tmp_path / "r.jsonl")), grad_accum=4, lr=1e-3, lora_r=4, lora_alpha=8,
                     max_steps=2, checkpoint_every=1)
    model = ModelSpec(str(tiny_llama), dtype="float32", device="cpu")
    sweep_spec = SweepSpec(taus="q0.5,q0.9", holdout=2, holdout_dataset="smoke", holdout_offset=10,
                           max_new_tokens=4, template="raw")
    return model, spec, sweep_spec


def test_a_sweep_on_ray_matches_one_process_and_survives_a_killed_worker(cluster, tiny_llama, tmp_path):
    from engine.recipes.lanes import RaySpec
    from engine.recipes.sweep import sweep

    model, spec, sweep_spec = _sweep_inputs(tiny_llama, tmp_path)
    alone = sweep(model, spec, sweep_spec, tmp_path / "one")
    events: list[dict] = []
    workers: dict[str, int] = {}
    killed: list[str] = []

    def emit(event: dict) -> None:
        events.append(event)
        if "ray/worker_pid" in event:
            workers[event["lane/task"]] = event["ray/worker_pid"]
        # The first τ's worker dies right after its first checkpoint (one is written every step).
        if "train/checkpoint" in event and event["step"] == 1 and event.get("sweep/tau") == "q0.5" and not killed:
            killed.append(event["lane/task"])
            os.kill(workers[event["lane/task"]], signal.SIGKILL)

    spread = sweep(model, spec, sweep_spec, tmp_path / "ray", emit=emit, ray=RaySpec("local", max_retries=2))
    assert killed == ["τ q0.5"]
    assert len({e["ray/worker_pid"] for e in events if e.get("lane/task") == "τ q0.5" and "ray/worker_pid" in e}) == 2
    assert any(e.get("train/resumed_from") == 1 and e.get("sweep/tau") == "q0.5" for e in events)  # from its checkpoint
    assert any("ray/busy" in e and e["ray/tasks"] == 2 for e in events)
    assert sorted(e["sweep/tau"] for e in events if "sweep/pass@1" in e) == ["q0.5", "q0.9"]
    assert [(r.tau, r.decision_frac, r.state, r.score) for r in spread.rows] == \
        [(r.tau, r.decision_frac, r.state, r.score) for r in alone.rows]
    for lone, remote in zip(alone.rows, spread.rows):
        assert _adapters_equal(lone.adapter, remote.adapter)


def test_a_sharded_eval_writes_what_one_process_writes(cluster, tiny_llama, tmp_path):
    from engine.recipes.evaluate import EvalSpec, evaluate
    from engine.recipes.lanes import RaySpec
    from engine.recipes.shards import evaluate_sharded

    model = ModelSpec(str(tiny_llama), dtype="float32", device="cpu")
    spec = EvalSpec(benchmarks=("smoke", "aime24"), limit=10, max_new_tokens=6, template="raw", avg_k=2)
    alone = evaluate(model, spec, tmp_path / "one")
    events: list[dict] = []
    spread = evaluate_sharded(model, spec, tmp_path / "ray", RaySpec("local", shards=2), emit=events.append)
    assert {"ray/shards": 4} in events  # two benchmarks, two shards each
    assert (tmp_path / "ray" / "items.jsonl").read_bytes() == (tmp_path / "one" / "items.jsonl").read_bytes()
    assert [(s.benchmark, s.metric, s.score, s.score_sympy) for s in spread.scores] == \
        [(s.benchmark, s.metric, s.score, s.score_sympy) for s in alone.scores]
    with pytest.raises(RmxError, match="already exists: pass --resume"):
        evaluate_sharded(model, spec, tmp_path / "ray", RaySpec("local", shards=2))
    again = evaluate_sharded(model, spec, tmp_path / "ray", RaySpec("local", shards=2), resume=True)
    assert [s.score for s in again.scores] == [s.score for s in alone.scores]


def test_sharded_rollouts_write_the_file_one_process_writes(cluster, tiny_llama, tmp_path):
    from engine.recipes.lanes import RaySpec
    from engine.recipes.rollouts import RolloutSpec, sample_rollouts
    from engine.recipes.shards import sample_rollouts_sharded

    model = ModelSpec(str(tiny_llama), dtype="float32", device="cpu")
    spec = RolloutSpec("smoke", limit=3, k=2, max_new_tokens=5, template="raw")
    alone = sample_rollouts(model, spec, tmp_path / "one.jsonl")
    spread = sample_rollouts_sharded(model, spec, tmp_path / "ray.jsonl", RaySpec("local", shards=3))
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert (spread.problems, spread.samples, spread.correct, spread.tokens) == \
        (alone.problems, alone.samples, alone.correct, alone.tokens)


def test_figure2_sharded_writes_what_one_process_writes(cluster, tiny_llama, tiny_llama_teacher, tmp_path):
    from engine.core.config import Tau
    from engine.core.data import load_problems
    from engine.core.decode import SamplingSpec
    from engine.core.models import load_pair
    from engine.recipes.experiments import read_results, run_figure2
    from engine.recipes.lanes import RaySpec
    from engine.recipes.shards import figure2_sharded

    base = ModelSpec(str(tiny_llama), dtype="float32", device="cpu")
    teacher = ModelSpec(str(tiny_llama_teacher), dtype="float32", device="cpu")
    settings = dict(modes=("base", "teacher", "oracle", "random", "gated"), tau=Tau.parse("q0.9"), template="raw",
                    sampling=SamplingSpec(greedy=True, max_new_tokens=8), batch_size=4)
    one = run_figure2(*load_pair(base, teacher), load_problems("smoke", limit=4), tmp_path / "one.jsonl", **settings)
    events: list[dict] = []
    spread = figure2_sharded(base, teacher, "smoke", 4, tmp_path / "ray.jsonl", RaySpec("local", shards=2),
                             emit=events.append, **settings)
    assert {"ray/shards": 2} in events
    alone, sharded = read_results(tmp_path / "one.jsonl"), read_results(tmp_path / "ray.jsonl")
    assert alone.keys() == sharded.keys()
    for problem, record in alone.items():
        for mode, result in record["modes"].items():
            other = dict(sharded[problem]["modes"][mode])
            # A quantile τ is resolved from entropies computed in another batch: equal to fp32 rounding.
            assert other.pop("tau", None) == pytest.approx(result.get("tau"), rel=1e-6)
            assert other == {k: v for k, v in result.items() if k != "tau"}, (problem, mode)
    assert spread.modes == one.modes and spread.touches == one.touches and spread.problems == 4


def test_table2_sharded_equals_one_process(cluster, tiny_llama, tiny_llama_teacher):
    from engine.core.config import Tau
    from engine.core.data import load_problems
    from engine.core.models import load_pair
    from engine.recipes.analysis import analyze
    from engine.recipes.lanes import RaySpec
    from engine.recipes.shards import analyze_sharded

    base = ModelSpec(str(tiny_llama), dtype="float32", device="cpu")
    teacher = ModelSpec(str(tiny_llama_teacher), dtype="float32", device="cpu")
    settings = dict(tau=Tau.parse("1.4"), template="raw", max_new_tokens=8, batch_size=4)
    alone = analyze(*load_pair(base, teacher), load_problems("smoke", limit=5), **settings)
    spread = analyze_sharded(base, teacher, "smoke", 5, RaySpec("local", shards=2), **settings)
    assert spread.to_json() == alone.to_json() and len(spread.problems) == 5


def test_a_stop_cancels_the_tasks(cluster, tiny_llama, tmp_path):
    from engine.recipes.evaluate import EvalSpec
    from engine.recipes.lanes import RaySpec
    from engine.recipes.shards import evaluate_sharded

    model = ModelSpec(str(tiny_llama), dtype="float32", device="cpu")
    spec = EvalSpec(benchmarks=("smoke",), limit=4, max_new_tokens=200, template="raw")
    seen: list[dict] = []
    with pytest.raises(RmxError, match="stopped before every task finished"):
        evaluate_sharded(model, spec, tmp_path / "ray", RaySpec("local", shards=2), emit=seen.append,
                         should_stop=lambda: any("ray/worker_pid" in e for e in seen))
    assert not (tmp_path / "ray" / "eval.json").exists()


def test_bad_addresses_are_refused_in_one_line_before_any_folder_exists(tmp_path):
    import time

    from typer.testing import CliRunner

    from rmx_tui.cli import app

    out = tmp_path / "eval"
    started = time.monotonic()
    result = CliRunner().invoke(app, ["eval", "--model", "demo", "--ray", "127.0.0.1:1", "--limit", "1",
                                      "--out", str(out)])
    assert time.monotonic() - started < 10
    assert isinstance(result.exception, RmxError)
    assert str(result.exception).startswith("cannot reach the Ray cluster at 127.0.0.1:1")
    assert not out.exists()
    result = CliRunner().invoke(app, ["eval", "--model", "demo", "--ray", "no-port", "--out", str(out)])
    assert "is not an address" in str(result.exception)


def test_a_task_asking_for_more_gpus_than_any_node_has_is_refused(cluster):
    from engine.recipes.lanes import RayLanes, RaySpec

    with pytest.raises(RmxError, match="asks for 2 GPU.*largest node .* has 0"):
        RayLanes(RaySpec("local", gpus_per_task=2))


def test_ray_missing_is_one_line_with_the_install_command(monkeypatch):
    import builtins

    from engine.recipes.lanes import RaySpec, check_ray_installed

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(RmxError, match=r"pip install 'rmx\[ray\]'"):
        check_ray_installed()
    assert replace(RaySpec("auto"), max_retries=0).max_retries == 0
