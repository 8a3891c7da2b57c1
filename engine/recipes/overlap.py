"""Edit overlap: on the base's greedy rollouts, do a teacher and an adapter change the same argmaxes to the same tokens?"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

from engine.core.config import ModelSpec, ScoreSpec, Tau
from engine.core.data import Problem
from engine.core.errors import RmxError
from engine.core.models import LoadedModel, load_views
from engine.core.prompts import choose_template, prompt_ids
from engine.core.records import TokenScore
from engine.core.scoring import score
from engine.recipes.analysis import greedy_rollouts

KINDS = ("teacher", "adapter", "both")
"""Edited by the teacher only, by the adapter only, or by both."""


@dataclass(frozen=True)
class OverlapSpec:
    """What `rmx overlap` compares and on what."""

    tau: str = "q0.9"
    """The entropy gate whose coverage of each edit set is reported: nats (1.4) or a quantile of the base's
    entropies over the scored tokens (q0.9)."""
    max_new_tokens: int = 256
    """Most tokens of each greedy base rollout."""
    template: str | None = "auto"
    """Prompt template (chat, qwen, raw, auto, …)."""
    batch_size: int = 8
    """Problems decoded together."""

    def __post_init__(self) -> None:
        Tau.parse(self.tau)
        if self.max_new_tokens < 1:
            raise RmxError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise RmxError(f"batch_size must be at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class EntropyProfile:
    """The base entropy (nats) at the positions of one edit set."""

    count: int
    mean: float | None
    median: float | None
    p10: float | None
    p90: float | None
    gated: int
    """How many of these positions the gate H > τ covers."""

    def to_json(self) -> dict:
        coverage = self.gated / self.count if self.count else None
        return {"count": self.count, "mean": self.mean, "median": self.median, "p10": self.p10, "p90": self.p90,
                "gated": self.gated, "coverage": coverage}


@dataclass(frozen=True)
class PositionEdit:
    """One position where the teacher, the adapter or both pick another token than the base's argmax."""

    problem_id: str
    pos: int
    kind: str
    """teacher, adapter or both."""
    base_id: int
    teacher_id: int
    adapter_id: int
    entropy: float


@dataclass(frozen=True)
class Overlap:
    """The two edit sets on the same tokens, compared."""

    base: str
    teacher: str
    adapter: str
    problems: int
    tokens: int
    tau: float
    """The gate τ in nats."""
    teacher_edits: int
    adapter_edits: int
    both: int
    """Positions both change (whatever tokens they pick)."""
    same_token: int
    """Of `both`, positions where they pick the same new token."""
    profiles: dict[str, EntropyProfile]
    """Per set: all (every scored token), teacher (all its edits), adapter (all its edits), both,
    teacher_only and adapter_only."""
    edits: tuple[PositionEdit, ...]

    @property
    def jaccard(self) -> float | None:
        union = self.teacher_edits + self.adapter_edits - self.both
        return self.both / union if union else None

    @property
    def agreement(self) -> float | None:
        return self.same_token / self.both if self.both else None

    def to_json(self) -> dict:
        return {
            "base": self.base, "teacher": self.teacher, "adapter": self.adapter, "problems": self.problems,
            "tokens": self.tokens, "tau": self.tau, "teacher_edits": self.teacher_edits,
            "adapter_edits": self.adapter_edits, "both": self.both, "jaccard": self.jaccard,
            "same_token": self.same_token, "agreement": self.agreement,
            "profiles": {name: profile.to_json() for name, profile in self.profiles.items()},
            "edits": [vars(edit) for edit in self.edits],
        }


@dataclass(frozen=True)
class RolloutEdits:
    """One prompt's greedy base rollout and, per token, who changes the base's argmax there: the compare view's
    overlap source."""

    teacher: str
    adapter: str
    ids: tuple[int, ...]
    """The base's greedy completion."""
    kinds: tuple[str | None, ...]
    """Per token: teacher, adapter, both, or None (neither edits)."""
    teacher_ids: tuple[int, ...]
    """The teacher's argmax at each position."""
    adapter_ids: tuple[int, ...]
    """The adapter's argmax at each position."""
    entropies: tuple[float, ...]
    """The base entropy (nats) at each position."""

    def count(self, kind: str) -> int:
        return sum(k == kind for k in self.kinds)

    def to_json(self) -> dict:
        return {"teacher": self.teacher, "adapter": self.adapter, "ids": list(self.ids), "kinds": list(self.kinds),
                "teacher_ids": list(self.teacher_ids), "adapter_ids": list(self.adapter_ids),
                "entropies": list(self.entropies)}

    @classmethod
    def from_json(cls, data: dict) -> "RolloutEdits":
        return cls(teacher=data["teacher"], adapter=data["adapter"], ids=tuple(data["ids"]),
                   kinds=tuple(data["kinds"]), teacher_ids=tuple(data["teacher_ids"]),
                   adapter_ids=tuple(data["adapter_ids"]), entropies=tuple(data["entropies"]))


def rollout_edits(base: LoadedModel, teacher: LoadedModel, adapter: LoadedModel, prompt: Sequence[int],
                  max_new_tokens: int) -> RolloutEdits:
    """Greedy-decode the base on one prompt and mark each token the teacher, the adapter or both would change."""
    [(_, completion, _)] = list(greedy_rollouts(base, [list(prompt)], max_new_tokens, 1))
    if not completion:
        raise RmxError("the base produced no tokens on this prompt: nothing to compare")
    pair = [(list(prompt), completion)]
    by_teacher = score(base, pair, teacher, ScoreSpec(top_k=1))[0].tokens
    by_adapter = score(base, pair, adapter, ScoreSpec(top_k=1))[0].tokens
    return RolloutEdits(
        teacher=teacher.label, adapter=adapter.label, ids=tuple(completion),
        kinds=tuple(edit_kinds(by_teacher, by_adapter)),
        teacher_ids=tuple(t.teacher.id for t in by_teacher), adapter_ids=tuple(a.teacher.id for a in by_adapter),
        entropies=tuple(t.entropy for t in by_teacher),
    )


def edit_kinds(teacher_tokens: Sequence[TokenScore], adapter_tokens: Sequence[TokenScore]) -> list[str | None]:
    """Per position of one rollout scored twice: teacher, adapter, both or None (neither changes the argmax)."""
    kinds: list[str | None] = []
    for by_teacher, by_adapter in zip(teacher_tokens, adapter_tokens, strict=True):
        teacher_edits = _edits(by_teacher)
        adapter_edits = _edits(by_adapter)
        kinds.append("both" if teacher_edits and adapter_edits else "teacher" if teacher_edits
                     else "adapter" if adapter_edits else None)
    return kinds


def _edits(token: TokenScore) -> bool:
    """Whether the second model picks another token than the base's greedy one. The rollout's own token is the
    base's argmax as decoding saw it: a tie the scorer's full-sequence pass orders the other way is no edit."""
    if token.teacher is None:
        raise RmxError("a token was scored without a second model: nothing to compare")
    return token.teacher.id != token.id


def _profile(entropies: list[float], tau: float) -> EntropyProfile:
    if not entropies:
        return EntropyProfile(0, None, None, None, None, 0)
    ordered = sorted(entropies)

    def quantile(q: float) -> float:
        return Tau(q, quantile=True).resolve(ordered)

    return EntropyProfile(len(ordered), statistics.fmean(ordered), statistics.median(ordered), quantile(0.1),
                          quantile(0.9), sum(e > tau for e in ordered))


def compare_edits(base: LoadedModel, teacher: LoadedModel, adapter: LoadedModel, problems: Sequence[Problem],
                  spec: OverlapSpec, on_progress: Callable[[int, int], None] | None = None) -> Overlap:
    """Greedy-decode the base on each problem and score every token under the teacher and under the adapter."""
    total = len(problems)
    template = choose_template(spec.template, base.tokenizer, base.template_facts).template
    prompts = [prompt_ids(base.tokenizer, p.problem, template) for p in problems]
    by_index: dict[int, tuple[str, list[TokenScore], list[TokenScore]]] = {}
    for done, (index, completion, _) in enumerate(greedy_rollouts(base, prompts, spec.max_new_tokens,
                                                                  spec.batch_size), start=1):
        if completion:
            pair = [(prompts[index], completion)]
            by_teacher = score(base, pair, teacher, ScoreSpec(top_k=1))[0]
            by_adapter = score(base, pair, adapter, ScoreSpec(top_k=1))[0]
            by_index[index] = (problems[index].id, list(by_teacher.tokens), list(by_adapter.tokens))
        if on_progress is not None:
            on_progress(done, total)
    scored = [by_index[index] for index in sorted(by_index)]
    entropies = [t.entropy for _, tokens, _ in scored for t in tokens]
    if not entropies:
        raise RmxError("the base produced no tokens on these problems: nothing to compare")
    tau = Tau.parse(spec.tau).resolve(entropies)
    edits: list[PositionEdit] = []
    for problem_id, by_teacher, by_adapter in scored:
        for kind, t, a in zip(edit_kinds(by_teacher, by_adapter), by_teacher, by_adapter):
            if kind is not None:
                edits.append(PositionEdit(problem_id, t.pos, kind, t.id, t.teacher.id, a.teacher.id,
                                          t.entropy))
    sets = {
        "all": entropies,
        "teacher": [e.entropy for e in edits if e.kind in ("teacher", "both")],
        "adapter": [e.entropy for e in edits if e.kind in ("adapter", "both")],
        "both": [e.entropy for e in edits if e.kind == "both"],
        "teacher_only": [e.entropy for e in edits if e.kind == "teacher"],
        "adapter_only": [e.entropy for e in edits if e.kind == "adapter"],
    }
    both = [e for e in edits if e.kind == "both"]
    return Overlap(
        base=base.label, teacher=teacher.label, adapter=adapter.label, problems=len(scored),
        tokens=len(entropies), tau=tau, teacher_edits=len(sets["teacher"]), adapter_edits=len(sets["adapter"]),
        both=len(both), same_token=sum(e.teacher_id == e.adapter_id for e in both),
        profiles={name: _profile(values, tau) for name, values in sets.items()}, edits=tuple(edits),
    )


def run_overlap(base: ModelSpec, teacher: ModelSpec, adapter: str, problems: Sequence[Problem], spec: OverlapSpec,
                on_progress: Callable[[int, int], None] | None = None) -> Overlap:
    """Load base, teacher and base+adapter (sharing weights where they can) and compare their edits."""
    from dataclasses import replace

    if base.adapter:
        raise RmxError("--base must be a bare model: give the adapter to compare with --adapter")
    views = load_views(base, {"teacher": teacher, "adapter": replace(base, adapter=adapter)})
    return compare_edits(views["base"], views["teacher"], views["adapter"], problems, spec, on_progress)


def overlap_table(result: Overlap) -> str:
    """The overlap as a plain-text table for the terminal."""
    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.1f}%"

    def nats(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    lines = [
        f"base {result.base} · teacher {result.teacher} · adapter {result.adapter}",
        f"{result.problems} problems, {result.tokens} base tokens (greedy), gate τ = {result.tau:.2f} nats",
        "",
        f"teacher edits {result.teacher_edits} · adapter edits {result.adapter_edits} · both {result.both} · "
        f"Jaccard {nats(result.jaccard)}",
        f"where both edit, same new token: {result.same_token}/{result.both} ({pct(result.agreement)})",
        "",
        f"{'set':<14}{'n':>6}{'mean H':>9}{'median':>9}{'p10':>7}{'p90':>7}{'H>τ':>7}{'covered':>9}",
    ]
    for name, profile in result.profiles.items():
        data = profile.to_json()
        lines.append(f"{name:<14}{profile.count:>6}{nats(profile.mean):>9}{nats(profile.median):>9}"
                     f"{nats(profile.p10):>7}{nats(profile.p90):>7}{profile.gated:>7}{pct(data['coverage']):>9}")
    return "\n".join(lines)
