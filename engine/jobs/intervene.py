"""The `intervene` job kind: the Figure 2 runner (engine.recipes.experiments.run_figure2) as a detached, resumable job.

Config (JSON):
    base        ModelSpec fields: {"source": ..., "adapter", "dtype", "device", "revision", "trust_remote_code"}
    teacher     ModelSpec fields, or null (then only the base mode can run)
    dataset     a bundled benchmark name, a .jsonl/.json path, or hf:NAME[:split]
    limit       only the first N problems (null: all)
    modes       a list of base, teacher, oracle, random, gated (default: all five)
    tau         the gate's τ: nats ("1.2") or a quantile ("q0.97"); default the paper's 1.2
    template    qwen, qwen3, mistral, r1-distill, chat, raw or auto (default auto)
    sampling    SamplingSpec fields (default: greedy, 512 new tokens)
    out         an absolute path for the per-problem JSON lines (default: the run's artifacts/figure2.jsonl)
    batch_size  rows decoded together, or null (default) for as many as fit in free memory

Events are the runner's own (`intervene/done`, `intervene/total`, `intervene/pass@1/<mode>`, ...), one per
problem. A cancel stops decoding after the current step: problems in flight leave their finished modes as
partial lines, and a resumed run runs only the modes missing from the results file.
At the end (a cancel included) `artifacts/summary.json` holds Figure 2's bars (Figure2.to_json) over the
problems finished so far, plus `total` and `complete`; `artifacts/result.json` holds the same with `outputs`
(figure2: the results file, summary: summary.json), as every job kind's does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from engine.core.config import ModelSpec, Tau
from engine.core.decode import SamplingSpec
from engine.core.errors import RmxError
from engine.recipes.lanes import RaySpec
from engine.recipes.experiments import FIGURE2_MODES, NEEDS_TEACHER, PAPER_TAU
from engine.jobs.store import RunContext, register_job_kind, write_json_atomic, write_result
from engine.core.prompts import TEMPLATES

KIND = "intervene"
KEYS = ("base", "teacher", "dataset", "limit", "modes", "tau", "template", "sampling", "out", "batch_size", "ray")
RESULTS = "figure2.jsonl"
SUMMARY = "summary.json"


@dataclass(frozen=True)
class Plan:
    """A checked config."""

    base: ModelSpec
    teacher: ModelSpec | None
    dataset: str
    limit: int | None
    modes: tuple[str, ...]
    tau: Tau | None
    template: str | None
    sampling: SamplingSpec
    out: str | None
    batch_size: int | None = None
    ray: RaySpec | None = None
    """The Ray cluster the problems are sharded over; None runs them in the job's process."""


def _model(value: Any, name: str) -> ModelSpec:
    if isinstance(value, str):
        value = {"source": value}
    if not isinstance(value, dict):
        raise RmxError(f"intervene: {name} must be an object of model fields such as {{\"source\": \"demo\"}}")
    known = {f.name for f in fields(ModelSpec)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise RmxError(f"intervene: unknown {name} fields {unknown}: use {', '.join(sorted(known))}")
    if "source" not in value:
        raise RmxError(f"intervene: {name} needs a source (a hub id, a folder, a .gguf file or 'demo')")
    return ModelSpec(**value)


def _sampling(value: Any) -> SamplingSpec:
    if value is None:
        return SamplingSpec()
    if not isinstance(value, dict):
        raise RmxError("intervene: sampling must be an object of SamplingSpec fields")
    known = {f.name for f in fields(SamplingSpec)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise RmxError(f"intervene: unknown sampling fields {unknown}: use {', '.join(sorted(known))}")
    return SamplingSpec(**value)


def _modes(value: Any) -> tuple[str, ...]:
    if value is None:
        return FIGURE2_MODES
    if isinstance(value, str):
        value = [m.strip() for m in value.split(",") if m.strip()]
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise RmxError("intervene: modes must be a list of mode names")
    if not value:
        raise RmxError(f"intervene: no modes to run: choose from {', '.join(FIGURE2_MODES)}")
    unknown = [m for m in value if m not in FIGURE2_MODES]
    if unknown:
        raise RmxError(f"intervene: unknown mode '{unknown[0]}': use one of {', '.join(FIGURE2_MODES)}")
    if len(set(value)) != len(value):
        raise RmxError("intervene: each mode may be listed once")
    return tuple(value)


def parse(config: dict[str, Any]) -> Plan:
    """The config as a Plan, each problem refused in one line; nothing is loaded or read here."""
    if not isinstance(config, dict):
        raise RmxError("intervene: the config must be a JSON object")
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise RmxError(f"intervene: unknown config keys {unknown}: use {', '.join(KEYS)}")
    if "base" not in config:
        raise RmxError("intervene: the config needs a base model")
    base = _model(config["base"], "base")
    teacher = _model(config["teacher"], "teacher") if config.get("teacher") is not None else None
    dataset = config.get("dataset")
    if not isinstance(dataset, str) or not dataset.strip():
        raise RmxError("intervene: dataset must be a benchmark name, a .jsonl path or hf:NAME[:split]")
    limit = config.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise RmxError(f"intervene: limit must be an integer ≥ 1 or null, got {limit!r}")
    modes = _modes(config.get("modes"))
    needing = [m for m in modes if m in NEEDS_TEACHER]
    if needing and teacher is None:
        raise RmxError(f"intervene: mode {needing[0]} needs a teacher model")
    raw_tau = config.get("tau", str(PAPER_TAU))
    if raw_tau is not None and (isinstance(raw_tau, bool) or not isinstance(raw_tau, (str, int, float))):
        raise RmxError(f"intervene: tau must be nats (1.2) or a quantile (q0.97), got {raw_tau!r}")
    tau = Tau.parse(raw_tau) if raw_tau is not None else None
    if "gated" in modes and tau is None:
        raise RmxError("intervene: the gated mode needs τ: give nats (1.2) or a quantile (q0.97)")
    template = config.get("template", "auto")
    if template is not None and template != "auto" and template not in TEMPLATES:
        raise RmxError(f"intervene: unknown template {template!r}: use one of auto, {', '.join(TEMPLATES)}")
    sampling = _sampling(config.get("sampling"))
    out = config.get("out")
    if out is not None and (not isinstance(out, str) or not Path(out).expanduser().is_absolute()):
        raise RmxError(f"intervene: out must be an absolute path (the job does not run in your folder), got {out!r}")
    batch_size = config.get("batch_size")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise RmxError(f"intervene: batch_size must be an integer ≥ 1 or null (as many as fit), got {batch_size!r}")
    ray = config.get("ray")
    if ray is not None and not isinstance(ray, dict):
        raise RmxError("intervene: ray must be an object such as {\"address\": \"auto\"} or null")
    try:
        cluster = RaySpec(**ray) if ray is not None else None
    except TypeError as error:
        raise RmxError(f"intervene: ray: {error}") from None
    return Plan(base=base, teacher=teacher, dataset=dataset, limit=limit, modes=modes, tau=tau, template=template,
                sampling=sampling, out=str(Path(out).expanduser()) if out is not None else None, batch_size=batch_size,
                ray=cluster)


def _check_model(spec: ModelSpec, name: str) -> None:
    """Refuse a model that is not there, without loading it (a GGUF is converted only when the job runs)."""
    from engine.core.models import demo_gguf_path, resolve_source

    if spec.source == "demo":
        demo_gguf_path()
    elif spec.source.lower().endswith(".gguf"):
        if not Path(spec.source).expanduser().is_file():
            raise RmxError(f"intervene: {name}: GGUF file not found: {spec.source}")
    else:
        resolve_source(spec)
    if spec.adapter is not None and not Path(spec.adapter).expanduser().is_dir():
        raise RmxError(f"intervene: {name} adapter folder not found: {spec.adapter}")


def validate(config: dict[str, Any]) -> None:
    """Refuse a bad config before a process starts: its fields, its models' presence, and the dataset's rows."""
    plan = parse(config)
    _check_model(plan.base, "base")
    if plan.teacher is not None:
        _check_model(plan.teacher, "teacher")
    if not plan.dataset.startswith("hf:"):  # a hub dataset is read by the job alone: it may be slow to open
        from engine.core.data import load_problems

        load_problems(plan.dataset, limit=plan.limit)


def intervene_job(config: dict[str, Any], run: RunContext) -> None:
    """Run Figure 2 on the configured problems, appending to the results file, then write the summary."""
    from engine.core.data import load_problems
    from engine.recipes.experiments import run_figure2
    from engine.core.models import load_pair

    plan = parse(config)
    problems = load_problems(plan.dataset, limit=plan.limit)
    total = len(problems)
    out = Path(plan.out) if plan.out else run.artifacts / RESULTS
    run.set_progress(min(run.step, total), total)
    if run.should_stop():
        return
    def on_event(event: dict[str, Any]) -> None:
        if "intervene/done" in event and "lane/task" not in event:  # a shard's count is not the run's
            run.set_progress(int(event["intervene/done"]), total)
        run.emit(event)

    settings = dict(modes=plan.modes, sampling=plan.sampling, tau=plan.tau, template=plan.template,
                    batch_size=plan.batch_size)
    if plan.ray is not None:
        from engine.recipes.shards import figure2_sharded

        figure = figure2_sharded(plan.base, plan.teacher, plan.dataset, plan.limit, out, plan.ray, emit=on_event,
                                 should_stop=run.should_stop, **settings)
    else:
        base, teacher = load_pair(plan.base, plan.teacher)
        figure = run_figure2(base, teacher, problems, out, on_event=on_event, should_stop=run.should_stop,
                             **settings)
    summary = {**figure.to_json(), "total": total, "complete": figure.problems == total}
    write_json_atomic(run.artifacts / SUMMARY, summary)
    write_result(run.artifacts, summary, {"figure2": str(out), "summary": str(run.artifacts / SUMMARY)})
    run.emit({"intervene/summary": str(run.artifacts / SUMMARY), "intervene/complete": summary["complete"]})


register_job_kind(KIND, intervene_job, validate)
