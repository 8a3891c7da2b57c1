"""K graded samples per problem from the base model, written to rollouts.jsonl and resumable per problem."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from engine.core.config import ModelSpec
from engine.core.errors import RmxError
from engine.core.records import Rollout, read_rollouts, write_rollouts


@dataclass(frozen=True)
class RolloutSpec:
    """What to sample: which problems, how many samples each, and how (the authors' recipe by default)."""

    dataset: str
    """A bundled dataset name (smoke, math_train_pool_150, …) or a .jsonl/.json problem file."""
    limit: int | None = None
    """Use only the first N problems."""
    offset: int = 0
    """Skip this many problems first (a shard of the dataset)."""
    k: int = 20
    """Samples per problem."""
    temperature: float = 0.6
    """Sampling temperature."""
    top_p: float = 0.95
    """Nucleus sampling mass."""
    max_new_tokens: int = 8192
    """Longest completion (the authors' recipe allows 8192)."""
    template: str | None = "auto"
    """Prompt template: qwen, qwen3, mistral, r1-distill, chat, raw, or auto (chat when the tokenizer has one)."""
    seed: int = 0
    """Each problem's samples are drawn with a seed derived from this and its id, so a resume redraws them."""
    backend: str = "auto"
    """auto (paged on CUDA, else hf), hf (engine.core.decode's batched KV-cache sampling), paged (transformers'
    continuous batching over a paged KV cache) or vllm (optional extra, CUDA only)."""
    grade_timeout_s: float = 5.0
    """Per-answer grading timeout."""
    extract: str = "strict"
    """How answers are extracted for grading: strict (no answer from a cut-off completion unless it boxed or stated
    one) or lenient (also the last number anywhere); see `rmx grade`."""

    def __post_init__(self) -> None:
        from engine.core.backends import BACKENDS
        from engine.core.grading import EXTRACT_MODES

        if not isinstance(self.k, int) or self.k < 1:
            raise RmxError(f"--k must be a positive integer, got {self.k}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise RmxError(f"--limit must be a positive integer, got {self.limit}")
        if not isinstance(self.offset, int) or self.offset < 0:
            raise RmxError(f"--offset must be an integer ≥ 0, got {self.offset}")
        if not self.temperature > 0:
            raise RmxError(f"--temperature must be > 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise RmxError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise RmxError(f"--max-new-tokens must be a positive integer, got {self.max_new_tokens}")
        if self.backend not in BACKENDS:
            raise RmxError(f"--backend must be one of {', '.join(BACKENDS)}, got '{self.backend}'")
        if not self.grade_timeout_s > 0:
            raise RmxError(f"--grade-timeout must be > 0, got {self.grade_timeout_s}")
        if self.extract not in EXTRACT_MODES:
            raise RmxError(f"--extract must be one of {', '.join(EXTRACT_MODES)}, got '{self.extract}'")


@dataclass(frozen=True)
class RolloutResult:
    """What a rollouts run produced."""

    path: str
    problems: int
    samples: int
    correct: int
    mixed: int
    """Problems with some right and some wrong samples: the training signal."""
    tokens: int
    """Completion tokens sampled by this process (resumed problems are not re-counted)."""
    seconds: float
    tok_s: float
    backend: str
    template: str = "raw"
    """The prompt template the rollouts were sampled with (`auto` resolved)."""
    template_reason: str = ""
    """Why that template: the `auto` rule that picked it, or `asked for`."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def problem_seed(seed: int, problem_id: str) -> int:
    """A stable 31-bit seed per problem, independent of the problem's position in the dataset."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()[:4], "big") >> 1


def meta_settings(meta: dict[str, Any]) -> dict[str, Any]:
    """A meta file's settings, without the template it recorded (checked on its own, after the model loads) and
    without the extract mode (checked on its own by `check_extract`)."""
    settings = {key: value for key, value in meta.items() if key != "template"}
    if isinstance(settings.get("spec"), dict):
        settings["spec"] = {key: value for key, value in settings["spec"].items() if key != "extract"}
    return settings


def check_extract(meta_path: Path, extract: str, out: Path | str, what: str) -> None:
    """Refuse to resume `out` with another --extract than it was graded with (meta files from before the option
    existed hold none: they were graded strict)."""
    if not meta_path.exists():
        return
    known = json.loads(meta_path.read_text()).get("spec", {}).get("extract", "strict")
    if known != extract:
        raise RmxError(f"{out} was {what} with --extract {known}, and this run asks for --extract {extract}: "
                       f"pass --extract {known} or choose another --out")


def in_calls(problems: Sequence, done: set[str], size: int) -> list[list]:
    """The problems still to do, grouped by fixed slots of `size` over the whole list: a resumed run groups (and so
    seeds) the problems it redoes as the uninterrupted run did, whatever was finished before."""
    slots = (problems[start:start + size] for start in range(0, len(problems), size))
    return [todo for todo in ([p for p in slot if p.id not in done] for slot in slots) if todo]


def _meta(model: ModelSpec, spec: RolloutSpec) -> dict[str, Any]:
    settings = asdict(spec)
    if not spec.offset:
        del settings["offset"]  # runs sampled before shards existed resume as they were
    return {"model": asdict(model), "spec": settings}


def record_template(meta_path: Path, choice, out: Path | str) -> None:
    """Add the template actually used (and why) to a run's meta file; a resumed run must resolve to the same one.

    Meta files from before templates were recorded hold none: the first resumed run records its own.
    """
    meta = json.loads(meta_path.read_text())
    known = meta.get("template")
    if known is not None and known.get("template") != choice.template:
        raise RmxError(f"{out} was sampled with template '{known.get('template')}', and this run resolves to "
                       f"'{choice.template}' ({choice.reason}): pass --template {known.get('template')} or choose another --out")
    meta["template"] = choice.to_json()
    meta_path.write_text(json.dumps(meta, indent=2))


def _check_prompts_on_file(path: Path, problems, tokenizer, choice) -> None:
    """Refuse to resume a file whose prompts were built with another template than this run's (an older `auto`)."""
    from engine.core.prompts import prompt_ids

    by_id = {p.id: p for p in problems}
    on_file = next((r for r in read_rollouts(path) if r.problem_id in by_id), None)
    if on_file is None:
        return
    if list(on_file.prompt_ids) != prompt_ids(tokenizer, by_id[on_file.problem_id].problem, choice.template):
        raise RmxError(f"{path} holds prompts built with another template than '{choice.template}' "
                       f"({choice.reason}): pass the --template it was sampled with, or choose another --out")


def _resume_state(path: Path, meta_path: Path, meta: dict, k: int, resume: bool) -> set[str]:
    """Problems already complete in `path`; a partial last problem is cut off so it is sampled again."""
    if not path.exists():
        return set()
    if not resume:
        raise RmxError(f"{path} already exists: pass --resume to continue it, or choose another --out")
    check_extract(meta_path, meta["spec"]["extract"], path, "graded")
    if meta_path.exists() and meta_settings(json.loads(meta_path.read_text())) != meta_settings(meta):
        raise RmxError(f"{path} was sampled with other settings (see {meta_path.name}): choose another --out")
    rollouts = read_rollouts(path)
    counts: dict[str, int] = {}
    for rollout in rollouts:
        counts[rollout.problem_id] = counts.get(rollout.problem_id, 0) + 1
    done = {pid for pid, n in counts.items() if n == k}
    kept = [r for r in rollouts if r.problem_id in done]
    if len(kept) != len(rollouts) or not path.read_bytes().endswith(b"\n"):
        write_rollouts(kept, path)
    return done


def sample_rollouts(model: ModelSpec, spec: RolloutSpec, out: str | Path, *, resume: bool = False,
                    emit: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
                    progress: Callable[[int, int], None] | None = None) -> RolloutResult:
    """Sample and grade K completions per problem into `out` (a rollouts.jsonl), appending one problem at a time.

    With `resume`, problems already complete in `out` are kept and the rest sampled; a problem cut short
    by a kill is sampled again from its own seed, so the file ends as an uninterrupted run's would.
    """
    from engine.core.backends import SampleRequest, make_sampler, resolve_backend
    from engine.core.data import load_problems
    from engine.core.grading import grade
    from engine.core.prompts import choose_template, prompt_ids

    emit = emit or (lambda event: None)
    # The resolved name is what the run records: a resume on this machine picks the same backend.
    spec = replace(spec, backend=resolve_backend(spec.backend, model))
    path = Path(out)
    meta_path = path.with_name(path.name + ".meta.json")
    problems = load_problems(spec.dataset, limit=spec.limit, offset=spec.offset)
    meta = _meta(model, spec)
    done = _resume_state(path, meta_path, meta, spec.k, resume)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not meta_path.exists():
        meta_path.write_text(json.dumps(meta, indent=2))
    sampler = make_sampler(spec.backend, model, temperature=spec.temperature, top_p=spec.top_p,
                           max_new_tokens=spec.max_new_tokens)
    tokenizer = sampler.tokenizer
    choice = choose_template(spec.template, tokenizer, sampler.template_facts)
    if done:
        _check_prompts_on_file(path, problems, tokenizer, choice)
    record_template(meta_path, choice, path)
    calls = in_calls(problems, done, sampler.problems_per_call)
    started, tokens = time.perf_counter(), 0
    finished = len(problems) - sum(len(batch) for batch in calls)
    if progress is not None:
        progress(finished, len(problems))
    with path.open("a", encoding="utf-8") as handle:
        for batch in calls:
            if should_stop is not None and should_stop():
                break
            requests = [SampleRequest(tuple(prompt_ids(tokenizer, p.problem, choice.template)), spec.k,
                                      problem_seed(spec.seed, p.id)) for p in batch]
            t0 = time.perf_counter()
            results = sampler.sample(requests)
            batch_tokens = sum(len(s.completion_ids) for samples in results for s in samples)
            for problem, request, samples in zip(batch, requests, results):
                lines = []
                right = 0
                for index, sample in enumerate(samples):
                    text = tokenizer.decode(list(sample.completion_ids), skip_special_tokens=True)
                    verdict = grade(text, problem.answer, timeout_s=spec.grade_timeout_s, finish=sample.finish,
                                    extract=spec.extract)
                    right += verdict.correct
                    rollout = Rollout(problem.id, index, request.prompt_ids, sample.completion_ids, text,
                                      problem.answer, verdict.extracted, verdict.correct, sample.finish)
                    lines.append(json.dumps(rollout.to_json(), ensure_ascii=False) + "\n")
                # One write per problem, flushed: a kill leaves whole problems plus at most one cut-off tail.
                handle.write("".join(lines))
                handle.flush()
                finished += 1
                emit({"rollouts/problem": problem.id, "rollouts/correct": right, "rollouts/k": spec.k,
                      "rollouts/done": finished, "rollouts/total": len(problems)})
            tokens += batch_tokens
            elapsed = time.perf_counter() - t0
            emit({"rollouts/tok_s": batch_tokens / elapsed if elapsed > 0 else None, "rollouts/tokens": tokens})
            if progress is not None:
                progress(finished, len(problems))
    seconds = time.perf_counter() - started
    everything = read_rollouts(path)
    from engine.recipes.pool import group_by_problem, is_mixed  # pool imports nothing of this module: no cycle

    groups = group_by_problem(everything)
    return RolloutResult(
        path=str(path), problems=len(groups), samples=len(everything), correct=sum(r.correct for r in everything),
        mixed=sum(is_mixed(g) for g in groups.values()), tokens=tokens, seconds=seconds,
        tok_s=tokens / seconds if seconds > 0 else 0.0, backend=spec.backend, template=choice.template,
        template_reason=choice.reason,
    )
