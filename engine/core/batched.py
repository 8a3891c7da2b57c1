"""Interventions over many prompts at once: each mode's rows decoded in one continuously refilled lockstep batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

from engine.core.decode import Rule, SamplingSpec, Step
from engine.core.errors import RmxError
from engine.core.interventions import (
    RUN_MODES, InterventionResult, Interrupted, ShouldStop, _result, gated_rule, oracle_rule, random_rule,
)
from engine.core.lockstep import RowQueue, RowRequest, decode_rows
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


class ModeBatch:
    """Rows of one driver (the base, or the teacher alone) decoded together; more may be put while it runs.

    Base-driven modes (base, oracle, random, gated, manual) may share a batch; the teacher follows
    in lockstep whenever the batch was opened with `follow=True`. Teacher rows need a batch of their own.
    """

    def __init__(self, base: LoadedModel, teacher: LoadedModel | None, sampling: SamplingSpec = SamplingSpec(), *,
                 drive: str = "base", follow: bool = False, batch_size: int = 8, top: int = 5):
        if drive not in ("base", "teacher"):
            raise RmxError(f"drive must be base or teacher, got '{drive}'")
        if (drive == "teacher" or follow) and teacher is None:
            raise RmxError("this batch needs a teacher model: pass --teacher")
        self.base = base
        self.teacher = teacher
        self.sampling = sampling
        self.drive = drive
        self.follow = follow and drive == "base"
        self.batch_size = batch_size
        self.top = top
        self.queue = RowQueue()
        self.rows: dict[int, ModeRow] = {}

    def put(self, row: ModeRow) -> int:
        """Queue a row; returns its number. A row whose mode this batch cannot run is refused here."""
        if (row.mode == "teacher") != (self.drive == "teacher"):
            raise RmxError(f"a {row.mode} row cannot join a batch driven by the {self.drive}")
        if row.mode in LOCKSTEP_MODES and not self.follow:
            raise RmxError(f"a {row.mode} row needs a batch the teacher follows")
        number = self.queue.put(RowRequest(prompt=row.prompt, force=row.force, rule=self._rule(row)))
        self.rows[number] = row
        return number

    def _rule(self, row: ModeRow) -> Rule | None:
        if row.mode == "oracle":
            return oracle_rule()
        if row.mode == "random":
            return random_rule(self.sampling.seed)
        if row.mode == "gated":
            return gated_rule(row.tau_nats)
        return None

    def run(self, should_stop: ShouldStop | None = None) -> Iterator[tuple[int, ModeRow, InterventionResult]]:
        """(number, row, result) for each row as soon as it ends; `should_stop`, asked after every step, raises Interrupted."""
        driver = self.teacher if self.drive == "teacher" else self.base
        steps = decode_rows(driver, self.queue, self.sampling, follower=self.teacher if self.follow else None,
                            batch_size=self.batch_size, top=self.top, own=self.drive)
        return self._collect(driver, steps, should_stop)

    def _collect(self, driver: LoadedModel, steps: Iterator[Step],
                 should_stop: ShouldStop | None) -> Iterator[tuple[int, ModeRow, InterventionResult]]:
        decoded: dict[int, list[Step]] = {}
        try:
            for step in steps:
                decoded.setdefault(step.row, []).append(step)
                if step.end is not None:
                    row = self.rows.pop(step.row)
                    yield step.row, row, _result(driver, row.mode, [], decoded.pop(step.row), row.tau_nats, row.gold)
                if should_stop is not None and should_stop():
                    raise Interrupted()
        finally:
            steps.close()


def run_rows(base: LoadedModel, teacher: LoadedModel | None, rows: Sequence[ModeRow],
             sampling: SamplingSpec = SamplingSpec(), *, batch_size: int = 8, top: int = 5,
             should_stop: ShouldStop | None = None) -> list[InterventionResult]:
    """The result of every row, in the rows' order; teacher rows and base-driven rows run as two batches."""
    results: dict[int, InterventionResult] = {}
    for drive in ("base", "teacher"):
        chosen = [(i, row) for i, row in enumerate(rows) if (row.mode == "teacher") == (drive == "teacher")]
        if not chosen:
            continue
        batch = ModeBatch(base, teacher, sampling, drive=drive, batch_size=batch_size, top=top,
                          follow=any(row.mode in LOCKSTEP_MODES for _, row in chosen))
        index = {batch.put(row): i for i, row in chosen}
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
