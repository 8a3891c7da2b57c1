"""Interventions over many prompts at once: each mode's rows decoded in one continuously refilled lockstep batch."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

from engine.core.decode import Rule, SamplingSpec, Step
from engine.core.errors import RmxError
from engine.core.interventions import (
    RUN_MODES, InterventionResult, Interrupted, ShouldStop, _result, gated_rule, oracle_positions, oracle_rule,
    random_rule,
)
from engine.core.lockstep import RowQueue, RowRequest, check_row, decode_rows
from engine.core.models import LoadedModel

LOCKSTEP_MODES = frozenset({"oracle", "random", "gated"})
"""Modes whose rows read the teacher at every step."""


@dataclass(frozen=True)
class ModeRow:
    """One completion to decode under a mode, with what that mode needs to know about its prompt."""

    mode: str
    """base, teacher, oracle, random, gated or manual."""
    prompt: tuple[int, ...]
    gold: str | None = None
    """The gold answer to grade against; None leaves the result ungraded."""
    tau_nats: float | None = None
    """gated only: the gate's threshold in nats (a quantile resolved by the caller)."""
    force: tuple[tuple[int, int], ...] = ()
    """(position, token id) pairs forced in any mode; manual needs at least one."""
    budget: tuple[int, ...] | None = None
    """random only: the positions the oracle changed on this prompt, whose count the control matches."""
    tag: object = field(default=None, compare=False)
    """Anything the caller wants back with the result (a problem id, say)."""

    def __post_init__(self) -> None:
        if self.mode not in RUN_MODES:
            raise RmxError(f"unknown mode '{self.mode}': use one of {', '.join(RUN_MODES)}")
        if self.mode == "gated" and self.tau_nats is None:
            raise RmxError("gated intervention needs τ: give nats (1.4) or a quantile (q0.97)")
        if self.mode == "manual" and not self.force:
            raise RmxError("manual intervention needs at least one forced (position, token) pair")
        object.__setattr__(self, "prompt", tuple(int(t) for t in self.prompt))
        object.__setattr__(self, "force", tuple((int(p), int(t)) for p, t in self.force))
        if self.budget is not None:
            object.__setattr__(self, "budget", tuple(int(p) for p in self.budget))


class ModeBatch:
    """Rows of any modes decoded together; more may be put while it runs.

    With `follow=True` the teacher is fed in lockstep with the base on every row, which oracle,
    random, gated and teacher rows need; without it only base and manual rows may join.
    """

    def __init__(self, base: LoadedModel, teacher: LoadedModel | None, sampling: SamplingSpec = SamplingSpec(), *,
                 follow: bool = False, batch_size: int = 8, top: int = 5):
        if follow and teacher is None:
            raise RmxError("this batch needs a teacher model: pass --teacher")
        self.base = base
        self.teacher = teacher
        self.sampling = sampling
        self.follow = follow
        self.batch_size = batch_size
        self.top = top
        self.queue = RowQueue()
        self.rows: dict[int, ModeRow] = {}

    @property
    def waiting(self) -> int:
        """Rows put and not yet started."""
        return len(self.queue)

    def put(self, row: ModeRow, *, first: bool = False, sampling: SamplingSpec | None = None) -> int:
        """Queue a row (at the front with `first`, with its own `sampling` if given); returns its number.

        A row this batch cannot run is refused here, in one line.
        """
        if (row.mode in LOCKSTEP_MODES or row.mode == "teacher") and not self.follow:
            raise RmxError(f"a {row.mode} row needs a batch the teacher follows")
        if row.mode == "random" and row.budget is None:
            raise RmxError("a random row needs its oracle's positions (its budget): run the oracle first")
        request = RowRequest(prompt=row.prompt, force=row.force, rule=self._rule(row),
                             drive="teacher" if row.mode == "teacher" else "base", sampling=sampling)
        check_row(self._views(), request, self.sampling)
        number = self.queue.put(request, first=first)
        self.rows[number] = row
        return number

    def _views(self) -> list[LoadedModel]:
        return [self.base, self.teacher] if self.follow else [self.base]

    def _rule(self, row: ModeRow) -> Rule | None:
        if row.mode == "oracle":
            return oracle_rule()
        if row.mode == "random":
            return random_rule(self.sampling.seed, [row.budget], self.base.eos_ids)
        if row.mode == "gated":
            return gated_rule(row.tau_nats)
        return None

    def run(self, should_stop: ShouldStop | None = None) -> Iterator[tuple[int, ModeRow, InterventionResult]]:
        """(number, row, result) for each row as soon as it ends; `should_stop`, asked after every step, raises Interrupted."""
        steps = decode_rows(self.base, self.queue, self.sampling, teacher=self.teacher if self.follow else None,
                            batch_size=self.batch_size, top=self.top)
        return self._collect(steps, should_stop)

    def _collect(self, steps: Iterator[Step],
                 should_stop: ShouldStop | None) -> Iterator[tuple[int, ModeRow, InterventionResult]]:
        decoded: dict[int, list[Step]] = {}
        try:
            for step in steps:
                decoded.setdefault(step.row, []).append(step)
                if step.end is not None:
                    row = self.rows.pop(step.row)
                    view = self.teacher if row.mode == "teacher" else self.base
                    yield step.row, row, _result(view, row.mode, [], decoded.pop(step.row), row.tau_nats, row.gold)
                if should_stop is not None and should_stop():
                    raise Interrupted()
        finally:
            steps.close()


def run_rows(base: LoadedModel, teacher: LoadedModel | None, rows: Sequence[ModeRow],
             sampling: SamplingSpec = SamplingSpec(), *, batch_size: int = 8, top: int = 5,
             should_stop: ShouldStop | None = None) -> list[InterventionResult]:
    """The result of every row, in the rows' order, all decoded in one batch.

    A random row without a budget gets one from an oracle run of its prompt, batched first, as
    `run_mode` does for one prompt.
    """
    unbudgeted = [i for i, row in enumerate(rows) if row.mode == "random" and row.budget is None]
    if unbudgeted:
        oracles = run_rows(base, teacher, [replace(rows[i], mode="oracle", gold=None) for i in unbudgeted],
                           sampling, batch_size=batch_size, top=top, should_stop=should_stop)
        budgets = dict(zip(unbudgeted, (oracle_positions(result) for result in oracles)))
        rows = [replace(row, budget=budgets[i]) if i in budgets else row for i, row in enumerate(rows)]
    batch = ModeBatch(base, teacher, sampling, batch_size=batch_size, top=top,
                      follow=any(row.mode in LOCKSTEP_MODES or row.mode == "teacher" for row in rows))
    index = {batch.put(row): i for i, row in enumerate(rows)}
    results: dict[int, InterventionResult] = {}
    for number, _, result in batch.run(should_stop):
        results[index[number]] = result
    return [results[i] for i in range(len(rows))]


def oracle_lockstep(base: LoadedModel, teacher: LoadedModel, prompts: Sequence[Sequence[int]],
                    sampling: SamplingSpec = SamplingSpec(), *, batch_size: int = 8,
                    top: int = 5) -> list[InterventionResult]:
    """The oracle (the teacher's argmax wherever it differs from the base's) over many prompts, in their order.

    Up to `batch_size` prompts decode together, base and teacher in lockstep; each row equals
    a one-at-a-time oracle run of its prompt for greedy decoding.
    """
    if teacher is None:
        raise RmxError("the oracle needs a teacher model: pass --teacher")
    return run_rows(base, teacher, [ModeRow("oracle", tuple(p)) for p in prompts], sampling,
                    batch_size=batch_size, top=top)
