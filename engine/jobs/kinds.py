"""The job kinds that run a recipe in a detached process: rollouts, pool, train, sweep, eval, distill, pipeline."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

from engine.core.errors import RmxError
from engine.jobs.foreground import output_of
from engine.jobs.store import RunContext, register_job_kind, write_result
from engine.recipes.costs import Meter
from engine.recipes.distill import DistillSpec, distill
from engine.recipes.evaluate import RESULT_FILE as EVAL_FILE, TABLE_FILE
from engine.recipes.lanes import RaySpec, check_ray_installed
from engine.recipes.pipeline import build_spec, check_trained, check_pipeline, run_pipeline
from engine.recipes.schema import build_table
from engine.recipes.pool import PoolSpec, require_signal, write_pool
from engine.core.records import read_rollouts
from engine.recipes.shards import evaluate_on, sample_rollouts_on
from engine.recipes.sweep import SWEEP_FILE, sweep
from engine.recipes.train import TrainSpec, train
from engine.recipes.trackers import Mirror, report_spec_of


def outputs_of(kind: str, result: Any, out: Path) -> dict[str, str | None]:
    """What a finished `kind` run made (its result, written to `out`): the outputs its result.json lists, which
    the TUI and CLI read instead of guessing paths inside run folders."""
    if kind in ("rollouts", "pool"):
        return {kind: result.path}
    if kind == "train":
        return {"adapter": result.adapter, "checkpoint": result.last_checkpoint}
    if kind == "sweep":
        return {"adapter": result.best_adapter, "sweep": str(out / SWEEP_FILE)}
    if kind == "eval":
        return {"report": str(out / TABLE_FILE), "results": str(out / EVAL_FILE)}
    if kind == "distill":
        return {"adapter": result.adapter}
    if kind == "pipeline":
        stages = result.stages
        return {"rollouts": (stages.get("rollouts") or {}).get("path"), "pool": (stages.get("pool") or {}).get("path"),
                "adapter": result.adapter, "report": result.report}
    raise RmxError(f"no outputs known for job kind '{kind}'")


def record_result(kind: str, result: Any, artifacts: Path, out: str | Path) -> None:
    """Write artifacts/result.json for a `kind` run that wrote to `out` (a foreground command's own output)."""
    write_result(artifacts, result.to_json(), outputs_of(kind, result, Path(out).expanduser().resolve()))


def _job_config(config: dict[str, Any], *names: str) -> list[Any]:
    """Build each named spec of a job config; a bad config is one RmxError line before any process starts."""
    built = []
    for name in names:
        values = config.get(name)
        if not isinstance(values, dict):
            raise RmxError(f"job config needs a '{name}' object")
        built.append(build_table(name, values))
    return built


def _validator(*names: str) -> Callable[[dict], None]:
    def validate(config: dict[str, Any]) -> None:
        report_spec_of(config)  # a tracker that is not installed is refused before any work
        for spec in _job_config(config, *names):
            # Reading the rollouts here refuses a job with nothing to train on before its run dir exists.
            if isinstance(spec, (PoolSpec, TrainSpec)):
                require_signal(read_rollouts(spec.rollouts))
            elif isinstance(spec, DistillSpec):
                read_rollouts(spec.rollouts)
        ray_of(config)

    return validate


def ray_of(config: dict[str, Any]) -> RaySpec | None:
    """The job's Ray cluster, from its optional 'ray' object; None runs it in the job's own process."""
    values = config.get("ray")
    if values is None:
        return None
    if not isinstance(values, dict):
        raise RmxError("job config 'ray' must be an object such as {\"address\": \"auto\"}")
    try:
        spec = build_spec(RaySpec, values)
    except TypeError as error:
        raise RmxError(f"job config 'ray': {error}") from None
    check_ray_installed()
    return spec


def _check_pipeline_job(config: dict[str, Any]) -> None:
    check_pipeline(config.get("pipeline") or {}, "job config")
    report_spec_of(config)


def _mirrored(kind: str) -> Callable[[Callable[[dict, RunContext], None]], Callable[[dict, RunContext], None]]:
    """The job, with its events also mirrored to the trackers its config's `report` names."""

    def wrap(fn: Callable[[dict, RunContext], None]) -> Callable[[dict, RunContext], None]:
        @functools.wraps(fn)
        def job(config: dict[str, Any], run: RunContext) -> None:
            spec = report_spec_of(config)
            if spec is None:
                fn(config, run)
                return
            mirror = Mirror(spec, run.run_dir.name, run.run_dir, config, kind)
            emit = run.emit

            def mirrored(event: dict[str, Any]) -> None:
                emit(event)
                mirror.log(run.last_event or event)

            run.emit = mirrored  # type: ignore[method-assign]
            try:
                fn(config, run)
            finally:
                run.emit = emit  # type: ignore[method-assign]
                mirror.close()

        return job

    return wrap


@_mirrored("rollouts")
def rollouts_job(config: dict[str, Any], run: RunContext) -> None:
    model, spec = _job_config(config, "model", "rollouts")
    with Meter("rollouts", run.artifacts):
        result = sample_rollouts_on(ray_of(config), model, spec, output_of(config, run, "rollouts.jsonl"),
                                    resume=run.resumed, emit=run.emit, should_stop=run.should_stop,
                                    progress=run.set_progress)
    write_result(run.artifacts, result.to_json(), outputs_of("rollouts", result, output_of(config, run)))


@_mirrored("pool")
def pool_job(config: dict[str, Any], run: RunContext) -> None:
    (spec,) = _job_config(config, "pool")
    with Meter("pool", run.artifacts):
        result = write_pool(spec, output_of(config, run, "pool.jsonl"))
    write_result(run.artifacts, result.to_json(), outputs_of("pool", result, output_of(config, run)))


@_mirrored("train")
def train_job(config: dict[str, Any], run: RunContext) -> None:
    model, spec = _job_config(config, "model", "train")
    with Meter("train", run.artifacts):
        result = train(model, spec, output_of(config, run), resume=run.resumed, emit=run.emit,
                       should_stop=run.should_stop, progress=run.set_progress)
    write_result(run.artifacts, result.to_json(), outputs_of("train", result, output_of(config, run)))
    if result.state == "diverged":
        check_trained(result)


@_mirrored("sweep")
def sweep_job(config: dict[str, Any], run: RunContext) -> None:
    model, spec, sweep_spec = _job_config(config, "model", "train", "sweep")
    with Meter("sweep", run.artifacts):
        result = sweep(model, spec, sweep_spec, output_of(config, run), resume=run.resumed, emit=run.emit,
                       should_stop=run.should_stop, ray=ray_of(config))
    write_result(run.artifacts, result.to_json(), outputs_of("sweep", result, output_of(config, run)))


@_mirrored("eval")
def eval_job(config: dict[str, Any], run: RunContext) -> None:
    model, spec = _job_config(config, "model", "eval")
    with Meter("eval", run.artifacts):
        result = evaluate_on(ray_of(config), model, spec, output_of(config, run), resume=run.resumed,
                             emit=run.emit, should_stop=run.should_stop, progress=run.set_progress)
    write_result(run.artifacts, result.to_json(), outputs_of("eval", result, output_of(config, run)))


@_mirrored("distill")
def distill_job(config: dict[str, Any], run: RunContext) -> None:
    model, teacher, spec = _job_config(config, "model", "teacher", "distill")
    with Meter("distill", run.artifacts):
        result = distill(model, teacher, spec, output_of(config, run), resume=run.resumed, emit=run.emit,
                         should_stop=run.should_stop, progress=run.set_progress)
    write_result(run.artifacts, result.to_json(), outputs_of("distill", result, output_of(config, run)))


@_mirrored("pipeline")
def pipeline_job(config: dict[str, Any], run: RunContext) -> None:
    checked = check_pipeline(config.get("pipeline") or {}, "job config")
    result = run_pipeline(checked, output_of(config, run), resume=run.resumed, emit=run.emit,
                          should_stop=run.should_stop)
    write_result(run.artifacts, result.to_json(), outputs_of("pipeline", result, output_of(config, run)))


register_job_kind("rollouts", rollouts_job, _validator("model", "rollouts"))
register_job_kind("pool", pool_job, _validator("pool"))
register_job_kind("train", train_job, _validator("model", "train"))
register_job_kind("sweep", sweep_job, _validator("model", "train", "sweep"))
register_job_kind("eval", eval_job, _validator("model", "eval"))
register_job_kind("distill", distill_job, _validator("model", "teacher", "distill"))
register_job_kind("pipeline", pipeline_job, _check_pipeline_job)
