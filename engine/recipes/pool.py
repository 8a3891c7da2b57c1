"""The training pool: mixed-success problems, optional length trim, base entropies, and the stats `rmx pool show` prints."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, median
from typing import TYPE_CHECKING, Callable, Sequence

from engine.core.config import Tau
from engine.core.errors import RmxError
from engine.core.io import atomic_write_json
from engine.core.records import Rollout, read_rollouts, write_rollouts

if TYPE_CHECKING:
    from engine.core.models import LoadedModel

DEFAULT_TAUS = ("1.0", "1.2", "1.4", "1.6", "1.8", "2.2", "q0.95", "q0.97")
"""The τ values `rmx pool show` reports: the authors' sweep grid plus two quantiles."""


@dataclass(frozen=True)
class PoolSpec:
    """Which problems and rollouts of a rollouts.jsonl go into training."""

    rollouts: str
    """The rollouts.jsonl written by `rmx rollouts`."""
    size: int | None = None
    """Keep the N mixed-success problems whose pass rate is closest to 0.5 (the authors keep 50); None keeps all."""
    keep_shortest: float = 1.0
    """Fraction of each pool problem's rollouts kept, shortest completions first; a problem left without both
    right and wrong rollouts leaves the pool. 1.0 (default) keeps all. The authors keep the shortest 0.8, which
    builds in a length bias: long rollouts are more often wrong, so trimming drops wrong rollouts more than
    correct ones and teaches brevity as much as correctness."""

    def __post_init__(self) -> None:
        if self.size is not None and (not isinstance(self.size, int) or self.size < 1):
            raise RmxError(f"--size must be a positive integer, got {self.size}")
        if not 0.0 < self.keep_shortest <= 1.0:
            raise RmxError(f"--keep-shortest must be in (0, 1], got {self.keep_shortest}")


def group_by_problem(rollouts: Sequence[Rollout]) -> "OrderedDict[str, list[Rollout]]":
    """Rollouts grouped per problem, problems in first-seen order, samples in file order."""
    groups: OrderedDict[str, list[Rollout]] = OrderedDict()
    for rollout in rollouts:
        groups.setdefault(rollout.problem_id, []).append(rollout)
    return groups


def pass_rate(group: Sequence[Rollout]) -> float:
    return sum(r.correct for r in group) / len(group)


def is_mixed(group: Sequence[Rollout]) -> bool:
    """Some rollouts right and some wrong: the only problems with a two-sided training signal (paper §5.1)."""
    return 0.0 < pass_rate(group) < 1.0


def k_label(groups: "OrderedDict[str, list[Rollout]]") -> str:
    """K as a user reads it: `8`, or `4–8` when problems have different sample counts."""
    sizes = sorted({len(g) for g in groups.values()})
    if not sizes:
        return "0"
    return str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"


def require_signal(rollouts: Sequence[Rollout]) -> None:
    """Refuse rollouts with no problem that has both right and wrong samples: there is nothing to contrast."""
    groups = group_by_problem(rollouts)
    if not any(is_mixed(g) for g in groups.values()):
        raise RmxError(
            f"no training signal: 0 of {len(groups)} problems have mixed success at K={k_label(groups)} "
            "(sample more rollouts per problem, or pick problems of medium difficulty)"
        )


def select_pool(rollouts: Sequence[Rollout], spec: PoolSpec) -> list[Rollout]:
    """Mixed-success problems (closest to 0.5 first when `size` is set), then the optional per-problem length trim.

    Refuses a trim that leaves no problem with both right and wrong rollouts.
    """
    chosen = _untrimmed(rollouts, spec.size)
    if spec.keep_shortest >= 1.0:
        return chosen
    trim = trim_longest(chosen, spec.keep_shortest)
    if not trim.kept:
        raise RmxError(f"--keep-shortest {spec.keep_shortest:g} leaves none of the {trim.problems_removed} pool "
                       "problems with both right and wrong rollouts: keep more, or trim nothing (1.0)")
    return trim.kept


def _untrimmed(rollouts: Sequence[Rollout], size: int | None) -> list[Rollout]:
    require_signal(rollouts)
    groups = group_by_problem(rollouts)
    mixed = [(pid, g) for pid, g in groups.items() if is_mixed(g)]
    if size is not None:
        # Stable: ties keep the file order, so the same rollouts always give the same pool.
        mixed = sorted(mixed, key=lambda item: abs(pass_rate(item[1]) - 0.5))[:size]
    return [r for _, g in mixed for r in g]


@dataclass(frozen=True)
class Trim:
    """What the length trim kept, and what it took out of the pool."""

    kept: list[Rollout]
    problems_removed: int
    """Problems that lost their right or their wrong rollouts to the trim, and with them their place in the pool."""
    rollouts_removed: int
    """Rollouts the pool lost: the trimmed ones and every rollout of a removed problem."""


def trim_longest(rollouts: Sequence[Rollout], keep: float) -> Trim:
    """Within each problem, keep the shortest `keep` fraction of its rollouts (at least one), in file order;
    keep the problem only if it still has right and wrong rollouts (the authors' per-problem trim)."""
    kept: list[Rollout] = []
    removed = 0
    for group in group_by_problem(rollouts).values():
        count = max(1, int(round(keep * len(group))))
        ranked = sorted(range(len(group)), key=lambda i: (len(group[i].completion_ids), i))
        shortest = set(ranked[:count])
        trimmed = [r for i, r in enumerate(group) if i in shortest]
        if is_mixed(trimmed):
            kept.extend(trimmed)
        else:
            removed += 1
    return Trim(kept=kept, problems_removed=removed, rollouts_removed=len(rollouts) - len(kept))


# --- base entropies ---------------------------------------------------------------------------------------


def _rollout_key(rollout: Rollout) -> str:
    digest = hashlib.sha1(json.dumps([rollout.prompt_ids, rollout.completion_ids]).encode())
    return digest.hexdigest()


def _read_entropy_cache(cache: Path, model_key: str) -> dict[str, list[float]]:
    if not cache.is_file():
        return {}
    known: dict[str, list[float]] = {}
    lines = cache.read_text(encoding="utf-8").split("\n")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        return {}
    if header.get("model") != model_key:
        return {}
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill: that rollout is scored again
        known[row["key"]] = row["entropies"]
    return known


def base_entropies(model, rollouts: Sequence[Rollout], chunk_elements: int = 1 << 24,
                   cache: Path | None = None, progress: Callable[[int, int], None] | None = None
                   ) -> list[list[float]]:
    """Exact entropy (nats) under `model` as loaded (its adapter applied, if it has one) at every completion
    token of each rollout.

    With `cache`, results are appended to a JSONL file as they are computed and reused by later calls
    for the same model, so a killed scoring pass resumes where it stopped.
    """
    import torch

    from engine.core.scoring import lse_entropy, logit_transform, hidden_states

    model_key = f"{model.spec.source}|{model.spec.dtype}|{model.spec.revision}"
    if model.spec.adapter:
        # Appended only when present, so caches written for a bare base stay valid.
        model_key += f"|{model.spec.adapter}"
    known = _read_entropy_cache(cache, model_key) if cache is not None else {}
    handle = None
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fresh = not known
        handle = cache.open("w" if fresh else "a", encoding="utf-8")
        if fresh:
            handle.write(json.dumps({"model": model_key}) + "\n")
        elif not cache.read_bytes().endswith(b"\n"):
            handle.write("\n")  # end a line cut short by a kill, so the next record starts clean
    head = model.core.get_output_embeddings()
    transform = logit_transform(model.core.config)
    step = max(1, chunk_elements // model.vocab_size)
    results: list[list[float]] = []
    try:
        for index, rollout in enumerate(rollouts):
            key = _rollout_key(rollout)
            if key not in known:
                if not rollout.prompt_ids or not rollout.completion_ids:
                    raise RmxError(f"rollout {rollout.problem_id}#{rollout.sample} has an empty prompt or completion")
                ids = torch.tensor([list(rollout.prompt_ids) + list(rollout.completion_ids)], device=model.device)
                start = len(rollout.prompt_ids) - 1
                values: list[float] = []
                with torch.inference_mode(), model.active() as module:
                    h = hidden_states(module, ids, torch.ones_like(ids))[0, start:-1]
                    for a in range(0, h.shape[0], step):
                        _, entropy = lse_entropy(transform(head(h[a:a + step]).float()))
                        values += entropy.tolist()
                known[key] = values
                if handle is not None:
                    handle.write(json.dumps({"key": key, "entropies": values}) + "\n")
                    handle.flush()
            results.append(known[key])
            if progress is not None:
                progress(index + 1, len(rollouts))
    finally:
        if handle is not None:
            handle.close()
    return results


# --- stats for `rmx pool show` ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LengthStats:
    """Completion lengths (tokens) of a set of rollouts."""

    count: int
    mean: float | None
    median: float | None
    p90: float | None

    @classmethod
    def of(cls, lengths: Sequence[int]) -> "LengthStats":
        if not lengths:
            return cls(0, None, None, None)
        ordered = sorted(lengths)
        return cls(len(ordered), fmean(ordered), median(ordered), float(ordered[int(0.9 * (len(ordered) - 1))]))


@dataclass(frozen=True)
class DecisionRate:
    """How many completion tokens a τ marks as decision points."""

    tau: str
    nats: float
    fraction: float
    correct: float | None
    """The fraction within correct rollouts."""
    wrong: float | None


@dataclass(frozen=True)
class PoolStats:
    """What the pool is made of, and what the pool step's options do to it."""

    problems: int
    k: str
    mixed: int
    all_correct: int
    all_wrong: int
    selected: int
    """Problems in the pool after `size`."""
    rollouts: int
    """Rollouts in the pool after the length trim."""
    pass_rates: list[tuple[str, int]]
    """(pass rate as correct/K, number of problems), over every problem in the file."""
    lengths_correct: LengthStats
    """Pool completion lengths before the trim, correct rollouts."""
    lengths_wrong: LengthStats
    trimmed_correct: LengthStats
    """After the trim (equal to the above when `keep_shortest` is 1)."""
    trimmed_wrong: LengthStats
    keep_shortest: float
    decision: list[DecisionRate] | None = None
    """Decision-point rate per τ under the base model (None without --base)."""
    trim_removed_problems: int = 0
    """Pool problems the length trim removed (no longer both right and wrong)."""
    trim_removed_rollouts: int = 0
    """Pool rollouts the length trim removed, those of removed problems included."""

    def to_json(self) -> dict:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "PoolStats":
        lengths = {key: LengthStats(**data[key])
                   for key in ("lengths_correct", "lengths_wrong", "trimmed_correct", "trimmed_wrong")}
        decision = data.get("decision")
        return cls(**{**data, **lengths,
                      "pass_rates": [(label, count) for label, count in data["pass_rates"]],
                      "decision": None if decision is None else [DecisionRate(**row) for row in decision]})


def pool_stats(rollouts: Sequence[Rollout], spec: PoolSpec, entropies: Sequence[Sequence[float]] | None = None,
               taus: Sequence[str] = DEFAULT_TAUS) -> PoolStats:
    """Stats of the file and of the pool `spec` selects; `entropies` (one list per pool rollout, in pool
    order before the trim) adds the decision-point rate per τ."""
    groups = group_by_problem(rollouts)
    histogram: dict[tuple[float, str], int] = {}
    for group in groups.values():
        right = sum(r.correct for r in group)
        key = (right / len(group), f"{right}/{len(group)}")
        histogram[key] = histogram.get(key, 0) + 1
    untrimmed = _untrimmed(rollouts, spec.size)
    trim = trim_longest(untrimmed, spec.keep_shortest) if spec.keep_shortest < 1.0 else Trim(untrimmed, 0, 0)
    trimmed = trim.kept
    rates = None
    if entropies is not None:
        if len(entropies) != len(untrimmed):
            raise RmxError(f"{len(entropies)} entropy lists for {len(untrimmed)} pool rollouts")
        pooled = [h for seq in entropies for h in seq]
        rates = []
        for text in taus:
            nats = Tau.parse(text).resolve(pooled)

            def share(which: Sequence[Sequence[float]], nats: float = nats) -> float | None:
                flat = [h for seq in which for h in seq]
                return sum(h > nats for h in flat) / len(flat) if flat else None

            rates.append(DecisionRate(
                tau=str(Tau.parse(text)), nats=nats, fraction=share(entropies) or 0.0,
                correct=share([e for e, r in zip(entropies, untrimmed) if r.correct]),
                wrong=share([e for e, r in zip(entropies, untrimmed) if not r.correct]),
            ))
    lengths = lambda pool, correct: LengthStats.of(  # noqa: E731
        [len(r.completion_ids) for r in pool if r.correct == correct])
    return PoolStats(
        problems=len(groups), k=k_label(groups), mixed=sum(is_mixed(g) for g in groups.values()),
        all_correct=sum(pass_rate(g) == 1.0 for g in groups.values()),
        all_wrong=sum(pass_rate(g) == 0.0 for g in groups.values()),
        selected=len(group_by_problem(untrimmed)), rollouts=len(trimmed),
        pass_rates=[(label, count) for (_, label), count in sorted(histogram.items())],
        lengths_correct=lengths(untrimmed, True), lengths_wrong=lengths(untrimmed, False),
        trimmed_correct=lengths(trimmed, True), trimmed_wrong=lengths(trimmed, False),
        keep_shortest=spec.keep_shortest, decision=rates, trim_removed_problems=trim.problems_removed,
        trim_removed_rollouts=trim.rollouts_removed,
    )


def entropy_cache(rollouts: str | Path) -> Path:
    """Where the base entropies of a rollouts file are cached: NAME.entropies.jsonl beside it."""
    path = Path(rollouts)
    return path.with_name(path.stem + ".entropies.jsonl")


def inspect_pool(spec: PoolSpec, taus: Sequence[str] = DEFAULT_TAUS,
                 base: Callable[[], "LoadedModel"] | None = None) -> PoolStats:
    """The stats of `spec.rollouts` and its pool; with `base` (called for the model once the file and τ values
    are checked, so a typo never waits for a model to load), also the decision-point rate per τ under that
    model over the untrimmed pool, its entropies cached beside the rollouts."""
    for text in taus:
        Tau.parse(text)
    rollouts = read_rollouts(spec.rollouts)
    entropies = None
    if base is not None:
        untrimmed = select_pool(rollouts, PoolSpec(spec.rollouts, spec.size))
        entropies = base_entropies(base(), untrimmed, cache=entropy_cache(spec.rollouts))
    return pool_stats(rollouts, spec, entropies, taus)


@dataclass(frozen=True)
class PoolResult:
    """Where `rmx pool select` wrote the pool, and its stats."""

    path: str
    stats: PoolStats

    def to_json(self) -> dict:
        return {"path": self.path, "stats": self.stats.to_json()}


def write_pool(spec: PoolSpec, out: str | Path) -> PoolResult:
    """Select the pool of `spec.rollouts` into `out` (a pool.jsonl) with its stats beside it."""
    rollouts = read_rollouts(spec.rollouts)
    pool = select_pool(rollouts, spec)
    path = Path(out)
    write_rollouts(pool, path)
    stats = pool_stats(rollouts, spec)
    atomic_write_json(path.with_name(f"{path.stem}_stats.json"), stats.to_json())
    return PoolResult(str(path), stats)
