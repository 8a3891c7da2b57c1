"""The workbench's state: problems, their trees of branches, and outcome estimates; changed only on the UI thread."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from engine.core.data import Problem
from engine.core.decode import Step
from engine.core.interventions import InterventionResult
from engine.core.records import ScoredRollout, TokenScore

STREAMING, SCORING, DONE, CANCELLED, FAILED = "streaming", "scoring", "done", "cancelled", "failed"
"""A branch is decoding, then being scored, then done; or it stopped early, kept partial."""
UNSCORED = "unscored"
"""A rollout read from a file: its ids are known, its statistics come when it is first opened."""
STEERING = frozenset(("teacher", "random"))
"""Sources of the tokens an intervention substituted for the base's own pick (user-forced tokens are `forced`)."""


@dataclass(frozen=True)
class Verdict:
    """How a finished completion was graded."""

    answer: str | None
    correct: bool
    reason: str
    """match, mismatch, no_answer, timeout or parse_error (from the grader), or `file` for loaded rollouts."""

    @property
    def mark(self) -> str:
        return "✓" if self.correct else "✗"


@dataclass(eq=False)
class Branch:
    """One completion of a problem: a root rollout, or a fork of another branch at `fork_pos`."""

    key: str
    problem: Problem
    prompt_ids: tuple[int, ...]
    label: str
    """How it was made: greedy, sample 3, stored 2, or `@pos 'old'→'new'` for a fork."""
    tokens: list[TokenScore] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    """Who chose each token: base, teacher, forced or random (engine.core.decode.SOURCES)."""
    parent: Branch | None = None
    fork_pos: int | None = None
    state: str = STREAMING
    end: str | None = None
    error: str | None = None
    scored: bool = False
    """True once the whole completion went through the scorer: exact ranks, and the teacher's view if loaded."""
    verdict: Verdict | None = None
    children: list[Branch] = field(default_factory=list)
    stored_ids: tuple[int, ...] = ()
    """The completion ids of an UNSCORED rollout, waiting for the scorer."""
    names: dict[int, str] = field(default_factory=dict)
    """Texts of teacher picks that are not among their position's top-k."""

    def text_of(self, pos: int, token: int) -> str | None:
        """The text of a token id seen at a position (an alternative or the teacher's pick), if known."""
        alternatives = self.tokens[pos].top
        return next((alt.text for alt in alternatives if alt.id == token), self.names.get(token))

    @property
    def ids(self) -> list[int]:
        return [token.id for token in self.tokens]

    @property
    def busy(self) -> bool:
        return self.state in (STREAMING, SCORING)

    @property
    def shared(self) -> int:
        """How many leading tokens this branch shares with its parent."""
        return self.fork_pos or 0

    @property
    def mark(self) -> str:
        """One glyph for lists and titles: ✓ or ✗ once graded, else what it is doing or why it stopped."""
        if self.verdict is not None:
            return self.verdict.mark
        return {STREAMING: "…", SCORING: "…", CANCELLED: "◌", FAILED: "⚠"}.get(self.state, "·")

    def extend(self, steps: Iterable[Step]) -> None:
        """Append streamed steps: the driving model's statistics along this branch (ranks exact up to top-k)."""
        for step in steps:
            top = step.top
            rank = next((index + 1 for index, alt in enumerate(top) if alt.id == step.id), len(top) + 1)
            self.tokens.append(TokenScore(pos=step.pos, id=step.id, text=step.text, logprob=step.logprob,
                                          entropy=step.entropy, rank=rank, top=top))
            self.sources.append(step.source)
            self.end = step.end or self.end

    def apply_score(self, rollout: ScoredRollout, names: dict[int, str]) -> None:
        """Replace the streamed statistics with the scorer's exact ones (ranks and the teacher's pick)."""
        self.tokens = list(rollout.tokens)
        self.names.update(names)
        # A stored rollout arrives without sources: the base sampled all of it.
        self.sources += ["base"] * (len(self.tokens) - len(self.sources))
        self.scored = True

    def origin(self, pos: int) -> Branch:
        """The ancestor in which the prefix before `pos` was first decoded: estimates at `pos` live there."""
        branch = self
        while branch.parent is not None and branch.fork_pos is not None and pos <= branch.fork_pos:
            branch = branch.parent
        return branch

    def to_json(self) -> dict[str, Any]:
        """The branch as an export: enough to reload it, to re-score it, or to read it."""
        return {
            "problem": {"id": self.problem.id, "problem": self.problem.problem, "answer": self.problem.answer,
                        "source": self.problem.source},
            "key": self.key,
            "label": self.label,
            "parent": self.parent.key if self.parent else None,
            "fork_pos": self.fork_pos,
            "state": self.state,
            "end": self.end,
            "error": self.error,
            "scored": self.scored,
            "answer": self.verdict.answer if self.verdict else None,
            "correct": self.verdict.correct if self.verdict else None,
            "grade_reason": self.verdict.reason if self.verdict else None,
            "prompt_ids": list(self.prompt_ids),
            "completion_ids": self.ids,
            "sources": list(self.sources),
            "tokens": [token.to_json() for token in self.tokens],
        }


def intervention_label(result: InterventionResult) -> str:
    """An intervention branch's title: the mode, the gate's τ in nats where it has one, and the tokens it touched."""
    tau = f" τ={result.tau:.2f}" if result.tau is not None else ""
    return f"{result.mode}{tau} · {len(result.touched)} touched"


@dataclass(frozen=True)
class Outcome:
    """n continuations sampled after one choice at one position, graded: what P(correct | choice) rests on."""

    pos: int
    token: int
    text: str
    correct: int
    wrong: int
    no_answer: int
    low: float
    high: float
    """The Wilson 95% interval for P(correct)."""
    answers: tuple[tuple[str, int], ...]
    """The most common extracted answers with their counts, most common first."""

    @property
    def n(self) -> int:
        return self.correct + self.wrong + self.no_answer

    @property
    def p(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @staticmethod
    def tally(answers: Sequence[Verdict]) -> tuple[int, int, int, tuple[tuple[str, int], ...]]:
        """(correct, wrong, no answer, most common answers) over graded continuations."""
        correct = sum(v.correct for v in answers)
        no_answer = sum(not v.correct and v.answer is None for v in answers)
        common = Counter(v.answer if v.answer is not None else "—" for v in answers).most_common(3)
        return correct, len(answers) - correct - no_answer, no_answer, tuple(common)


@dataclass(eq=False)
class Entry:
    """One problem in the list and the root rollouts made or loaded for it."""

    problem: Problem
    roots: list[Branch] = field(default_factory=list)

    @property
    def graded(self) -> list[Verdict]:
        return [root.verdict for root in self.roots if root.verdict is not None]

    @property
    def pass_rate(self) -> str:
        graded = self.graded
        return f"{sum(v.correct for v in graded)}/{len(graded)}" if graded else ""


class Session:
    """Every problem, every branch by key, and every outcome estimate by (origin branch, position)."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.branches: dict[str, Branch] = {}
        self.outcomes: dict[tuple[str, int], dict[int, Outcome]] = {}

    def add_problems(self, problems: Iterable[Problem]) -> None:
        for problem in problems:
            self.entries.setdefault(problem.id, Entry(problem))

    def new_root(self, problem: Problem, prompt_ids: Sequence[int], label: str) -> Branch:
        entry = self.entries.setdefault(problem.id, Entry(problem))
        branch = Branch(key=f"{problem.id}#{len(entry.roots) + 1}", problem=problem,
                        prompt_ids=tuple(prompt_ids), label=label)
        entry.roots.append(branch)
        self.branches[branch.key] = branch
        return branch

    def add_stored(self, problem: Problem, prompt_ids: Sequence[int], completion_ids: Sequence[int],
                   label: str, verdict: Verdict) -> Branch:
        """A rollout read from a file, to be scored when opened."""
        branch = self.new_root(problem, prompt_ids, label)
        branch.state, branch.stored_ids, branch.verdict = UNSCORED, tuple(completion_ids), verdict
        return branch

    def new_fork(self, parent: Branch, pos: int, label: str) -> Branch:
        """A child that keeps the parent's tokens before `pos`; decoding fills in the rest."""
        return self._child(parent, pos, label, tokens=parent.tokens[:pos], sources=parent.sources[:pos])

    def new_intervention(self, root: Branch, result: InterventionResult) -> Branch:
        """A finished intervention run on a root's prompt: a child leaving the root where their tokens first differ.

        Its tokens and sources all come from the run, so a steered token inside the shared prefix (the gate
        may pick the base's own token) stays marked; it waits for the scorer like a decoded branch.
        """
        ids = result.completion_ids
        shared = next((pos for pos, (old, new) in enumerate(zip(root.ids, ids)) if old != new),
                      min(len(root.ids), len(ids)))
        verdict = None
        if result.correct is not None:
            verdict = Verdict(answer=result.answer, correct=result.correct, reason=result.grade_reason or "")
        branch = self._child(root, shared, intervention_label(result), state=SCORING, verdict=verdict)
        branch.extend(result.steps)
        return branch

    def _child(self, parent: Branch, pos: int, label: str, **fields: Any) -> Branch:
        branch = Branch(key=f"{parent.key}.{len(parent.children) + 1}", problem=parent.problem,
                        prompt_ids=parent.prompt_ids, label=label, parent=parent, fork_pos=pos, **fields)
        parent.children.append(branch)
        self.branches[branch.key] = branch
        return branch

    def record_outcome(self, branch: Branch, outcome: Outcome) -> None:
        origin = branch.origin(outcome.pos)
        self.outcomes.setdefault((origin.key, outcome.pos), {})[outcome.token] = outcome

    def outcomes_at(self, branch: Branch, pos: int) -> list[Outcome]:
        """Every choice estimated at this position of this branch's prefix, best first."""
        found = self.outcomes.get((branch.origin(pos).key, pos), {})
        return sorted(found.values(), key=lambda o: -o.p)

    def scored_roots(self) -> list[ScoredRollout]:
        """The root rollouts that went through the scorer: what Table 2 is computed over."""
        return [ScoredRollout(prompt_ids=root.prompt_ids, tokens=tuple(root.tokens))
                for entry in self.entries.values() for root in entry.roots if root.scored]
