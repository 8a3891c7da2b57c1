"""Stages as jobs, the τ sweep, and `rmx pipeline`: rollouts → pool → train (or sweep) → eval from one TOML file."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from engine.core.config import ModelSpec
from engine.recipes.costs import Meter
from engine.core.errors import Diverged, RmxError, Stopped
from engine.core.io import atomic_write, atomic_write_json
from engine.recipes.evaluate import EvalResult, EvalSpec, compare, comparison_table
from engine.recipes.pool import PoolSpec, write_pool
from engine.recipes.rollouts import RolloutSpec
from engine.recipes.schema import build_table
from engine.recipes.lanes import RaySpec
from engine.recipes.shards import evaluate_on, sample_rollouts_on
from engine.recipes.sweep import SweepSpec, sweep
from engine.recipes.train import TrainResult, TrainSpec, train

STAGE_FILE = "stage.json"
"""Written into a stage's folder when it finishes: a resumed pipeline skips stages that have one."""


# --- the TOML pipeline -------------------------------------------------------------------------------------

SECTIONS = ("model", "rollouts", "pool", "train", "sweep", "eval", "ray", "report")
"""The tables a pipeline TOML may have; each builds its spec of the job-config schema (engine.recipes.schema)."""
RUNTIME_FIELDS = {"pool": {"rollouts"}, "train": {"rollouts"}}
"""Fields the pipeline fills in itself: each stage reads the file the one before it wrote."""
REQUIRED = ("model", "rollouts", "train", "eval")


def _model_values(values: dict[str, Any]) -> dict[str, Any]:
    """[model] says `base = …`, as the CLI's --base does; ModelSpec calls it `source`."""
    renamed = {("source" if k == "base" else k): v for k, v in values.items()}
    if "base" in values and "source" in values:
        raise RmxError("[model] gives both base and source: use base")
    return renamed


def _build(section: str, values: dict[str, Any], where: str):
    if section == "model":
        values = _model_values(values)
    runtime = {name: "<from the previous stage>" for name in RUNTIME_FIELDS.get(section, ())}
    return build_table(section, values, where, runtime)


def load_pipeline(path: str | Path) -> dict[str, dict[str, Any]]:
    """The sections of a pipeline TOML file, each checked against its spec (so errors come before any work)."""
    file = Path(path)
    if not file.is_file():
        raise RmxError(f"pipeline config not found: {path}")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise RmxError(f"{path}: {error}") from None
    return check_pipeline(data, str(path))


def check_pipeline(data: dict[str, Any], where: str = "pipeline config") -> dict[str, dict[str, Any]]:
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise RmxError(f"{where}: unknown section(s) {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
    missing = [s for s in REQUIRED if s not in data]
    if missing:
        raise RmxError(f"{where}: missing section(s) {', '.join(missing)}")
    for section, values in data.items():
        if not isinstance(values, dict):
            raise RmxError(f"{where}: [{section}] must be a table")
        _build(section, values, where)
    return {k: dict(v) for k, v in data.items()}


def build_spec(cls, values: dict[str, Any], **runtime):
    merged = {**values, **runtime}
    for key in ("benchmarks", "avg_benchmarks", "taus"):
        if isinstance(merged.get(key), list):
            merged[key] = tuple(merged[key])
    return cls(**merged)


@dataclass(frozen=True)
class PipelineResult:
    """Every stage's result, the adapter that came out, and base vs tuned on the eval benchmarks."""

    stages: dict[str, Any]
    adapter: str | None
    comparison: dict[str, Any] | None
    report: str
    """The markdown report's path."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _stage(name: str, out: Path, resume: bool, run: Callable[[Path], Any], emit: Callable[[dict], None]) -> Any:
    """Run one stage into out/<name>/ (metered), or reuse its recorded result on resume."""
    folder = out / name
    marker = folder / STAGE_FILE
    if resume and marker.exists():
        emit({"pipeline/stage": name, "pipeline/state": "reused"})
        return json.loads(marker.read_text(encoding="utf-8"))
    emit({"pipeline/stage": name, "pipeline/state": "running"})
    with Meter(name, folder):
        result = run(folder)
    data = result.to_json() if hasattr(result, "to_json") else result
    atomic_write_json(marker, data)
    emit({"pipeline/stage": name, "pipeline/state": "done"})
    return data


def run_pipeline(config: dict[str, dict[str, Any]], out: str | Path, *, resume: bool = False,
                 emit: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None
                 ) -> PipelineResult:
    """Run every stage of a checked config into `out`; with `resume`, finished stages are kept."""
    emit = emit or (lambda event: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = build_spec(ModelSpec, _model_values(config["model"]))
    ray = build_spec(RaySpec, config["ray"]) if "ray" in config else None
    stages: dict[str, Any] = {}

    def stopped() -> bool:
        return should_stop is not None and should_stop()

    def rollouts_stage(folder: Path):
        return sample_rollouts_on(ray, model, build_spec(RolloutSpec, config["rollouts"]), folder / "rollouts.jsonl",
                                  resume=resume, emit=emit, should_stop=should_stop)

    stages["rollouts"] = _stage("rollouts", out, resume, rollouts_stage, emit)
    if stopped():
        raise Stopped("pipeline stopped after the rollouts stage: resume it to go on")
    stages["pool"] = _stage("pool", out, resume, lambda folder: write_pool(
        build_spec(PoolSpec, config.get("pool", {}), rollouts=stages["rollouts"]["path"]), folder / "pool.jsonl"), emit)
    train_spec = build_spec(TrainSpec, config["train"], rollouts=stages["pool"]["path"])
    if "sweep" in config:
        sweep_spec = build_spec(SweepSpec, config["sweep"])
        stages["sweep"] = _stage("sweep", out, resume, lambda folder: sweep(
            model, train_spec, sweep_spec, folder, resume=resume, emit=emit, should_stop=should_stop, ray=ray),
            emit)
        adapter = stages["sweep"]["best_adapter"]
    else:
        stages["train"] = _stage("train", out, resume, lambda folder: check_trained(train(
            model, train_spec, folder, resume=resume, emit=emit, should_stop=should_stop)), emit)
        adapter = stages["train"]["adapter"]
    if stopped():
        raise Stopped("pipeline stopped after training: resume it to go on")
    eval_spec = build_spec(EvalSpec, config["eval"])
    stages["eval_base"] = _stage("eval_base", out, resume, lambda folder: evaluate_on(
        ray, model, eval_spec, folder, resume=resume, emit=emit, should_stop=should_stop), emit)
    comparison = None
    if adapter is not None:
        stages["eval_tuned"] = _stage("eval_tuned", out, resume, lambda folder: evaluate_on(
            ray, replace(model, adapter=adapter), eval_spec, folder, resume=resume, emit=emit,
            should_stop=should_stop), emit)
        comparison = compare([("base", EvalResult.from_json(stages["eval_base"])),
                              ("tuned", EvalResult.from_json(stages["eval_tuned"]))])
    report = out / "report.md"
    atomic_write(report, _report(stages, adapter, comparison))
    result = PipelineResult(stages, adapter, comparison.to_json() if comparison else None, str(report))
    atomic_write_json(out / "pipeline.json", result.to_json())
    return result


def check_trained(result: TrainResult) -> TrainResult:
    if result.state == "diverged":
        raise Diverged(f"training diverged at step {result.step}: {result.reason} "
                       f"(last good checkpoint: {result.last_checkpoint})")
    if result.state == "stopped":
        raise Stopped(f"training stopped at step {result.step} of {result.total}: resume to finish it")
    if result.state != "done":
        raise RmxError(f"training {result.state} at step {result.step} of {result.total}: resume to finish it")
    return result


def _report(stages: dict[str, Any], adapter: str | None, comparison) -> str:
    rollouts, pool = stages["rollouts"], stages["pool"]["stats"]
    lines = ["# rmx pipeline", "",
             f"- rollouts: {rollouts['problems']} problems, {rollouts['samples']} samples, "
             f"{rollouts['mixed']} with mixed success, {rollouts['tok_s']:.1f} tok/s",
             f"- pool: {pool['selected']} problems, {pool['rollouts']} rollouts"]
    if "train" in stages:
        t = stages["train"]
        lines.append(f"- train: {t['step']} steps on {t['sequences']} sequences, τ {t['tau_correct']:.3g} nats, "
                     f"{100 * t['decision_frac']:.1f}% decision points, {t['tok_s']:.0f} tok/s")
    if "sweep" in stages:
        for row in stages["sweep"]["rows"]:
            score = "–" if row["score"] is None else f"{row['score']:.3f}"
            lines.append(f"- sweep τ {row['tau']}: holdout {score} ({row['state']}, "
                         f"{100 * row['decision_frac']:.1f}% decision points)")
    lines.append(f"- adapter: {adapter or 'none'}")
    lines += ["", "## Base vs tuned", ""]
    lines.append(comparison_table(comparison) if comparison else "No adapter came out of training.\n")
    return "\n".join(lines)


# --- job kinds ----------------------------------------------------------------------------------------------
