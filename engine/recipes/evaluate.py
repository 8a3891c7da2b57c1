"""Benchmarks: pass@1 (greedy) and avg@k (sampled) graded by math-verify, with the sympy grader's disagreements."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from engine.core.config import ModelSpec
from engine.core.errors import RmxError, Stopped
from engine.core.io import atomic_write, atomic_write_json

AVG_BENCHMARKS = ("aime24", "amc23")
"""Few-problem benchmarks the paper scores as avg@8 (mean pass@1 over 8 sampled generations)."""
RESULT_FILE = "eval.json"
TABLE_FILE = "eval.md"
ITEMS_FILE = "items.jsonl"


def _names(value: Sequence[str] | str) -> tuple[str, ...]:
    parts = value.split(",") if isinstance(value, str) else list(value)
    return tuple(p.strip() for p in parts if p and p.strip())


@dataclass(frozen=True)
class EvalSpec:
    """Which benchmarks, how many problems, and how completions are drawn (paper §6.1 by default)."""

    benchmarks: tuple[str, ...] = ("math500",)
    """Bundled dataset names or problem files (math500, gsm8k, minerva, olympiadbench, aime24, amc23, …)."""
    limit: int | None = None
    """Use only the first N problems of each benchmark (short CPU runs)."""
    offset: int = 0
    """Skip this many problems of each benchmark first (a holdout slice of a training set)."""
    max_new_tokens: int = 4096
    """Longest completion."""
    template: str | None = "auto"
    """Prompt template: qwen, qwen3, mistral, r1-distill, chat, raw, or auto."""
    avg_k: int = 8
    """Samples per problem on the avg@k benchmarks."""
    avg_benchmarks: tuple[str, ...] = AVG_BENCHMARKS
    """Benchmarks scored as avg@k; every other one is greedy pass@1."""
    temperature: float = 0.6
    """Sampling temperature of the avg@k generations."""
    top_p: float = 0.95
    """Nucleus mass of the avg@k generations."""
    seed: int = 0
    """Seed of the avg@k generations."""
    backend: str = "auto"
    """auto (paged on CUDA, else hf), hf (engine.core.decode), paged (transformers' continuous batching) or vllm
    (optional extra, CUDA only)."""
    grade_timeout_s: float = 5.0
    """Per-answer grading timeout in seconds, for each grader."""
    extract: str = "strict"
    """How answers are extracted for grading: strict (no answer from a cut-off completion unless it boxed or stated
    one) or lenient (also the last number anywhere); see `rmx grade`."""

    def __post_init__(self) -> None:
        from engine.core.backends import BACKENDS
        from engine.core.grading import EXTRACT_MODES

        object.__setattr__(self, "benchmarks", _names(self.benchmarks))
        object.__setattr__(self, "avg_benchmarks", _names(self.avg_benchmarks))
        if not self.benchmarks:
            raise RmxError("--benchmarks is empty: name at least one (math500,gsm8k,…)")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise RmxError(f"--limit must be a positive integer, got {self.limit}")
        if not isinstance(self.offset, int) or self.offset < 0:
            raise RmxError(f"--offset must be an integer ≥ 0, got {self.offset}")
        for name in ("max_new_tokens", "avg_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise RmxError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if not self.temperature > 0 or not 0 < self.top_p <= 1:
            raise RmxError("--temperature must be > 0 and --top-p in (0, 1]")
        if self.backend not in BACKENDS:
            raise RmxError(f"--backend must be one of {', '.join(BACKENDS)}, got '{self.backend}'")
        if self.extract not in EXTRACT_MODES:
            raise RmxError(f"--extract must be one of {', '.join(EXTRACT_MODES)}, got '{self.extract}'")


@dataclass(frozen=True)
class Disagreement:
    """A completion the two graders judge differently."""

    problem_id: str
    sample: int
    extracted: str | None
    gold: str
    math_verify: bool
    sympy: bool


@dataclass(frozen=True)
class BenchmarkScore:
    benchmark: str
    metric: str
    """pass@1 or avg@k."""
    score: float
    """Fraction correct under math-verify."""
    score_sympy: float
    """The same under rmx's sympy grader."""
    problems: int
    samples: int
    disagreements: list[Disagreement] = field(default_factory=list)


@dataclass(frozen=True)
class EvalResult:
    """One model's scores: what `rmx eval` writes to eval.json and `rmx eval compare` reads."""

    model: str
    adapter: str | None
    grader: str
    scores: list[BenchmarkScore]
    seconds: float
    tokens: int
    template: str | None = None
    """The prompt template the problems were posed with (`auto` resolved); None in results from before it was kept."""
    template_reason: str | None = None
    """Why that template: the `auto` rule that picked it, or `asked for`."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "EvalResult":
        scores = [BenchmarkScore(**{**s, "disagreements": [Disagreement(**d) for d in s["disagreements"]]})
                  for s in data["scores"]]
        return cls(model=data["model"], adapter=data.get("adapter"), grader=data["grader"], scores=scores,
                   seconds=data["seconds"], tokens=data["tokens"], template=data.get("template"),
                   template_reason=data.get("template_reason"))


def _resume_items(path: Path, meta_path: Path, meta: dict, samples_of: Callable[[str], int],
                  resume: bool) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Items already complete in `path`, per (benchmark, problem); a problem cut short by a kill is dropped."""
    if not path.exists():
        return {}
    if not resume:
        raise RmxError(f"{path} already exists: pass --resume to continue it, or choose another --out")
    from engine.recipes.rollouts import check_extract, meta_settings

    check_extract(meta_path, meta["spec"]["extract"], path, "evaluated")
    if meta_path.exists() and meta_settings(json.loads(meta_path.read_text())) != meta_settings(meta):
        raise RmxError(f"{path} was evaluated with other settings (see {meta_path.name}): choose another --out")
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:  # the tail of a write a kill cut short
            continue
        grouped.setdefault((item["benchmark"], item["problem_id"]), []).append(item)
    done = {key: items for key, items in grouped.items() if len(items) == samples_of(key[0])}
    atomic_write(path, "".join(json.dumps(item, ensure_ascii=False) + "\n" for items in done.values() for item in items))
    return done


def evaluate(model: ModelSpec, spec: EvalSpec, out: str | Path | None = None, *, resume: bool = False,
             emit: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
             progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Score `model` (with its adapter, if any) on each benchmark; write eval.json, eval.md and items.jsonl to `out`.

    Items are appended one problem at a time. With `resume`, the problems already complete in `out` are
    kept and only the rest are generated; each problem's samples draw from its own seed, so the scores
    end as an uninterrupted run's would.
    """
    from engine.core.backends import SampleRequest, make_sampler
    from engine.core.data import load_problems
    from engine.core.grading import grade, grade_sympy
    from engine.core.backends import resolve_backend
    from engine.core.prompts import choose_template, prompt_ids
    from engine.recipes.rollouts import in_calls, problem_seed, record_template

    emit = emit or (lambda event: None)
    # The resolved name is what the run records: a resume on this machine picks the same backend.
    spec = replace(spec, backend=resolve_backend(spec.backend, model))
    suites = {name: load_problems(name, limit=spec.limit, offset=spec.offset) for name in spec.benchmarks}
    empty = [name for name, problems in suites.items() if not problems]
    if empty:
        raise RmxError(f"no problems left in {', '.join(empty)} after --offset {spec.offset}")
    total = sum(len(p) for p in suites.values())

    def samples_of(benchmark: str) -> int:
        return spec.avg_k if benchmark in spec.avg_benchmarks else 1

    items_out = Path(out) / ITEMS_FILE if out is not None else None
    done_items: dict[tuple[str, str], list[dict[str, Any]]] = {}
    if items_out is not None:
        items_out.parent.mkdir(parents=True, exist_ok=True)
        meta_path = items_out.with_name("eval.meta.json")
        meta = json.loads(json.dumps({"model": asdict(model), "spec": asdict(spec)}))  # tuples read back as lists
        done_items = _resume_items(items_out, meta_path, meta, samples_of, resume)
        if done_items and meta_path.exists():
            # Keep the template the items on file were posed with: this run must resolve to the same one.
            meta = {**meta, **{k: v for k, v in json.loads(meta_path.read_text()).items() if k == "template"}}
        if not items_out.exists():
            items_out.write_text("")
        atomic_write_json(meta_path, meta)
    current = make_sampler(spec.backend, model, temperature=spec.temperature, top_p=spec.top_p,
                           max_new_tokens=spec.max_new_tokens)
    choice = choose_template(spec.template, current.tokenizer, current.template_facts)
    if items_out is not None:
        record_template(items_out.with_name("eval.meta.json"), choice, out)
    started, tokens, done = time.perf_counter(), 0, len(done_items)
    if progress is not None:
        progress(done, total)
    scores: list[BenchmarkScore] = []
    for name, problems in suites.items():
        averaged = name in spec.avg_benchmarks
        n = samples_of(name)
        items = {p.id: done_items[(name, p.id)] for p in problems if (name, p.id) in done_items}
        # Greedy prompts share a batch where the backend allows it; sampled ones keep a seed each.
        per_call = current.problems_per_call if averaged else current.greedy_batch
        for batch in in_calls(problems, set(items), per_call):
            if should_stop is not None and should_stop():
                raise Stopped("evaluation stopped before it finished: resume it to go on")
            requests = [SampleRequest(tuple(prompt_ids(current.tokenizer, p.problem, choice.template)), n,
                                      problem_seed(spec.seed, p.id), greedy=not averaged) for p in batch]
            for problem, samples in zip(batch, current.sample(requests)):
                lines = []
                for index, sample in enumerate(samples):
                    text = current.tokenizer.decode(list(sample.completion_ids), skip_special_tokens=True)
                    mv = grade(text, problem.answer, timeout_s=spec.grade_timeout_s, finish=sample.finish,
                               extract=spec.extract)
                    sy = grade_sympy(text, problem.answer, timeout_s=spec.grade_timeout_s, finish=sample.finish,
                                     extract=spec.extract)
                    tokens += len(sample.completion_ids)
                    lines.append({"benchmark": name, "problem_id": problem.id, "sample": index, "text": text,
                                  "extracted": mv.extracted, "gold": problem.answer, "correct": mv.correct,
                                  "correct_sympy": sy.correct, "finish": sample.finish,
                                  "tokens": len(sample.completion_ids)})
                items[problem.id] = lines
                if items_out is not None:
                    # One write per problem: a kill leaves whole problems plus at most one cut-off tail.
                    with items_out.open("a", encoding="utf-8") as handle:
                        handle.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
                done += 1
                if progress is not None:
                    progress(done, total)
        score = _score(name, f"avg@{n}" if averaged else "pass@1", [items[p.id] for p in problems])
        scores.append(score)
        emit({"eval/benchmark": name, "eval/metric": score.metric, "eval/score": score.score,
              "eval/score_sympy": score.score_sympy, "eval/disagreements": len(score.disagreements)})
    result = EvalResult(model=model.label, adapter=model.adapter, grader="math-verify", scores=scores,
                        seconds=time.perf_counter() - started, tokens=tokens, template=choice.template,
                        template_reason=choice.reason)
    if out is not None:
        atomic_write_json(Path(out) / RESULT_FILE, result.to_json())
        atomic_write(Path(out) / TABLE_FILE, markdown_table(result))
    return result


def _score(benchmark: str, metric: str, problems: list[list[dict[str, Any]]]) -> BenchmarkScore:
    """A benchmark's score from its items, whether generated now or kept from before a resume."""
    samples = [item for items in problems for item in items]
    disagreements = [Disagreement(item["problem_id"], item["sample"], item["extracted"], item["gold"],
                                  item["correct"], item["correct_sympy"])
                     for item in samples if item["correct"] != item["correct_sympy"]]
    return BenchmarkScore(benchmark, metric, sum(item["correct"] for item in samples) / len(samples),
                          sum(item["correct_sympy"] for item in samples) / len(samples), len(problems),
                          len(samples), disagreements)


def markdown_table(result: EvalResult) -> str:
    """One model's scores as a markdown table, with the graders' disagreements listed under it."""
    lines = [f"# {result.model}", "", "| benchmark | metric | math-verify | sympy grader | problems | disagreements |",
             "|---|---|---:|---:|---:|---:|"]
    for s in result.scores:
        lines.append(f"| {s.benchmark} | {s.metric} | {s.score:.3f} | {s.score_sympy:.3f} | {s.problems} | "
                     f"{len(s.disagreements)} |")
    flagged = [(s.benchmark, d) for s in result.scores for d in s.disagreements]
    if flagged:
        lines += ["", "## Where the graders disagree", "", "| benchmark | problem | sample | extracted | gold | "
                  "math-verify | sympy |", "|---|---|---:|---|---|---|---|"]
        for bench, d in flagged:
            lines.append(f"| {bench} | {d.problem_id} | {d.sample} | `{d.extracted}` | `{d.gold}` | "
                         f"{d.math_verify} | {d.sympy} |")
    return "\n".join(lines) + "\n"


def load_result(where: str | Path) -> EvalResult:
    """An eval.json, or a folder holding one (an `rmx eval --out` folder or a job's artifacts)."""
    path = Path(where)
    for candidate in (path, path / RESULT_FILE, path / "artifacts" / RESULT_FILE):
        if candidate.is_file():
            try:
                return EvalResult.from_json(json.loads(candidate.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise RmxError(f"{candidate} is not an rmx eval result ({type(error).__name__})") from None
    raise RmxError(f"no {RESULT_FILE} at {where}")


@dataclass(frozen=True)
class Comparison:
    """Several runs' scores on the benchmarks they share."""

    runs: list[str]
    rows: list[dict[str, Any]]
    """One per benchmark: benchmark, metric, scores (one per run, None where absent), delta (last − first)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compare(results: Sequence[tuple[str, EvalResult]]) -> Comparison:
    if len(results) < 2:
        raise RmxError("eval compare needs at least two runs")
    names: list[str] = []
    for _, result in results:
        names += [s.benchmark for s in result.scores if s.benchmark not in names]
    rows = []
    for bench in names:
        found = [next((s for s in r.scores if s.benchmark == bench), None) for _, r in results]
        values = [s.score if s else None for s in found]
        metric = next(s.metric for s in found if s)
        delta = values[-1] - values[0] if values[0] is not None and values[-1] is not None else None
        rows.append({"benchmark": bench, "metric": metric, "scores": values, "delta": delta})
    return Comparison([label for label, _ in results], rows)


def comparison_table(comparison: Comparison) -> str:
    head = "| benchmark | metric | " + " | ".join(comparison.runs) + " | Δ last − first |"
    lines = [head, "|---|---|" + "---:|" * (len(comparison.runs) + 1)]
    for row in comparison.rows:
        cells = " | ".join("–" if v is None else f"{v:.3f}" for v in row["scores"])
        delta = "–" if row["delta"] is None else f"{row['delta']:+.3f}"
        lines.append(f"| {row['benchmark']} | {row['metric']} | {cells} | {delta} |")
    return "\n".join(lines) + "\n"
