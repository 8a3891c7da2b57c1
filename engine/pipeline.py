"""Stages as jobs, the τ sweep, and `rmx pipeline`: rollouts → pool → train (or sweep) → eval from one TOML file."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

from engine.config import ModelSpec
from engine.costs import Meter
from engine.distill import DistillSpec, distill
from engine.errors import RmxError
from engine.evaluate import EvalResult, EvalSpec, compare, comparison_table, evaluate
from engine.jobs import Diverged, RunContext, register_job_kind
from engine.pool import PoolSpec, require_signal, write_pool
from engine.rollouts import RolloutSpec, read_rollouts, sample_rollouts
from engine.sweep import SweepSpec, sweep
from engine.train import TrainResult, TrainSpec, train

STAGE_FILE = "stage.json"
"""Written into a stage's folder when it finishes: a resumed pipeline skips stages that have one."""


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


# --- the TOML pipeline -------------------------------------------------------------------------------------

SECTIONS: dict[str, type] = {"model": ModelSpec, "rollouts": RolloutSpec, "pool": PoolSpec, "train": TrainSpec,
                             "sweep": SweepSpec, "eval": EvalSpec}
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
    cls = SECTIONS[section]
    if section == "model":
        values = _model_values(values)
    known = {f.name for f in fields(cls)} - RUNTIME_FIELDS.get(section, set())
    unknown = sorted(set(values) - known)
    if unknown:
        raise RmxError(f"{where}: unknown key(s) {', '.join(unknown)} in [{section}] (known: {', '.join(sorted(known))})")
    filled = dict(values)
    for name in RUNTIME_FIELDS.get(section, ()):
        filled[name] = "<from the previous stage>"
    for key in ("benchmarks", "avg_benchmarks", "taus"):
        if isinstance(filled.get(key), list):
            filled[key] = tuple(filled[key])
    try:
        return cls(**filled)
    except TypeError as error:
        raise RmxError(f"{where}: [{section}]: {error}") from None


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


def _spec(cls, values: dict[str, Any], **runtime):
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
    _write_json(marker, data)
    emit({"pipeline/stage": name, "pipeline/state": "done"})
    return data


def run_pipeline(config: dict[str, dict[str, Any]], out: str | Path, *, resume: bool = False,
                 emit: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None
                 ) -> PipelineResult:
    """Run every stage of a checked config into `out`; with `resume`, finished stages are kept."""
    emit = emit or (lambda event: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = _spec(ModelSpec, _model_values(config["model"]))
    stages: dict[str, Any] = {}

    def stopped() -> bool:
        return should_stop is not None and should_stop()

    def rollouts_stage(folder: Path):
        return sample_rollouts(model, _spec(RolloutSpec, config["rollouts"]), folder / "rollouts.jsonl",
                               resume=resume, emit=emit, should_stop=should_stop)

    stages["rollouts"] = _stage("rollouts", out, resume, rollouts_stage, emit)
    if stopped():
        raise RmxError("pipeline stopped after the rollouts stage: resume it to go on")
    stages["pool"] = _stage("pool", out, resume, lambda folder: write_pool(
        _spec(PoolSpec, config.get("pool", {}), rollouts=stages["rollouts"]["path"]), folder / "pool.jsonl"), emit)
    train_spec = _spec(TrainSpec, config["train"], rollouts=stages["pool"]["path"])
    if "sweep" in config:
        sweep_spec = _spec(SweepSpec, config["sweep"])
        stages["sweep"] = _stage("sweep", out, resume, lambda folder: sweep(
            model, train_spec, sweep_spec, folder, resume=resume, emit=emit, should_stop=should_stop), emit)
        adapter = stages["sweep"]["best_adapter"]
    else:
        stages["train"] = _stage("train", out, resume, lambda folder: _trained(train(
            model, train_spec, folder, resume=resume, emit=emit, should_stop=should_stop)), emit)
        adapter = stages["train"]["adapter"]
    if stopped():
        raise RmxError("pipeline stopped after training: resume it to go on")
    eval_spec = _spec(EvalSpec, config["eval"])
    stages["eval_base"] = _stage("eval_base", out, resume, lambda folder: evaluate(
        model, eval_spec, folder, resume=resume, emit=emit, should_stop=should_stop), emit)
    comparison = None
    if adapter is not None:
        stages["eval_tuned"] = _stage("eval_tuned", out, resume, lambda folder: evaluate(
            replace(model, adapter=adapter), eval_spec, folder, resume=resume, emit=emit, should_stop=should_stop),
            emit)
        comparison = compare([("base", EvalResult.from_json(stages["eval_base"])),
                              ("tuned", EvalResult.from_json(stages["eval_tuned"]))])
    report = out / "report.md"
    _write_text(report, _report(stages, adapter, comparison))
    result = PipelineResult(stages, adapter, comparison.to_json() if comparison else None, str(report))
    _write_json(out / "pipeline.json", result.to_json())
    return result


def _trained(result: TrainResult) -> TrainResult:
    if result.state == "diverged":
        raise Diverged(f"training diverged at step {result.step}: {result.reason} "
                       f"(last good checkpoint: {result.last_checkpoint})")
    if result.state != "done":
        raise RmxError(f"training {result.state} at step {result.step} of {result.total}: resume to finish it")
    return result


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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


def _job_config(config: dict[str, Any], *names: str) -> list[Any]:
    """Build each named spec of a job config; a bad config is one RmxError line before any process starts."""
    built = []
    for name in names:
        cls = {"model": ModelSpec, "teacher": ModelSpec, "rollouts": RolloutSpec, "pool": PoolSpec,
               "train": TrainSpec, "sweep": SweepSpec, "eval": EvalSpec, "distill": DistillSpec}[name]
        values = config.get(name)
        if not isinstance(values, dict):
            raise RmxError(f"job config needs a '{name}' object")
        try:
            built.append(_spec(cls, values))
        except TypeError as error:
            raise RmxError(f"job config '{name}': {error}") from None
    return built


def _validator(*names: str) -> Callable[[dict], None]:
    def validate(config: dict[str, Any]) -> None:
        for spec in _job_config(config, *names):
            # Reading the rollouts here refuses a job with nothing to train on before its run dir exists.
            if isinstance(spec, (PoolSpec, TrainSpec)):
                require_signal(read_rollouts(spec.rollouts))
            elif isinstance(spec, DistillSpec):
                read_rollouts(spec.rollouts)

    return validate


def _check_pipeline_job(config: dict[str, Any]) -> None:
    check_pipeline(config.get("pipeline") or {}, "job config")


def rollouts_job(config: dict[str, Any], run: RunContext) -> None:
    model, spec = _job_config(config, "model", "rollouts")
    with Meter("rollouts", run.artifacts):
        result = sample_rollouts(model, spec, run.artifacts / "rollouts.jsonl", resume=run.resumed,
                                 emit=run.emit, should_stop=run.should_stop, progress=run.set_progress)
    _write_json(run.artifacts / "result.json", result.to_json())


def pool_job(config: dict[str, Any], run: RunContext) -> None:
    (spec,) = _job_config(config, "pool")
    with Meter("pool", run.artifacts):
        result = write_pool(spec, run.artifacts / "pool.jsonl")
    _write_json(run.artifacts / "result.json", result.to_json())


def train_job(config: dict[str, Any], run: RunContext) -> None:
    model, spec = _job_config(config, "model", "train")
    with Meter("train", run.artifacts):
        result = train(model, spec, run.artifacts, resume=run.resumed, emit=run.emit,
                       should_stop=run.should_stop, progress=run.set_progress)
    _write_json(run.artifacts / "result.json", result.to_json())
    if result.state == "diverged":
        _trained(result)


def sweep_job(config: dict[str, Any], run: RunContext) -> None:
    model, spec, sweep_spec = _job_config(config, "model", "train", "sweep")
    with Meter("sweep", run.artifacts):
        result = sweep(model, spec, sweep_spec, run.artifacts, resume=run.resumed, emit=run.emit,
                       should_stop=run.should_stop)
    _write_json(run.artifacts / "result.json", result.to_json())


def eval_job(config: dict[str, Any], run: RunContext) -> None:
    model, spec = _job_config(config, "model", "eval")
    with Meter("eval", run.artifacts):
        evaluate(model, spec, run.artifacts, resume=run.resumed, emit=run.emit, should_stop=run.should_stop,
                 progress=run.set_progress)


def distill_job(config: dict[str, Any], run: RunContext) -> None:
    model, teacher, spec = _job_config(config, "model", "teacher", "distill")
    with Meter("distill", run.artifacts):
        result = distill(model, teacher, spec, run.artifacts, resume=run.resumed, emit=run.emit,
                         should_stop=run.should_stop, progress=run.set_progress)
    _write_json(run.artifacts / "result.json", result.to_json())


def pipeline_job(config: dict[str, Any], run: RunContext) -> None:
    checked = check_pipeline(config.get("pipeline") or {}, "job config")
    run_pipeline(checked, run.artifacts, resume=run.resumed, emit=run.emit, should_stop=run.should_stop)


register_job_kind("rollouts", rollouts_job, _validator("model", "rollouts"))
register_job_kind("pool", pool_job, _validator("pool"))
register_job_kind("train", train_job, _validator("model", "train"))
register_job_kind("sweep", sweep_job, _validator("model", "train", "sweep"))
register_job_kind("eval", eval_job, _validator("model", "eval"))
register_job_kind("distill", distill_job, _validator("model", "teacher", "distill"))
register_job_kind("pipeline", pipeline_job, _check_pipeline_job)
