"""Evals and rollouts split over a Ray cluster: each shard a resumable run of its own, merged into the output
and the summary that one process would have written.

Every problem draws from its own seed, and a shard's bounds fall on the sampler's call slots (the groups of
problems sampled together), so a problem's samples do not depend on which shard took it. The merge
concatenates the shards' records in problem order, then runs the recipe once more with `resume`: it finds
every problem done and writes the summary exactly as a single process does (the driver loads the model once
for that pass, to settle the prompt template the way every run does). Shards live under the run's `shards/`
folder, which must be on a filesystem every node sees.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from engine.core.config import ModelSpec
from engine.core.errors import RmxError
# By module, not by name: the recipe functions are looked up when called, as the CLI's callers expect.
from engine.recipes import evaluate as evaluation, rollouts as sampling
from engine.recipes.evaluate import ITEMS_FILE, EvalResult, EvalSpec
from engine.recipes.lanes import RayLanes, RaySpec, Task
from engine.recipes.rollouts import RolloutResult, RolloutSpec

SHARDS = "shards"
"""The folder, beside a run's output, that holds one sub-folder per shard."""


def slices(total: int, shards: int, align: int = 1) -> list[tuple[int, int]]:
    """`total` items cut into at most `shards` contiguous, ordered [start, end) ranges whose bounds are
    multiples of `align`, so each range's calls group problems as one run over all of them would."""
    chunk = -(-total // max(1, shards))
    chunk = max(align, -(-chunk // align) * align)
    return [(start, min(start + chunk, total)) for start in range(0, total, chunk)]


def _backend(backend: str, model: ModelSpec, pool: RayLanes) -> type:
    """The sampler the shards use, resolved once for all of them as it resolves on the workers."""
    from engine.core.backends import resolve_backend, sampler_class

    on_gpu = bool(pool.gpus_per_task)
    try:
        name = resolve_backend(backend, replace(model, device="cuda" if on_gpu else "cpu"))
    except RmxError:  # `auto` for GPU workers, judged on a driver without CUDA
        name = "paged" if on_gpu else "hf"
    return sampler_class(name)


def _concatenate(parts: list[Path], target: Path) -> None:
    """Write the parts one after the other into `target`, through tmp+rename."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        for part in parts:
            data = part.read_bytes()
            handle.write(data if not data or data.endswith(b"\n") else data + b"\n")
    os.replace(tmp, target)


def _refuse_existing(paths: list[Path], resume: bool) -> None:
    existing = [path for path in paths if path.exists()]
    if existing and not resume:
        raise RmxError(f"{existing[0]} already exists: pass --resume to continue it, or choose another --out")



def evaluate_on(ray: RaySpec | None, model: ModelSpec, spec: EvalSpec, out: str | Path, *, resume: bool = False,
                emit: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
                progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """`evaluate` in this process, or sharded over the Ray cluster `ray` names (its shards report no progress)."""
    if ray is None:
        return evaluation.evaluate(model, spec, out, resume=resume, emit=emit, should_stop=should_stop,
                                   progress=progress)
    return evaluate_sharded(model, spec, out, ray, resume=resume, emit=emit, should_stop=should_stop)


def sample_rollouts_on(ray: RaySpec | None, model: ModelSpec, spec: RolloutSpec, out: str | Path, *,
                       resume: bool = False, emit: Callable[[dict], None] | None = None,
                       should_stop: Callable[[], bool] | None = None,
                       progress: Callable[[int, int], None] | None = None) -> RolloutResult:
    """`sample_rollouts` in this process, or sharded over the Ray cluster `ray` names."""
    if ray is None:
        return sampling.sample_rollouts(model, spec, out, resume=resume, emit=emit, should_stop=should_stop,
                               progress=progress)
    return sample_rollouts_sharded(model, spec, out, ray, resume=resume, emit=emit, should_stop=should_stop)

# --- eval --------------------------------------------------------------------------------------------------


def _eval_shard(*, device: str, lane: str, emit: Callable[[dict], None], should_stop: Callable[[], bool] | None,
                model: ModelSpec, spec: EvalSpec, out: str) -> None:
    # Always resumable: a retried shard (its worker died) keeps the problems it had finished.
    evaluation.evaluate(replace(model, device=device), spec, out, resume=True, emit=emit, should_stop=should_stop)


def evaluate_sharded(model: ModelSpec, spec: EvalSpec, out: str | Path, ray: RaySpec, *, resume: bool = False,
                     emit: Callable[[dict], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> EvalResult:
    """`evaluate` with each benchmark's problems sharded over the Ray cluster; the same files and result."""
    from engine.core.data import load_problems

    emit = emit or (lambda event: None)
    out = Path(out)
    _refuse_existing([out / ITEMS_FILE, out / SHARDS], resume)
    pool = RayLanes(ray)
    sampler = _backend(spec.backend, model, pool)
    spec = replace(spec, backend=sampler.name)
    tasks: list[Task] = []
    for name in spec.benchmarks:
        count = len(load_problems(name, limit=spec.limit, offset=spec.offset))
        if not count:
            raise RmxError(f"no problems left in {name} after --offset {spec.offset}")
        calls = sampler.problems_per_call if name in spec.avg_benchmarks else sampler.greedy_batch
        for start, end in slices(count, pool.shard_count(), calls):
            shard = replace(spec, benchmarks=(name,), offset=spec.offset + start, limit=end - start)
            folder = out / SHARDS / f"shard-{len(tasks):04d}"
            tasks.append(Task(f"{Path(name).stem}[{start}:{end}]", _eval_shard,
                              {"model": model, "spec": shard, "out": str(folder)}))
    out.mkdir(parents=True, exist_ok=True)
    emit({"ray/shards": len(tasks)})
    pool.run(tasks, emit, should_stop)
    _concatenate([Path(task.kwargs["out"]) / ITEMS_FILE for task in tasks], out / ITEMS_FILE)
    return evaluation.evaluate(model, spec, out, resume=True, emit=emit)


# --- rollouts ----------------------------------------------------------------------------------------------


def _rollouts_shard(*, device: str, lane: str, emit: Callable[[dict], None],
                    should_stop: Callable[[], bool] | None, model: ModelSpec, spec: RolloutSpec,
                    out: str) -> dict[str, Any]:
    result = sampling.sample_rollouts(replace(model, device=device), spec, out, resume=True, emit=emit,
                             should_stop=should_stop)
    return result.to_json()


def sample_rollouts_sharded(model: ModelSpec, spec: RolloutSpec, out: str | Path, ray: RaySpec, *,
                            resume: bool = False, emit: Callable[[dict], None] | None = None,
                            should_stop: Callable[[], bool] | None = None) -> RolloutResult:
    """`sample_rollouts` with the problems sharded over the Ray cluster; the same file and result."""
    from engine.core.data import load_problems

    emit = emit or (lambda event: None)
    path = Path(out)
    shards_dir = path.with_name(f"{path.name}.{SHARDS}")
    _refuse_existing([path, shards_dir], resume)
    pool = RayLanes(ray)
    sampler = _backend(spec.backend, model, pool)
    spec = replace(spec, backend=sampler.name)
    count = len(load_problems(spec.dataset, limit=spec.limit, offset=spec.offset))
    if not count:
        raise RmxError(f"no problems in {spec.dataset} after --offset {spec.offset}")
    tasks = [Task(f"{Path(spec.dataset).stem}[{start}:{end}]", _rollouts_shard,
                  {"model": model, "spec": replace(spec, offset=spec.offset + start, limit=end - start),
                   "out": str(shards_dir / f"shard-{index:04d}" / "rollouts.jsonl")})
             for index, (start, end) in enumerate(slices(count, pool.shard_count(), sampler.problems_per_call))]
    path.parent.mkdir(parents=True, exist_ok=True)
    emit({"ray/shards": len(tasks)})
    results = [RolloutResult(**result) for result in pool.run(tasks, emit, should_stop)]
    _concatenate([Path(task.kwargs["out"]) for task in tasks], path)
    merged = sampling.sample_rollouts(model, spec, path, resume=True, emit=emit)
    tokens, seconds = sum(r.tokens for r in results), max(r.seconds for r in results)
    return replace(merged, tokens=tokens, seconds=seconds, tok_s=tokens / seconds if seconds > 0 else 0.0)


# --- Figure 2 ----------------------------------------------------------------------------------------------


def _figure2_shard(*, device: str, lane: str, emit: Callable[[dict], None],
                   should_stop: Callable[[], bool] | None, base: ModelSpec, teacher: ModelSpec | None,
                   dataset: str, limit: int | None, start: int, end: int, out: str, settings: dict[str, Any]) -> None:
    from engine.core.data import load_problems
    from engine.core.models import load_pair
    from engine.recipes.experiments import run_figure2

    problems = load_problems(dataset, limit=limit)[start:end]
    base_model, teacher_model = load_pair(replace(base, device=device),
                                          replace(teacher, device=device) if teacher is not None else None)
    run_figure2(base_model, teacher_model, problems, out, on_event=emit, should_stop=should_stop, **settings)


def figure2_sharded(base: ModelSpec, teacher: ModelSpec | None, dataset: str, limit: int | None,
                    out: str | Path, ray: RaySpec, *, emit: Callable[[dict], None] | None = None,
                    should_stop: Callable[[], bool] | None = None, **settings: Any):
    """`run_figure2` with the problems sharded over the Ray cluster; `settings` are its keyword arguments
    (modes, sampling, tau, template, batch_size). Each row's result does not depend on its batch, so the
    merged file holds what one process writes; problems already complete in `out` are kept as they are."""
    from engine.core.data import load_problems
    from engine.core.models import load_pair
    from engine.recipes.experiments import read_results, run_figure2

    emit = emit or (lambda event: None)
    path = Path(out)
    problems = load_problems(dataset, limit=limit)
    if not problems:
        raise RmxError(f"no problems in {dataset}")
    pool = RayLanes(ray)
    shards_dir = path.with_name(f"{path.name}.{SHARDS}")
    tasks = [Task(f"{Path(dataset).stem}[{start}:{end}]", _figure2_shard, {
        "base": base, "teacher": teacher, "dataset": dataset, "limit": limit, "start": start, "end": end,
        "out": str(shards_dir / f"shard-{index:04d}.jsonl"), "settings": settings})
        for index, (start, end) in enumerate(slices(len(problems), pool.shard_count()))]
    path.parent.mkdir(parents=True, exist_ok=True)
    emit({"ray/shards": len(tasks)})
    pool.run(tasks, emit, should_stop)
    # The shards' lines follow what `out` already holds; a problem on file twice merges its modes when read.
    _concatenate(([path] if path.exists() else []) + [Path(task.kwargs["out"]) for task in tasks], path)
    read_results(path)
    base_model, teacher_model = load_pair(base, teacher)
    return run_figure2(base_model, teacher_model, problems, path, on_event=emit, should_stop=should_stop,
                       **settings)


# --- Table 2 -----------------------------------------------------------------------------------------------


def _analyze_shard(*, device: str, lane: str, emit: Callable[[dict], None],
                   should_stop: Callable[[], bool] | None, base: ModelSpec, teacher: ModelSpec, dataset: str,
                   limit: int | None, start: int, end: int, settings: dict[str, Any]):
    from engine.core.data import load_problems
    from engine.core.models import load_pair
    from engine.recipes.analysis import analyze

    base_model, teacher_model = load_pair(replace(base, device=device), replace(teacher, device=device))
    problems = load_problems(dataset, limit=limit)[start:end]
    return analyze(base_model, teacher_model, problems,
                   on_progress=lambda done, total: emit({"analyze/done": done, "analyze/total": total}), **settings)


def analyze_sharded(base: ModelSpec, teacher: ModelSpec, dataset: str, limit: int | None, ray: RaySpec, *,
                    tau, emit: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
                    **settings: Any):
    """`analyze` with the problems sharded over the Ray cluster: each shard's problems come back in order and
    Table 2 is tabulated over all of them, as one process does (`settings`: template, max_new_tokens,
    batch_size)."""
    from engine.core.data import load_problems
    from engine.recipes.analysis import tabulate

    emit = emit or (lambda event: None)
    count = len(load_problems(dataset, limit=limit))
    if not count:
        raise RmxError(f"no problems in {dataset}")
    pool = RayLanes(ray)
    tasks = [Task(f"{Path(dataset).stem}[{start}:{end}]", _analyze_shard, {
        "base": base, "teacher": teacher, "dataset": dataset, "limit": limit, "start": start, "end": end,
        "settings": {"tau": tau, **settings}})
        for start, end in slices(count, pool.shard_count())]
    emit({"ray/shards": len(tasks)})
    parts = pool.run(tasks, emit, should_stop)
    return tabulate([problem for part in parts for problem in part.problems], tau, True, parts[0].template)
