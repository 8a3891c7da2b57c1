"""The TOML pipeline, the τ sweep, stages as detached jobs, and cost accounting."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from engine.core.config import ModelSpec
from engine.core.errors import RmxError
from tests.test_train import make_rollouts

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def coin_grader(monkeypatch):
    """A grader that calls a completion right when its text has an even length: a random-weight model then
    has mixed success, which real grading of its gibberish never gives."""
    import engine.core.grading as grading

    def fake(completion, gold, timeout_s=5.0, **_):
        right = len(completion) % 2 == 0
        return grading.GradeResult("x", gold, right, "match" if right else "mismatch", "math-verify")

    monkeypatch.setattr(grading, "grade", fake)
    monkeypatch.setattr(grading, "grade_sympy", fake)


def _config(model: Path) -> dict:
    return {
        "model": {"base": str(model), "dtype": "float32"},
        "rollouts": {"dataset": "smoke", "limit": 4, "k": 4, "max_new_tokens": 8, "template": "raw"},
        "pool": {"size": 3},
        "train": {"tau": "q0.7", "grad_accum": 2, "lr": 1e-3, "lora_r": 4, "lora_alpha": 8},
        "eval": {"benchmarks": ["smoke"], "limit": 2, "max_new_tokens": 4, "template": "raw"},
    }


def test_pipeline_config_errors_name_the_file_section_and_key(tmp_path):
    from engine.recipes.pipeline import check_pipeline, load_pipeline

    good = _config(Path("m"))
    assert check_pipeline(good)["model"]["base"] == "m"
    with pytest.raises(RmxError, match=r"unknown key\(s\) kk in \[rollouts\]"):
        check_pipeline({**good, "rollouts": {"dataset": "smoke", "kk": 3}})
    with pytest.raises(RmxError, match=r"missing section\(s\) eval"):
        check_pipeline({k: v for k, v in good.items() if k != "eval"})
    with pytest.raises(RmxError, match="unknown section"):
        check_pipeline({**good, "trian": {}})
    with pytest.raises(RmxError, match="--negative"):
        check_pipeline({**good, "train": {"negative": "clipped"}})
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\nbase = 1")
    with pytest.raises(RmxError, match="broken.toml"):
        load_pipeline(broken)
    assert load_pipeline(ROOT / "examples" / "pipeline-demo.toml")["model"]["base"] == "demo"


def test_pipeline_runs_every_stage_and_resumes_finished_ones(tiny_llama, tmp_path, coin_grader):
    from engine.recipes.pipeline import run_pipeline

    events: list[dict] = []
    result = run_pipeline(_config(tiny_llama), tmp_path / "run", emit=events.append)
    assert set(result.stages) == {"rollouts", "pool", "train", "eval_base", "eval_tuned"}
    assert result.stages["pool"]["stats"]["selected"] <= 3
    assert result.stages["train"]["state"] == "done"
    assert result.adapter and (Path(result.adapter) / "adapter_model.safetensors").exists()
    assert result.comparison["runs"] == ["base", "tuned"]
    assert "## Base vs tuned" in Path(result.report).read_text()
    for stage in ("rollouts", "pool", "train", "eval_base", "eval_tuned"):
        cost = json.loads((tmp_path / "run" / stage / "cost.json").read_text())
        assert cost["stage"] == stage and cost["device"] == "cpu" and cost["seconds"] > 0
    again: list[dict] = []
    run_pipeline(_config(tiny_llama), tmp_path / "run", resume=True, emit=again.append)
    assert [e["pipeline/state"] for e in again if "pipeline/state" in e] == ["reused"] * 5


def test_sweep_trains_one_adapter_per_tau_and_keeps_the_best(tiny_llama, tmp_path):
    from engine.recipes.sweep import SweepSpec, sweep
    from engine.recipes.train import TrainSpec

    rollouts = make_rollouts(tmp_path / "r.jsonl")
    spec = TrainSpec(str(rollouts), grad_accum=4, lr=1e-3, lora_r=4, lora_alpha=8, max_steps=2)
    sweep_spec = SweepSpec(taus="q0.5,q0.9", holdout=2, holdout_dataset="smoke", holdout_offset=10, max_new_tokens=4,
                           template="raw")
    events: list[dict] = []
    result = sweep(ModelSpec(str(tiny_llama), dtype="float32"), spec, sweep_spec, tmp_path / "sweep",
                   emit=events.append)
    assert [row.tau for row in result.rows] == ["q0.5", "q0.9"]
    from rmx_tui.widgets.tau_grid import sweep_points

    grid: dict[str, dict[str, float]] = {}
    for point in sweep_points(events):  # what the TUI's τ grid makes of the run's events
        grid.setdefault(point.tau, {}).update(point.values)
    assert {tau: sorted(values) for tau, values in grid.items()} == {
        tau: ["decision_frac", "loss", "pass@1"] for tau in ("q0.5", "q0.9")}
    assert [grid[row.tau]["pass@1"] for row in result.rows] == [row.score for row in result.rows]
    assert result.rows[0].decision_frac > result.rows[1].decision_frac
    assert all(row.state == "done" and row.score is not None for row in result.rows)
    assert result.best_tau == "q0.5"  # ties keep the first τ, and a random model scores 0 on both
    assert result.holdout == "smoke[10:12]"
    assert (tmp_path / "sweep" / "base_pass" / "index.json").exists()  # one base pass for every τ
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["best_tau"] == "q0.5"
    with pytest.raises(RmxError, match="--taus"):
        SweepSpec(taus="")
    with pytest.raises(RmxError, match="names a τ twice"):
        SweepSpec(taus="1.2,1.2")
    with pytest.raises(RmxError, match="unknown device 'gpu7'"):
        SweepSpec(devices="cuda:0,gpu7")


def test_a_sweep_over_two_devices_runs_a_lane_each_and_matches_one_device(tiny_llama, tmp_path):
    from dataclasses import replace

    import torch
    from safetensors.torch import load_file

    from engine.recipes.sweep import SweepSpec, sweep, sweep_devices
    from engine.recipes.train import TrainSpec

    rollouts = make_rollouts(tmp_path / "r.jsonl")
    spec = TrainSpec(str(rollouts), grad_accum=4, lr=1e-3, lora_r=4, lora_alpha=8, max_steps=2)
    model = ModelSpec(str(tiny_llama), dtype="float32", device="cpu")
    one = SweepSpec(taus="q0.5,q0.9", holdout=2, holdout_dataset="smoke", holdout_offset=10, max_new_tokens=4,
                    template="raw")
    two = replace(one, devices=("cpu", "cpu"))
    assert sweep_devices(model, one) == ("cpu",) and sweep_devices(model, two) == ("cpu", "cpu")
    alone = sweep(model, spec, one, tmp_path / "one")
    events: list[dict] = []
    spread = sweep(model, spec, two, tmp_path / "two", emit=events.append)
    assert {"sweep/devices": "cpu,cpu"} in events
    assert sorted(e["sweep/tau"] for e in events if "sweep/pass@1" in e) == ["q0.5", "q0.9"]  # streamed from the lanes
    losses = [e for e in events if "train/loss" in e]
    assert len(losses) == 4 and sorted(e["sweep/tau"] for e in losses) == ["q0.5", "q0.5", "q0.9", "q0.9"]
    assert (tmp_path / "two" / "base_pass-0").is_dir() and (tmp_path / "two" / "base_pass-1").is_dir()
    assert [(r.tau, r.decision_frac, r.state, r.score) for r in spread.rows] == \
        [(r.tau, r.decision_frac, r.state, r.score) for r in alone.rows]
    for lone, lane in zip(alone.rows, spread.rows):
        a, b = load_file(f"{lone.adapter}/adapter_model.safetensors"), load_file(f"{lane.adapter}/adapter_model.safetensors")
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_train_runs_as_a_detached_job_and_its_cost_is_reported(tiny_llama, tmp_path):
    from dataclasses import asdict

    from typer.testing import CliRunner

    import engine.jobs.kinds  # noqa: F401  (registers the job kinds)
    from engine.jobs.store import find_run, job_outputs, read_status, submit_job
    from engine.recipes.train import TrainSpec
    from rmx_tui.cli import app

    rollouts = make_rollouts(tmp_path / "r.jsonl")
    spec = TrainSpec(str(rollouts), tau="q0.7", grad_accum=4, lr=1e-3, lora_r=4, lora_alpha=8)
    with pytest.raises(RmxError, match="--lora-r"):
        submit_job("train", {"model": asdict(ModelSpec(str(tiny_llama))), "train": {**asdict(spec), "lora_r": 0}})
    status = submit_job("train", {"model": asdict(ModelSpec(str(tiny_llama), dtype="float32")), "train": asdict(spec)})
    run_dir = find_run(status.id)
    deadline = time.time() + 240
    while read_status(run_dir).active and time.time() < deadline:
        time.sleep(0.2)
    final = read_status(run_dir)
    assert final.state == "done", (final.error, (run_dir / "job.log").read_text()[-2000:])
    assert (final.step, final.total) == (6, 6)
    assert (run_dir / "artifacts" / "adapter" / "adapter_model.safetensors").exists()
    assert job_outputs(status.id)["adapter"] == str(run_dir / "artifacts" / "adapter")  # listed in result.json
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert sum("train/loss" in e for e in events) == 6
    prices = tmp_path / "prices.toml"
    prices.write_text('cpu = 0.5\n')
    shown = CliRunner().invoke(app, ["runs", "cost", status.id, "--prices", str(prices), "--json"])
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.stdout)
    assert [line["stage"] for line in report["lines"]] == ["train"]
    assert report["usd"] == pytest.approx(report["lines"][0]["device_seconds"] / 3600 * 0.5)


def test_price_table_matches_the_most_specific_device_kind(tmp_path):
    from engine.recipes.costs import load_prices, price_per_hour

    prices = load_prices(None)
    assert price_per_hour("NVIDIA H100 80GB HBM3", prices) == 2.49
    assert price_per_hour("NVIDIA H100-SXM5-80GB", prices) == 2.69
    assert price_per_hour("NVIDIA RTX PRO 6000 Blackwell", prices) == 1.89
    assert price_per_hour("cpu", prices) is None
    bad = tmp_path / "p.json"
    bad.write_text('{"h100": "cheap"}')
    with pytest.raises(RmxError, match="USD per hour"):
        load_prices(bad)


def test_topk_kl_equals_a_float64_reference():
    import numpy as np
    import torch

    from engine.recipes.distill import topk_kl

    generator = torch.Generator().manual_seed(3)
    student = torch.randn(4, 10, generator=generator)
    teacher_full = torch.randn(4, 10, generator=generator)
    values, ids = torch.topk(teacher_full, 3, dim=-1)
    got = topk_kl(student, ids, values)
    s, v, i = student.double().numpy(), values.double().numpy(), ids.numpy()
    s_logp = s - np.log(np.exp(s).sum(1, keepdims=True))
    t_logp = v - np.log(np.exp(v).sum(1, keepdims=True))
    want = (np.exp(t_logp) * (t_logp - np.take_along_axis(s_logp, i, 1))).sum(1)
    assert got.double().numpy() == pytest.approx(want, rel=1e-5)


def test_topk_kl_gradient_equals_a_float64_autograd_reference():
    import torch

    from engine.recipes.distill import topk_kl

    generator = torch.Generator().manual_seed(4)
    student = torch.randn(5, 12, generator=generator)
    values, ids = torch.topk(torch.randn(5, 12, generator=generator), 4, dim=-1)
    weights = torch.rand(5, generator=generator)  # an uneven upstream gradient per row
    got = student.clone().requires_grad_()
    (topk_kl(got, ids, values) * weights).sum().backward()
    want = student.double().requires_grad_()
    t_logp = torch.log_softmax(values.double(), -1)
    kl = (t_logp.exp() * (t_logp - torch.log_softmax(want, -1).gather(1, ids))).sum(-1)
    (kl * weights.double()).sum().backward()
    assert torch.allclose(got.grad.double(), want.grad, atol=1e-6)


def test_distill_pulls_the_student_toward_the_teacher(tiny_llama, tiny_llama_teacher, tmp_path):
    from engine.recipes.distill import DistillSpec, distill
    from engine.core.models import load_model

    rollouts = make_rollouts(tmp_path / "r.jsonl", problems=2, k=2)
    spec = DistillSpec(str(rollouts), top_k=16, epochs=6, batch_size=1, grad_accum=1, lr=2e-2, warmup_ratio=0.0,
                       lora_r=4, lora_alpha=8)
    kls: list[float] = []
    result = distill(ModelSpec(str(tiny_llama), dtype="float32"), ModelSpec(str(tiny_llama_teacher), dtype="float32"),
                     spec, tmp_path / "out", emit=lambda e: kls.append(e["distill/kl"]) if "distill/kl" in e else None)
    assert result.steps == 24 and result.positions > 0
    assert sum(kls[-4:]) < 0.8 * sum(kls[:4])
    assert load_model(ModelSpec(str(tiny_llama), adapter=result.adapter)).adapter_name == "adapter"


def test_a_stopped_distillation_resumes_to_a_bit_identical_adapter(tiny_llama, tiny_llama_teacher, tmp_path):
    from engine.recipes.distill import DistillSpec, distill

    rollouts = make_rollouts(tmp_path / "r.jsonl", problems=2, k=2)
    spec = DistillSpec(str(rollouts), top_k=16, epochs=2, batch_size=1, grad_accum=1, lr=2e-2, warmup_ratio=0.25,
                       lora_r=4, lora_alpha=8, lora_dropout=0.1, checkpoint_every=3)
    base, teacher = ModelSpec(str(tiny_llama), dtype="float32"), ModelSpec(str(tiny_llama_teacher), dtype="float32")
    whole = distill(base, teacher, spec, tmp_path / "whole")
    polls = iter(range(100))
    with pytest.raises(RmxError, match="stopped at step 5 of 8: resume"):
        distill(base, teacher, spec, tmp_path / "cut", should_stop=lambda: next(polls) >= 4)
    assert not (tmp_path / "cut" / "adapter").exists()
    with pytest.raises(RmxError, match="already holds a distillation"):
        distill(base, teacher, spec, tmp_path / "cut")
    events: list[dict] = []
    resumed = distill(base, teacher, spec, tmp_path / "cut", resume=True, emit=events.append)
    assert {"distill/phase": "teacher", "distill/teacher_cache": "reused"} in events
    assert {"distill/resumed_from": 5} in events
    assert [e["distill/step"] for e in events if "distill/step" in e] == [6, 7, 8]
    assert resumed.final_kl == whole.final_kl and resumed.steps == whole.steps == 8
    weights = "adapter_model.safetensors"
    assert (tmp_path / "cut" / "adapter" / weights).read_bytes() == (tmp_path / "whole" / "adapter" / weights).read_bytes()
    assert distill(base, teacher, spec, tmp_path / "cut", resume=True).adapter == resumed.adapter  # finished: reused
