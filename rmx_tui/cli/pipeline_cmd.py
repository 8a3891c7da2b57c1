"""`rmx rollouts|pool|train|sweep|eval|distill|runs cost|pipeline`: the ReasonMaxxer stages, in-process or as jobs."""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer

from engine.core.errors import RmxError
from engine.recipes.distill import DistillSpec
from engine.recipes.train import TrainSpec
from rmx_tui.cli import options as opt

Job = Annotated[bool, typer.Option("--job", help="Run as a detached job (see `rmx jobs`) instead of in this process.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run already in --out.")]
ReportTo = Annotated[Optional[list[str]], typer.Option(
    "--report-to", help="Mirror metrics and config to trackers: none, tensorboard, trackio, wandb (repeat or comma-separate).")]

ROLLOUT_SPEC = ("engine.recipes.rollouts", "RolloutSpec")
TRAIN_SPEC = ("engine.recipes.train", "TrainSpec")
SWEEP_SPEC = ("engine.recipes.sweep", "SweepSpec")
EVAL_SPEC = ("engine.recipes.evaluate", "EvalSpec")
DISTILL_SPEC = ("engine.recipes.distill", "DistillSpec")
"""The spec behind each command's options: their help is its field docstrings (opt.spec_help)."""

Backend = Annotated[str, typer.Option("--backend")]


def with_options(options: dict[str, tuple[Any, Any]], after: str, into: str | None = None):
    """Give a command `options` (name: (annotated type, default)) after its parameter `after`; the command
    receives them in its `**values` parameter, or as one dict in its parameter `into`."""

    def wrap(command):
        signature = inspect.signature(command, eval_str=True)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD and p.name != into]
        at = [p.name for p in own].index(after) + 1
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
                 for name, (kind, default) in options.items()]

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            if into is not None:
                kwargs[into] = {name: kwargs.pop(name) for name in options}
            return command(**kwargs)

        run.__signature__ = signature.replace(parameters=own[:at] + added + own[at:])  # type: ignore[attr-defined]
        return run

    return wrap


LOADING: dict[str, tuple[Any, Any]] = {"dtype": (opt.Dtype, "auto"), "device": (opt.Device, "auto"),
                                      "revision": (opt.Revision, None),
                                      "trust_remote_code": (opt.TrustRemoteCode, False)}
"""How a command loads its model (ModelSpec's dtype, device, revision, trust_remote_code), written once for every
command here; each receives them as one dict, `loading`."""


def _model(base: str, adapter: str | None, loading: dict[str, Any]):
    from engine.core.config import ModelSpec

    return ModelSpec(base, adapter=adapter, **loading)


def _with_ray(config: dict[str, Any], ray) -> dict[str, Any]:
    return {**config, "ray": asdict(ray)} if ray is not None else config


def _event_line(event: dict[str, Any]) -> str | None:
    """A one-line progress note for stderr, or None for events not worth a line."""
    if "job/run" in event:
        return f"run {event['job/run']}: events and status in its run folder (rmx jobs show {event['job/run']})"
    if "train/step" in event:
        dlp, dln = event.get("train/dlogp_pos"), event.get("train/dlogp_neg")
        return (f"train {event['train/step']}/{event['train/total']}  loss {event['train/loss']:.4f}  "
                f"dec {event['train/loss_dec']:.4f}  kl {event['train/loss_anchor']:.2e}  "
                f"Δlogp right {'–' if dlp is None else f'{dlp:+.3f}'} wrong {'–' if dln is None else f'{dln:+.3f}'}  "
                f"lr {event['train/lr']:.2e}  {event['train/tok_s'] or 0:.0f} tok/s")
    for key in ("train/warning", "train/alarm", "train/checkpoint", "train/resumed_from", "train/phase"):
        if key in event:
            return f"{key.split('/')[1]}: {event[key]}"
    if "rollouts/problem" in event:
        return (f"rollouts {event['rollouts/done']}/{event['rollouts/total']}  {event['rollouts/problem']}: "
                f"{event['rollouts/correct']}/{event['rollouts/k']} correct")
    if "eval/benchmark" in event:
        return f"eval {event['eval/benchmark']}: {event['eval/metric']} {event['eval/score']:.3f}"
    if "distill/step" in event:
        return f"distill {event['distill/step']}/{event['distill/total']}  KL {event['distill/kl']:.4f}"
    if "sweep/pass@1" in event:
        return f"sweep τ {event['sweep/tau']}: holdout pass@1 {event['sweep/pass@1']}"
    if "pipeline/stage" in event:
        return f"pipeline {event['pipeline/stage']}: {event['pipeline/state']}"
    return None


def _emit(event: dict[str, Any]) -> None:
    line = _event_line(event)
    if line is not None:
        print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _foreground(kind: str, config: dict[str, Any], out: str, json_output: bool) -> Iterator[Any]:
    """Run here, in a run folder like a job's; events go to stderr as live bars on a terminal, else as lines,
    or to stdout as NDJSON with --json."""
    import engine.jobs.kinds  # noqa: F401  (registers the job kinds)
    from engine.jobs.foreground import foreground_run

    if json_output or not sys.stderr.isatty():  # pipes, CI and --json keep one plain line per event
        with foreground_run(kind, config, out, opt.print_json if json_output else _emit) as run:
            yield run
        return
    from rich.console import Console

    from rmx_tui.cli.progress import LiveProgress

    with LiveProgress(Console(stderr=True), _event_line) as live, foreground_run(kind, config, out, live) as run:
        yield run


def _record(run: Any, kind: str, result: Any, out: str) -> None:
    """artifacts/result.json, listing the outputs, as a detached job of the kind writes it."""
    from engine.jobs.kinds import record_result

    record_result(kind, result, run.context.artifacts, out)


def _reported(config: dict[str, Any], report_to: list[str] | None) -> dict[str, Any]:
    """The job config with its trackers (checked now: a missing package is one line before any work)."""
    from engine.recipes.trackers import ReportSpec

    report = ReportSpec(tuple(report_to or ()))
    return {**config, "report": report.to_json()} if report.report_to else config


def _submit(ctx: typer.Context, kind: str, config: dict[str, Any], json_output: bool) -> None:
    status = opt.submit_job(ctx, kind, config)
    if json_output:
        opt.print_json(status.to_json())
    else:
        typer.echo(f"submitted {status.id}: follow it with `rmx jobs logs {status.id} --follow`")


def _result(result, json_output: bool, summary: str) -> None:
    if json_output:
        opt.print_json(result.to_json())
    else:
        typer.echo(summary)


# --- rollouts -----------------------------------------------------------------------------------------------


@opt.spec_help(ROLLOUT_SPEC)
@with_options(LOADING, after="ray_shards", into="loading")
def rollouts(
    ctx: typer.Context,
    dataset: opt.Dataset,
    base: opt.Base = "demo",
    limit: opt.Limit = None,
    offset: Annotated[int, typer.Option("--offset")] = 0,
    k: Annotated[int, typer.Option("--k")] = 20,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.6,
    top_p: Annotated[float, typer.Option("--top-p")] = 0.95,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 8192,
    template: opt.Template = "auto",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    backend: Backend = "auto",
    grade_timeout: Annotated[float, typer.Option("--grade-timeout")] = 5.0,
    extract: opt.Extract = "strict",
    out: Annotated[str, typer.Option("--out", help="The rollouts.jsonl to write.")] = "rollouts.jsonl",
    resume: Resume = False,
    ray: opt.RayAddress = None,
    ray_retries: opt.RayRetries = 2,
    ray_shards: opt.RayShards = None,
    loading: dict[str, Any] = {},  # filled in by with_options(LOADING)
    report_to: ReportTo = None,
    job: Job = False,
    json_output: opt.Json = False,
) -> None:
    """Sample K completions per problem from the base, grade them, and write rollouts.jsonl (resumable per problem)."""
    from engine.recipes.rollouts import RolloutSpec
    from engine.recipes.shards import sample_rollouts_on

    model = _model(base, None, loading)
    spec = RolloutSpec(dataset, limit, offset=offset, k=k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                       template=template, seed=seed, backend=backend, grade_timeout_s=grade_timeout,
                       extract=extract)
    cluster = opt.ray_spec(ray, ray_retries, ray_shards)
    config = _reported(_with_ray({"model": asdict(model), "rollouts": asdict(spec)}, cluster), report_to)
    if job or opt.connected(ctx):
        _submit(ctx, "rollouts", config, json_output)
        return
    with _foreground("rollouts", config, out, json_output) as run:
        result = sample_rollouts_on(cluster, model, spec, out, resume=resume, emit=run.emit,
                                    should_stop=run.should_stop, progress=run.set_progress)
        _record(run, "rollouts", result, out)
    _result(result, json_output, f"{result.samples} rollouts of {result.problems} problems in {result.path}: "
            f"{result.correct} correct, {result.mixed} problems with mixed success, {result.tok_s:.1f} tok/s "
            f"({result.backend})")


# --- pool ---------------------------------------------------------------------------------------------------

Rollouts = Annotated[str, typer.Option("--rollouts", help="A rollouts.jsonl from `rmx rollouts`.")]
Size = Annotated[Optional[int], typer.Option("--size", help="Keep the N mixed problems with pass rate closest to 0.5 (the authors keep 50).")]
KeepShortest = Annotated[float, typer.Option(
    "--keep-shortest",
    help="Keep this fraction of the pool's rollouts, shortest first (1 = off, the default). The authors keep "
         "0.8, which builds in a length bias: long rollouts are more often wrong, so trimming drops more "
         "wrong ones and teaches brevity along with correctness.")]


@with_options(LOADING, after="taus", into="loading")
def pool_show(
    ctx: typer.Context,
    rollouts: Rollouts,
    size: Size = None,
    keep_shortest: KeepShortest = 1.0,
    base: Annotated[Optional[str], typer.Option("--base", help="Score the pool under this base for decision-point rates per τ (entropies cached beside the rollouts as NAME.entropies.jsonl).")] = None,
    taus: Annotated[str, typer.Option("--taus", help="τ values for the decision-point rates (nats or qX).")] = "1.0,1.2,1.4,1.6,1.8,2.2,q0.95,q0.97",
    loading: dict[str, Any] = {},  # filled in by with_options(LOADING)
    json_output: opt.Json = False,
) -> None:
    """Pass-rate histogram, correct vs wrong lengths, the trim's effect, and decision-point rates per τ."""
    from engine.recipes.pool import PoolSpec, inspect_pool

    spec = PoolSpec(rollouts, size, keep_shortest)
    tau_list = [t.strip() for t in taus.split(",") if t.strip()]

    def load_base():
        from engine.core.models import load_model

        return load_model(_model(base, None, loading))

    if opt.connected(ctx):
        stats = _pool_stats_on_daemon(ctx, spec, tau_list, _model(base, None, loading) if base is not None else None)
    else:
        stats = inspect_pool(spec, tau_list, load_base if base is not None else None)
    if json_output:
        opt.print_json(stats.to_json())
        return
    _print_pool(stats)


def _pool_stats_on_daemon(ctx: typer.Context, spec, taus: list[str], base):
    """`rmx --connect … pool show`: the daemon inspects the pool, under `base` (loaded there, or kept) if given."""
    rollouts = opt.absolute_paths(spec.rollouts)
    if base is None:
        client = opt.engine_client(ctx, default_local=False)
        try:
            return client.pool_stats(rollouts, spec.size, spec.keep_shortest, taus, with_base=False)
        finally:
            client.close()
    with opt.loaded_engine(ctx, base) as client:
        return client.pool_stats(rollouts, spec.size, spec.keep_shortest, taus, with_base=True)


def _print_pool(stats) -> None:
    echo = typer.echo
    echo(f"{stats.problems} problems at K={stats.k}: {stats.mixed} mixed, {stats.all_correct} all correct, "
         f"{stats.all_wrong} all wrong; pool: {stats.selected} problems, {stats.rollouts} rollouts")
    echo("\npass rate   problems")
    peak = max((count for _, count in stats.pass_rates), default=1)
    for label, count in stats.pass_rates:
        echo(f"{label:>9}   {count:>5}  {'█' * max(1, round(30 * count / peak))}")

    def length(which) -> str:
        if not which.count:
            return "none"
        return f"{which.count} rollouts, mean {which.mean:.0f}, median {which.median:.0f}, p90 {which.p90:.0f} tokens"

    echo(f"\ncorrect: {length(stats.lengths_correct)}\nwrong:   {length(stats.lengths_wrong)}")
    if stats.keep_shortest < 1.0:
        echo(f"after keeping the shortest {stats.keep_shortest:.0%} of each problem's rollouts (length bias): "
             f"the trim removed {stats.trim_removed_problems} problems (no longer mixed) and "
             f"{stats.trim_removed_rollouts} rollouts\n"
             f"correct: {length(stats.trimmed_correct)}\nwrong:   {length(stats.trimmed_wrong)}")
    if stats.decision:
        echo("\n     τ    nats   decision points   correct    wrong")
        for row in stats.decision:
            pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"  # noqa: E731
            echo(f"{row.tau:>6}  {row.nats:6.2f}   {pct(row.fraction):>15}   {pct(row.correct):>7}  {pct(row.wrong):>7}")


def pool_select(
    ctx: typer.Context,
    rollouts: Rollouts,
    out: Annotated[str, typer.Option("--out", help="The pool.jsonl to write (stats go beside it).")] = "pool.jsonl",
    size: Size = None,
    keep_shortest: KeepShortest = 1.0,
    job: Job = False,
    json_output: opt.Json = False,
) -> None:
    """Keep the problems with mixed success (and optionally the N closest to 0.5) as the training pool."""
    from engine.recipes.pool import PoolSpec, write_pool

    spec = PoolSpec(rollouts, size, keep_shortest)
    if job or opt.connected(ctx):
        _submit(ctx, "pool", {"pool": asdict(spec)}, json_output)
        return
    result = write_pool(spec, out)
    stats = result.stats
    trimmed = (f" (the --keep-shortest trim removed {stats.trim_removed_problems} problems and "
               f"{stats.trim_removed_rollouts} rollouts)" if stats.keep_shortest < 1.0 else "")
    _result(result, json_output, f"pool of {stats.selected - stats.trim_removed_problems} problems, "
            f"{stats.rollouts} rollouts{trimmed}: {result.path}")


# --- train and sweep ----------------------------------------------------------------------------------------


def _train_spec(rollouts: str, **values):
    from engine.recipes.train import TrainSpec

    return TrainSpec(rollouts, **values)


TRAINING = opt.spec_options(TrainSpec, exclude=("rollouts", "tau", "tau_correct", "tau_wrong"))
"""TrainSpec's fields (the input and τ aside) as options, generated for `train` and `sweep` (tests/test_cli_specs.py
holds their names, defaults and help to the spec's)."""


def _diverged(result) -> None:
    print(f"rmx: training diverged at step {result.step}: {result.reason}; last good checkpoint: "
          f"{result.last_checkpoint or 'none'}", file=sys.stderr)
    raise typer.Exit(1)


@opt.spec_help(TRAIN_SPEC)
@with_options(TRAINING, after="tau_wrong")
@with_options(LOADING, after="resume", into="loading")
def train(
    ctx: typer.Context,
    rollouts: Rollouts,
    base: opt.Base = "demo",
    out: Annotated[str, typer.Option("--out", help="Run folder: checkpoints/, adapter/, base_pass/, train_summary.json.")] = "train",
    tau: Annotated[str, typer.Option("--tau")] = "1.4",
    tau_correct: Annotated[Optional[str], typer.Option("--tau-correct")] = None,
    tau_wrong: Annotated[Optional[str], typer.Option("--tau-wrong")] = None,
    resume: Resume = False,
    loading: dict[str, Any] = {},  # filled in by with_options(LOADING)
    report_to: ReportTo = None,
    job: Job = False,
    json_output: opt.Json = False,
    **training: Any,
) -> None:
    """Train a ReasonMaxxer LoRA: advantage-weighted loss at entropy-gated decision points, KL anchor elsewhere."""
    from engine.recipes.train import train as run

    model = _model(base, None, loading)
    spec = _train_spec(rollouts, tau=tau, tau_correct=tau_correct, tau_wrong=tau_wrong, **training)
    config = _reported({"model": asdict(model), "train": asdict(spec)}, report_to)
    if job or opt.connected(ctx):
        _submit(ctx, "train", config, json_output)
        return
    with _foreground("train", config, out, json_output) as fg:
        result = run(model, spec, out, resume=resume, emit=fg.emit, should_stop=fg.should_stop,
                     progress=fg.set_progress)
        _record(fg, "train", result, out)
        if result.state == "diverged":
            fg.diverged(result.reason or "diverged")
    _result(result, json_output, f"{result.state} after {result.step}/{result.total} steps on {result.sequences} "
            f"sequences ({100 * result.decision_frac:.1f}% decision points at τ {result.tau_correct:.3g} nats): "
            f"{result.adapter or result.last_checkpoint}")
    if result.state == "diverged":
        _diverged(result)


@opt.spec_help(TRAIN_SPEC, SWEEP_SPEC)
@with_options(TRAINING, after="template")
@with_options(LOADING, after="ray_retries", into="loading")
def sweep(
    ctx: typer.Context,
    rollouts: Rollouts,
    base: opt.Base = "demo",
    out: Annotated[str, typer.Option("--out", help="Sweep folder: one tau-X/ run per τ, sweep.json.")] = "sweep",
    taus: Annotated[str, typer.Option("--taus")] = "1.2,1.4,1.6,1.8",
    holdout: Annotated[int, typer.Option("--holdout")] = 50,
    holdout_dataset: Annotated[str, typer.Option("--holdout-dataset")] = "math_train_pool_500",
    holdout_offset: Annotated[int, typer.Option("--holdout-offset")] = 450,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 4096,
    template: opt.Template = "auto",
    devices: Annotated[str, typer.Option("--devices")] = "",
    resume: Resume = False,
    ray: opt.RayAddress = None,
    ray_retries: opt.RayRetries = 2,
    loading: dict[str, Any] = {},  # filled in by with_options(LOADING)
    report_to: ReportTo = None,
    job: Job = False,
    json_output: opt.Json = False,
    **training: Any,
) -> None:
    """Train one adapter per τ, score each on a holdout (greedy pass@1), and keep the best."""
    from engine.recipes.sweep import SweepSpec
    from engine.recipes.sweep import sweep as run

    model = _model(base, None, loading)
    spec = _train_spec(rollouts, **training)
    sweep_spec = SweepSpec(taus, holdout, holdout_dataset, holdout_offset, max_new_tokens, template, devices)
    cluster = opt.ray_spec(ray, ray_retries)
    config = _reported(_with_ray({"model": asdict(model), "train": asdict(spec), "sweep": asdict(sweep_spec)},
                                 cluster), report_to)
    if job or opt.connected(ctx):
        _submit(ctx, "sweep", config, json_output)
        return
    with _foreground("sweep", config, out, json_output) as fg:
        result = run(model, spec, sweep_spec, out, resume=resume, emit=fg.emit, should_stop=fg.should_stop,
                     ray=cluster)
        _record(fg, "sweep", result, out)
    if json_output:
        opt.print_json(result.to_json())
        return
    typer.echo(f"holdout: {result.holdout}\n\n     τ    nats   decision   state      holdout")
    for row in result.rows:
        score = "–" if row.score is None else f"{row.score:.3f}"
        typer.echo(f"{row.tau:>6}  {row.tau_nats:6.2f}   {100 * row.decision_frac:7.1f}%   {row.state:<9}  {score:>7}")
    typer.echo(f"\nbest τ: {result.best_tau or 'none'} → {result.best_adapter or 'no adapter'}")


# --- eval ---------------------------------------------------------------------------------------------------


@opt.spec_help(EVAL_SPEC)
@with_options(LOADING, after="out", into="loading")
def eval_run(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option("--model", help="The model: a hub id, a folder, a .gguf file or 'demo'.")] = None,
    adapter: opt.Adapter = None,
    benchmarks: Annotated[str, typer.Option("--benchmarks")] = "math500",
    limit: Annotated[Optional[int], typer.Option("--limit")] = None,
    offset: Annotated[int, typer.Option("--offset")] = 0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 4096,
    template: opt.Template = "auto",
    avg_k: Annotated[int, typer.Option("--avg-k")] = 8,
    avg_benchmarks: Annotated[str, typer.Option("--avg-benchmarks")] = "aime24,amc23",
    temperature: Annotated[float, typer.Option("--temperature")] = 0.6,
    top_p: Annotated[float, typer.Option("--top-p")] = 0.95,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    backend: Backend = "auto",
    grade_timeout: Annotated[float, typer.Option("--grade-timeout")] = 5.0,
    extract: opt.Extract = "strict",
    out: Annotated[str, typer.Option("--out", help="Folder for eval.json, eval.md and items.jsonl.")] = "eval",
    loading: dict[str, Any] = {},  # filled in by with_options(LOADING)
    resume: Resume = False,
    ray: opt.RayAddress = None,
    ray_retries: opt.RayRetries = 2,
    ray_shards: opt.RayShards = None,
    report_to: ReportTo = None,
    job: Job = False,
    json_output: opt.Json = False,
) -> None:
    """Score a model (and adapter) on math benchmarks: pass@1 greedy, avg@8 on AIME/AMC, graded by math-verify."""
    if ctx.invoked_subcommand is not None:
        return
    if model is None:
        raise RmxError("rmx eval needs --model (or a subcommand: rmx eval compare RUN RUN …)")
    from engine.recipes.evaluate import EvalSpec, markdown_table
    from engine.recipes.shards import evaluate_on

    spec_model = _model(model, adapter, loading)
    spec = EvalSpec(benchmarks, limit, offset, max_new_tokens, template, avg_k, avg_benchmarks, temperature, top_p,
                    seed, backend, grade_timeout, extract)
    cluster = opt.ray_spec(ray, ray_retries, ray_shards)
    config = _reported(_with_ray({"model": asdict(spec_model), "eval": asdict(spec)}, cluster), report_to)
    if job or opt.connected(ctx):
        _submit(ctx, "eval", config, json_output)
        return
    with _foreground("eval", config, out, json_output) as run:
        result = evaluate_on(cluster, spec_model, spec, out, resume=resume, emit=run.emit,
                             should_stop=run.should_stop, progress=run.set_progress)
        _record(run, "eval", result, out)
    _result(result, json_output, markdown_table(result))


def eval_compare(
    runs: Annotated[list[str], typer.Argument(help="eval.json files, `rmx eval --out` folders, or job ids.")],
    json_output: opt.Json = False,
) -> None:
    """Put several eval runs side by side, with the change from the first to the last."""
    from engine.recipes.evaluate import compare, comparison_table, load_result

    loaded = []
    for run in runs:
        where = Path(run)
        if not where.exists():
            from engine.jobs.store import find_run

            where = find_run(run)
        loaded.append((run, load_result(where)))
    comparison = compare(loaded)
    _result(comparison, json_output, comparison_table(comparison))


# --- distill ------------------------------------------------------------------------------------------------


@opt.spec_help(DISTILL_SPEC)
@with_options(opt.spec_options(DistillSpec, exclude=("rollouts",)), after="out", into="fitting")
@with_options(LOADING, after="resume", into="loading")
def distill(
    ctx: typer.Context,
    rollouts: Annotated[str, typer.Option("--rollouts")],
    teacher: opt.Teacher = None,
    teacher_adapter: opt.TeacherAdapter = None,
    base: opt.Base = "demo",
    out: Annotated[str, typer.Option("--out", help="Folder for teacher_topk.npz, adapter/ and distill_summary.json.")] = "distill",
    resume: Resume = False,
    loading: dict[str, Any] = {},  # filled in by with_options(LOADING)
    fitting: dict[str, Any] = {},  # DistillSpec's fields, filled in by with_options
    report_to: ReportTo = None,
    job: Job = False,
    json_output: opt.Json = False,
) -> None:
    """KL-LoRA: fit a LoRA on the base to the teacher's top-k next-token distribution (paper §4)."""
    from engine.recipes.distill import distill as run

    base_spec, teacher_spec = opt.model_specs(base, teacher, None, teacher_adapter, **loading)
    if teacher_spec is None:
        raise RmxError("rmx distill needs a teacher: --teacher MODEL and/or --teacher-adapter ADAPTER")
    spec = DistillSpec(rollouts, **fitting)
    config = _reported({"model": asdict(base_spec), "teacher": asdict(teacher_spec), "distill": asdict(spec)},
                       report_to)
    if job or opt.connected(ctx):
        _submit(ctx, "distill", config, json_output)
        return
    with _foreground("distill", config, out, json_output) as fg:
        result = run(base_spec, teacher_spec, spec, out, resume=resume, emit=fg.emit, should_stop=fg.should_stop,
                     progress=fg.set_progress)
        _record(fg, "distill", result, out)
    _result(result, json_output, f"adapter {result.adapter}: {result.steps} steps on {result.sequences} sequences, "
            f"final KL {result.final_kl:.4f}")


# --- runs cost ----------------------------------------------------------------------------------------------


def runs_cost(
    targets: Annotated[Optional[list[str]], typer.Argument(help="Job ids or run/output folders (default: every job).")] = None,
    prices: Annotated[Optional[str], typer.Option("--prices", help="JSON or TOML table of device kind → USD per hour, over the defaults.")] = None,
    json_output: opt.Json = False,
) -> None:
    """Device-seconds, peak memory and dollars per stage, from each run's cost records."""
    from engine.recipes.costs import cost_lines, load_prices
    from engine.jobs.store import find_run, list_runs, runs_dir

    table = load_prices(prices)
    folders: dict[str, Path] = {}
    if not targets:
        folders = {status.id: runs_dir() / status.id for status in list_runs()}
    for target in targets or ():
        folders[target] = Path(target) if Path(target).exists() else find_run(target)
    lines = cost_lines(folders, table)
    if json_output:
        opt.print_json({"prices": table, "lines": [asdict(line) for line in lines],
                        "usd": sum(line.usd or 0.0 for line in lines)})
        return
    if not lines:
        typer.echo("no cost records (each stage writes cost.json when it ends)")
        return
    typer.echo(f"{'RUN':<32} {'STAGE':<11} {'DEVICE':<24} {'DEVICE-H':>9} {'PEAK GB':>8} {'USD':>8}")
    for line in lines:
        usd = "no price" if line.usd is None else f"{line.usd:.2f}"
        typer.echo(f"{line.run[-32:]:<32} {line.stage:<11} {line.device[:24]:<24} {line.device_seconds / 3600:9.3f} "
                   f"{line.peak_memory_bytes / 2**30:8.2f} {usd:>8}")
    priced = [line.usd for line in lines if line.usd is not None]
    typer.echo(f"total: {sum(line.device_seconds for line in lines) / 3600:.3f} device-hours, "
               f"${sum(priced):.2f} for the priced devices")


# --- pipeline -----------------------------------------------------------------------------------------------


def pipeline(
    ctx: typer.Context,
    config: Annotated[str, typer.Argument(help="A pipeline TOML file (see examples/pipeline-demo.toml).")],
    out: Annotated[str, typer.Option("--out", help="Folder for every stage's output and report.md.")] = "pipeline",
    resume: Resume = False,
    ray: Annotated[Optional[str], typer.Option("--ray", help="Run rollouts, sweep and evals on a Ray cluster (auto, local or host:port); overrides the TOML's \\[ray] address.")] = None,
    report_to: ReportTo = None,
    job: Job = False,
    json_output: opt.Json = False,
) -> None:
    """Run rollouts → pool → train (or a τ sweep) → eval of base and tuned, from one TOML file."""
    from engine.core.errors import Diverged
    from engine.recipes.pipeline import load_pipeline, run_pipeline

    checked = load_pipeline(config)
    if ray is not None:
        section = checked.get("ray", {})
        cluster = opt.ray_spec(ray, section.get("max_retries", 2), section.get("shards"))
        checked = {**checked, "ray": {**section, "address": cluster.address}}
    elif "ray" in checked:
        opt.ray_spec(checked["ray"].get("address", "auto"))
    if report_to is not None:  # --report-to overrides the TOML's [report]
        from engine.recipes.trackers import ReportSpec

        project = checked.get("report", {}).get("project", "rmx")
        checked = {**checked, "report": ReportSpec(tuple(report_to), project).to_json()}
    if job or opt.connected(ctx):
        _submit(ctx, "pipeline", {"pipeline": checked}, json_output)
        return
    try:
        with _foreground("pipeline", {"pipeline": checked}, out, json_output) as run:
            result = run_pipeline(checked, out, resume=resume, emit=run.emit, should_stop=run.should_stop)
            _record(run, "pipeline", result, out)
    except Diverged as error:
        print(f"rmx: {error}", file=sys.stderr)
        raise typer.Exit(1) from None
    if json_output:
        opt.print_json(result.to_json())
        return
    typer.echo(Path(result.report).read_text(encoding="utf-8"))


def register(app: typer.Typer) -> None:
    app.command("rollouts")(rollouts)
    pool = typer.Typer(help="Inspect and select the training pool (problems with mixed success).", no_args_is_help=True)
    pool.command("show")(pool_show)
    pool.command("select")(pool_select)
    app.add_typer(pool, name="pool")
    app.command("train")(train)
    app.command("sweep")(sweep)
    app.command("distill")(distill)
    evaluation = typer.Typer(help="Score models on math benchmarks, and compare runs.", invoke_without_command=True)
    evaluation.callback()(eval_run)
    evaluation.command("compare")(eval_compare)
    app.add_typer(evaluation, name="eval")
    runs = typer.Typer(help="What runs cost, and runs exported to trackers.", no_args_is_help=True)
    runs.command("cost")(runs_cost)
    from rmx_tui.cli.runs_export import runs_export

    runs.command("export")(runs_export)
    app.add_typer(runs, name="runs")
    app.command("pipeline")(pipeline)
