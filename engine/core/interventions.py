"""Interventions on a base decode (paper §3.2–3.3: oracle, random control, entropy gate, forcing) and forks."""

from __future__ import annotations

import math
import random
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence

from engine.core.config import Tau
from engine.core.decode import DecodeSession, Rule, SamplingSpec, Step, StepContext, check_force, check_prompt
from engine.core.errors import Interrupted, RmxError
from engine.core.grading import extract_answer, grade
from engine.core.models import LoadedModel

MODES = ("oracle", "random", "gated", "manual")
"""What `generate(intervene=...)` accepts; None decodes the base alone."""
RUN_MODES = ("base", "teacher", *MODES)
"""Every kind of run a result can come from: the base alone, the teacher alone, or an intervention."""
RANDOM_POOL = 20
"""The random control draws from the base top-20 minus its argmax (paper §3.2)."""
WILSON_Z = 1.959963984540054
"""Two-sided 95% normal quantile."""

ShouldStop = Callable[[], bool]
"""Asked between decoding steps: True stops the run with Interrupted."""



@dataclass(frozen=True)
class InterventionResult:
    """One decoded completion under one mode, with what the intervention changed and how it was graded."""

    mode: str
    """base, teacher, oracle, random, gated or manual."""
    steps: tuple[Step, ...]
    """The decoded tokens; positions continue those of any kept rollout prefix."""
    completion_ids: tuple[int, ...]
    """The whole completion: the kept rollout prefix, then the decoded tokens."""
    text: str
    """The whole completion decoded from its ids, a final EOS left out."""
    touched: tuple[int, ...]
    """Positions whose token is not the driving model's own pick: teacher, random or forced tokens."""
    tau: float | None = None
    """The gate's τ in nats (resolved when given as a quantile); None for other modes."""
    answer: str | None = None
    """The extracted final answer, or None when none was found."""
    gold: str | None = None
    """The gold answer graded against, or None when ungraded."""
    correct: bool | None = None
    """Whether `answer` matches `gold`; None when ungraded."""
    grade_reason: str | None = None
    """The grader's reason (match, mismatch, no_answer, timeout, parse_error); None when ungraded."""
    grader: str | None = None
    """Which grader gave the verdict; None when ungraded."""

    def __post_init__(self) -> None:
        if self.mode not in RUN_MODES:
            raise RmxError(f"unknown mode '{self.mode}': use one of {', '.join(RUN_MODES)}")
        if self.tau is not None and not self.tau >= 0:
            raise RmxError(f"τ must be ≥ 0 nats, got {self.tau}")
        positions = {step.pos for step in self.steps}
        if not set(self.touched) <= positions:
            raise RmxError("touched positions must be positions of decoded steps")
        if (self.gold is None) != (self.correct is None):
            raise RmxError("a graded result needs both its gold answer and its verdict")

    @property
    def touched_frac(self) -> float:
        """Touched positions over decoded tokens (0 when nothing was decoded)."""
        return len(self.touched) / len(self.steps) if self.steps else 0.0

    @property
    def entropies(self) -> list[float]:
        return [step.entropy for step in self.steps]

    def to_json(self, with_ids: bool = False) -> dict[str, Any]:
        """The public `rmx generate --json` shape, exactly; grading lives in `grade_json`.

        `with_ids` gives instead the whole record (full steps, ids, τ and verdict), which `from_json` rebuilds.
        """
        if with_ids:
            return {
                "mode": self.mode,
                "steps": [step.to_json(with_ids=True) for step in self.steps],
                "completion_ids": list(self.completion_ids),
                "text": self.text,
                "touched": list(self.touched),
                "tau": self.tau,
                "answer": self.answer,
                "gold": self.gold,
                "correct": self.correct,
                "grade_reason": self.grade_reason,
                "grader": self.grader,
            }
        return {
            "tokens": [step.to_json() for step in self.steps],
            "text": self.text,
            "touched": list(self.touched),
            "touched_frac": self.touched_frac,
            "answer": self.answer,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "InterventionResult":
        """Rebuild a result from `to_json(with_ids=True)`."""
        return cls(
            mode=data["mode"], steps=tuple(Step.from_json(step) for step in data["steps"]),
            completion_ids=tuple(int(i) for i in data["completion_ids"]), text=data["text"],
            touched=tuple(int(p) for p in data["touched"]), tau=data.get("tau"), answer=data.get("answer"),
            gold=data.get("gold"), correct=data.get("correct"), grade_reason=data.get("grade_reason"),
            grader=data.get("grader"),
        )

    def grade_json(self) -> dict[str, Any] | None:
        """The verdict, for callers that choose to show it next to `to_json()`; None when ungraded."""
        if self.gold is None:
            return None
        return {"correct": self.correct, "gold": self.gold, "reason": self.grade_reason, "grader": self.grader}


@dataclass(frozen=True)
class ForkEstimate:
    """P(correct | the token at a position), estimated from n continuations of one fork."""

    pos: int
    """The forked position, counted from the first completion token."""
    token: int
    """The token forced there."""
    n: int
    correct: int
    """How many continuations were graded correct."""
    p: float
    """correct / n."""
    low: float
    """Lower end of the Wilson 95% interval."""
    high: float
    """Upper end of the Wilson 95% interval."""
    continuations: tuple[InterventionResult, ...]

    def __post_init__(self) -> None:
        if self.n < 1 or not 0 <= self.correct <= self.n:
            raise RmxError(f"a fork estimate needs 0 ≤ correct ≤ n and n ≥ 1, got {self.correct}/{self.n}")
        if not 0.0 <= self.low <= self.p <= self.high <= 1.0:
            raise RmxError(f"inconsistent interval {self.low} ≤ {self.p} ≤ {self.high}")

    def to_json(self, with_ids: bool = False) -> dict[str, Any]:
        """The public shape; `with_ids` gives the whole record (full continuations), which `from_json` rebuilds."""
        if with_ids:
            return {
                "pos": self.pos, "token": self.token, "n": self.n, "correct": self.correct,
                "p": self.p, "low": self.low, "high": self.high,
                "continuations": [c.to_json(with_ids=True) for c in self.continuations],
            }
        return {
            "pos": self.pos, "token": self.token, "n": self.n, "correct": self.correct,
            "p": self.p, "ci95": [self.low, self.high],
            "continuations": [{**c.to_json(), "grade": c.grade_json()} for c in self.continuations],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ForkEstimate":
        """Rebuild an estimate from `to_json(with_ids=True)`."""
        return cls(
            pos=int(data["pos"]), token=int(data["token"]), n=int(data["n"]), correct=int(data["correct"]),
            p=float(data["p"]), low=float(data["low"]), high=float(data["high"]),
            continuations=tuple(InterventionResult.from_json(c) for c in data["continuations"]),
        )


def wilson(successes: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (95% by default); sound at 0 and n successes."""
    if n < 1 or not 0 <= successes <= n:
        raise RmxError(f"a Wilson interval needs 0 ≤ successes ≤ n and n ≥ 1, got {successes}/{n}")
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # Rounding can put the ends a hair past p or past [0, 1]; the interval always contains p.
    return max(0.0, min(center - half, p)), min(1.0, max(center + half, p))


def oracle_rule() -> Rule:
    """Emit the teacher's argmax wherever it differs from the base's argmax (paper §3.2)."""

    def rule(ctx: StepContext) -> tuple[int, str] | None:
        teacher = int(ctx.teacher_logits().argmax())
        return (teacher, "teacher") if teacher != ctx.argmax else None

    return rule


def random_rule(seed: int, budget: Sequence[Sequence[int]], eos_ids: frozenset[int] | set[int] = frozenset()) -> Rule:
    """The random control (paper §3.2), budget-matched: as many substitutions per row as the oracle made, no more.

    `budget[row]` lists the positions the oracle changed on that row. The control substitutes at
    those same positions: the base decodes both runs alike up to the oracle's first change, so the
    first substitution lands on the very decision point (same prefix, same entropy) the oracle
    corrected, and the rest at the oracle's offsets. Each substitute is a uniform draw from the base
    top-20 minus the base argmax, minus the teacher's argmax there, and minus the token the base
    would emit anyway, so every substitution is a touch and none is the teacher's correction. A row
    that would end (EOS) while substitutions are still owed takes one there instead, and no draw
    ends a row early, so the touch count equals the oracle's on every row.
    """
    rng = random.Random(seed)
    owed = {row: len(set(positions)) for row, positions in enumerate(budget)}
    scheduled = {row: frozenset(int(p) for p in positions) for row, positions in enumerate(budget)}

    def rule(ctx: StepContext) -> tuple[int, str] | None:
        import torch

        left = owed.get(ctx.row, 0)
        if left == 0 or (ctx.pos not in scheduled[ctx.row] and ctx.pick not in eos_ids):
            return None
        teacher = int(ctx.teacher_logits().argmax())
        ranked = torch.topk(ctx.logits, min(RANDOM_POOL, ctx.logits.shape[-1])).indices.tolist()
        banned = {ctx.argmax, teacher, ctx.pick} | (set(eos_ids) if left > 1 else set())
        choices = [token for token in ranked if token not in banned]
        if not choices:
            return None
        owed[ctx.row] = left - 1
        return rng.choice(choices), "random"

    return rule


def oracle_positions(result: InterventionResult) -> tuple[int, ...]:
    """The positions where an oracle run put the teacher's token: the random control's budget."""
    return tuple(step.pos for step in result.steps if step.source == "teacher")


def gated_rule(tau_nats: float) -> Rule:
    """Emit the teacher's argmax wherever the base entropy exceeds τ nats (paper §3.3)."""

    def rule(ctx: StepContext) -> tuple[int, str] | None:
        if ctx.entropy > tau_nats:
            return int(ctx.teacher_logits().argmax()), "teacher"
        return None

    return rule


def _stoppable(steps: Iterator[Step], should_stop: ShouldStop | None) -> Iterator[Step]:
    """The steps of a decode, asking `should_stop` after each; True closes the decode and raises Interrupted.

    A decode left between steps has fed its session caches only whole steps, so the next one reuses them.
    """
    with closing(steps):
        for step in steps:
            if should_stop is not None and should_stop():
                raise Interrupted()
            yield step


def base_greedy_entropies(session: DecodeSession, prompt_ids: Sequence[int], sampling: SamplingSpec,
                          should_stop: ShouldStop | None = None) -> list[float]:
    """Base entropies along the base's own greedy rollout of this prompt: what a τ quantile is taken over."""
    greedy = replace(sampling, greedy=True)
    return [step.entropy for step in _stoppable(session.decode(prompt_ids, greedy), should_stop)]


def resolve_tau(session: DecodeSession, prompt_ids: Sequence[int], sampling: SamplingSpec, tau: Tau,
                should_stop: ShouldStop | None = None) -> float:
    """τ in nats: as given, or the quantile of the base's own greedy-rollout entropies for this prompt."""
    if not tau.quantile:
        return tau.value
    return tau.resolve(base_greedy_entropies(session, prompt_ids, sampling, should_stop))


def run_mode(
    session: DecodeSession,
    mode: str,
    prompt_ids: Sequence[int],
    sampling: SamplingSpec = SamplingSpec(),
    *,
    force: Sequence[tuple[int, int]] = (),
    tau: Tau | None = None,
    n: int = 1,
    gold: str | None = None,
    rollout: Sequence[int] = (),
    top: int = 5,
    should_stop: ShouldStop | None = None,
    budget: Sequence[Sequence[int]] | None = None,
) -> list[InterventionResult]:
    """n completions of one prompt under `mode` (one of RUN_MODES), each graded when `gold` is given.

    base and teacher decode alone; oracle, random and gated steer the base with the teacher;
    manual only forces. Forced (position, token) pairs apply in every mode and win over rules.
    A τ quantile (q0.97) is resolved against the base's own greedy rollout entropies for this
    prompt, computed here (with forcing and any rollout left out). `should_stop` is asked before
    decoding and after every step (of every row); once it says True the run ends with Interrupted.
    `budget` (random only) gives per row the positions the oracle changed, whose count the control
    matches; without it the oracle runs first on the same prompt, sampling and forcing to find them.
    """
    if mode not in RUN_MODES:
        raise RmxError(f"unknown mode '{mode}': use one of {', '.join(RUN_MODES)}")
    if mode in ("teacher", "oracle", "random", "gated") and session.teacher is None:
        raise RmxError(f"{mode} needs a teacher model: pass --teacher")
    if mode == "manual" and not force:
        raise RmxError("manual intervention needs at least one forced (position, token) pair")
    if mode == "gated" and tau is None:
        raise RmxError("gated intervention needs τ: give nats (1.4) or a quantile (q0.97)")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise RmxError(f"n must be a positive integer, got {n}")
    rollout_ids = [int(t) for t in rollout]
    view = session.teacher if mode == "teacher" else session.base
    # Checked before a τ quantile pays for its reference rollout; decode checks them again.
    check_prompt(view, prompt_ids)
    check_force(view, force, len(rollout_ids), sampling.max_new_tokens)
    if should_stop is not None and should_stop():
        raise Interrupted()
    tau_nats = resolve_tau(session, prompt_ids, sampling, tau, should_stop) if mode == "gated" else None
    rule = None
    if mode == "oracle":
        rule = oracle_rule()
    elif mode == "random":
        if budget is None:
            oracle = run_mode(session, "oracle", prompt_ids, sampling, force=force, n=n, rollout=rollout_ids,
                              top=top, should_stop=should_stop)
            budget = [oracle_positions(result) for result in oracle]
        if len(budget) != n:
            raise RmxError(f"the random control needs the oracle's positions for each of its {n} rows, got {len(budget)}")
        rule = random_rule(sampling.seed, budget, session.base.eos_ids)
    elif mode == "gated":
        rule = gated_rule(tau_nats)
    steps = session.decode(prompt_ids, sampling, rollout=rollout_ids, force=force, rule=rule, n=n, top=top,
                           drive="teacher" if mode == "teacher" else "base")
    rows: list[list[Step]] = [[] for _ in range(n)]
    for step in _stoppable(steps, should_stop):
        rows[step.row].append(step)
    kept = rollout_ids[: rows[0][0].pos]
    return [_result(view, mode, kept, row, tau_nats, gold) for row in rows]


def _result(view: LoadedModel, mode: str, kept: list[int], steps: list[Step], tau_nats: float | None,
            gold: str | None) -> InterventionResult:
    ids = kept + [step.id for step in steps]
    shown = ids[:-1] if steps and steps[-1].end == "eos" else ids
    text = view.tokenizer.decode(shown, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    own = "teacher" if mode == "teacher" else "base"
    touched = tuple(step.pos for step in steps if step.source != own)
    finish = steps[-1].end if steps else None
    if gold is not None:
        graded = grade(text, str(gold), finish=finish)
        verdict = dict(answer=graded.extracted, gold=graded.gold, correct=graded.correct,
                       grade_reason=graded.reason, grader=graded.grader)
    else:
        verdict = dict(answer=extract_answer(text, finish)[0])
    return InterventionResult(mode=mode, steps=tuple(steps), completion_ids=tuple(ids), text=text,
                              touched=touched, tau=tau_nats, **verdict)


def generate(
    base: LoadedModel,
    teacher: LoadedModel | None,
    prompt_ids: Sequence[int],
    sampling: SamplingSpec = SamplingSpec(),
    *,
    force: Sequence[tuple[int, int]] = (),
    intervene: str | None = None,
    tau: Tau | None = None,
    n: int = 1,
    gold: str | None = None,
    rollout: Sequence[int] = (),
    top: int = 5,
    session: DecodeSession | None = None,
    should_stop: ShouldStop | None = None,
) -> list[InterventionResult]:
    """What `rmx generate` runs: n completions of a prompt, the base driving, optionally steered.

    intervene: None (the base alone, plus any forced tokens), oracle, random, gated or manual.
    force: (position, token id) pairs, positions 0-based from the first completion token.
    rollout: an earlier completion to continue or fork; decoding starts at its end or at the first
    forced position, whichever comes first, and keeps its tokens before that as given.
    tau: the gate's threshold, nats or a quantile of the base's own greedy-rollout entropies for
    this prompt. Pass a `session` to reuse its KV caches across calls (browsing and forks).
    `should_stop`, asked after every step, ends the run early with Interrupted.
    """
    if intervene is not None and intervene not in MODES:
        raise RmxError(f"unknown intervention '{intervene}': use one of {', '.join(MODES)}")
    if session is None:
        session = DecodeSession(base, teacher)
    elif session.base is not base or session.teacher is not teacher:
        raise RmxError("this decode session belongs to another base/teacher pair")
    return run_mode(session, intervene or "base", prompt_ids, sampling, force=force, tau=tau, n=n, gold=gold,
                    rollout=rollout, top=top, should_stop=should_stop)


def fork(
    session: DecodeSession,
    prompt_ids: Sequence[int],
    rollout: Sequence[int],
    pos: int,
    token: int,
    gold: str,
    sampling: SamplingSpec = SamplingSpec(greedy=False, temperature=0.6, top_p=0.95),
    n: int = 8,
    should_stop: ShouldStop | None = None,
) -> ForkEstimate:
    """Force `token` at `pos` of a rollout, sample n base continuations, and estimate P(correct) with a Wilson CI.

    The rollout's tokens before `pos` are kept; the session's cached start of them is reused,
    and the n continuations share one prefill of the fork, decoded as one batch. The default
    sampling is the authors' rollout recipe (temperature 0.6, top-p 0.95). `should_stop`, asked
    after every step of every continuation, ends the estimate early with Interrupted.
    """
    if gold is None or not str(gold).strip():
        raise RmxError("a fork estimate needs a gold answer to grade its continuations")
    results = run_mode(session, "base", prompt_ids, sampling, force=[(pos, token)], n=n, gold=gold, rollout=rollout,
                       should_stop=should_stop)
    correct = sum(bool(r.correct) for r in results)
    low, high = wilson(correct, n)
    return ForkEstimate(pos=int(pos), token=int(token), n=n, correct=correct, p=correct / n, low=low, high=high,
                        continuations=tuple(results))
