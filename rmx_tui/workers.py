"""Engine jobs for worker threads: each only calls the client, watches for cancellation, and posts messages back."""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import dataclass
from typing import Callable, Sequence

from engine.service.client import EngineClient
from engine.core.config import ModelSpec
from engine.core.decode import SamplingSpec, Step
from engine.core.errors import RmxError
from engine.core.records import read_rollouts
from textual.message import Message

from rmx_tui.messages import (
    BranchDecoded, BranchExtended, DecodeCancelled, EditsCompared, EngineFailed, EngineLoaded, InterventionRan,
    LoadProgressed, OutcomesSampled, ProblemsListed, RolloutScored,
)
from rmx_tui.ui_state import Outcome, Verdict
from rmx_tui.settings import ALTERNATIVES

Post = Callable[[Message], object]
Cancelled = Callable[[], bool]

FLUSH_S = 1 / 30
"""Streamed steps are batched this long: one repaint per frame, not per token."""


def describe(error: BaseException) -> str:
    """One line for a notification: an RmxError's own words, else the exception's type and text."""
    return str(error) if isinstance(error, RmxError) else f"{type(error).__name__}: {error}"


@dataclass(frozen=True)
class LoadJob:
    """Read the problems (and stored rollouts), then load the models; a None base keeps what the client holds."""

    dataset: str | None
    """None when only the models change."""
    limit: int | None
    rollouts: str | None
    base: ModelSpec | None
    teacher: ModelSpec | None


@dataclass(frozen=True)
class DecodeJob:
    """Decode a branch: a fresh rollout (nothing forced) or a fork of `rollout` at the forced positions."""

    key: str
    prompt_ids: tuple[int, ...]
    gold: str
    sampling: SamplingSpec
    rollout: tuple[int, ...] = ()
    force: tuple[tuple[int, int], ...] = ()
    typed: str | None = None
    """Text to tokenize and force from position `at`, one token per position."""
    at: int = 0


@dataclass(frozen=True)
class SampleJob:
    """Sample n continuations after forcing `token` at `pos` of a branch, and grade each."""

    key: str
    prompt_ids: tuple[int, ...]
    rollout: tuple[int, ...]
    pos: int
    token: int
    text: str
    gold: str
    sampling: SamplingSpec
    n: int


@dataclass(frozen=True)
class InterventionJob:
    """Decode a root rollout's prompt afresh under an intervention mode, graded against the gold answer."""

    key: str
    """The root rollout the run is compared with."""
    prompt_ids: tuple[int, ...]
    mode: str
    gold: str
    sampling: SamplingSpec
    tau: float | str
    """The gate's τ: nats, or a quantile such as `q0.9` for the engine to resolve; only `gated` reads it."""


def load(client: EngineClient, job: LoadJob, post: Post) -> None:
    if job.dataset is not None:
        try:
            post(LoadProgressed(f"reading problems from {job.dataset}"))
            problems = client.problems(job.dataset, job.limit)
            stored = read_rollouts(job.rollouts) if job.rollouts else []
            post(ProblemsListed(problems, stored))
        except Exception as error:
            post(EngineFailed("problems", describe(error)))
    try:
        if job.base is not None:
            teacher = f" and teacher {job.teacher.label}" if job.teacher else ""
            post(LoadProgressed(f"loading {job.base.label}{teacher}"))
            info = client.load(job.base, job.teacher)
        else:
            info = client.info()
        post(EngineLoaded(info, running_jobs(client)))
    except Exception as error:
        post(EngineFailed("load", describe(error)))


def running_jobs(client: EngineClient) -> int:
    """How many jobs are running: the daemon's when connected to one, else this machine's (the client has both)."""
    try:
        return sum(status.active for status in client.list_jobs())
    except Exception:  # an unreadable run dir must not keep the workbench from opening
        return 0


def _text(client: EngineClient, ids: Sequence[int], ended: str | None) -> str:
    """The completion's text, a final EOS left out so that the grader never sees it."""
    shown = list(ids[:-1]) if ended == "eos" else list(ids)
    return client.detokenize(shown)


def _scored(client: EngineClient, key: str, prompt_ids: Sequence[int], ids: Sequence[int],
            cancelled: Cancelled) -> RolloutScored:
    """Score a completion, and name the teacher's picks that fall outside the top-k (they have no text there)."""
    rollout = client.score(prompt_ids, ids, top_k=ALTERNATIVES, should_stop=cancelled)
    unnamed = sorted({t.teacher.id for t in rollout.tokens
                      if t.teacher is not None and all(alt.id != t.teacher.id for alt in t.top)})
    return RolloutScored(key, rollout, dict(zip(unnamed, client.token_texts(unnamed))))


def _verdict(client: EngineClient, text: str, gold: str, finish: str | None) -> Verdict:
    graded = client.grade(text, gold, finish)
    return Verdict(answer=graded.extracted, correct=graded.correct, reason=graded.reason)


def decode(client: EngineClient, job: DecodeJob, post: Post, cancelled: Cancelled) -> None:
    steps: list[Step] = []
    batch: list[Step] = []
    failure: Exception | None = None
    try:
        force = job.force
        if job.typed is not None:
            typed = client.tokenize(job.typed)
            if not typed:
                raise RmxError(f"'{job.typed}' is no token at all: type some text, or #id")
            force = tuple((job.at + offset, token) for offset, token in enumerate(typed))
        kept = list(job.rollout[: min(pos for pos, _ in force)]) if force else list(job.rollout)
        flushed = time.monotonic()
        with closing(client.decode(job.prompt_ids, job.sampling, rollout=job.rollout, force=force,
                                   top=ALTERNATIVES)) as stream:
            for step in stream:
                steps.append(step)
                batch.append(step)
                if step.end is not None or time.monotonic() - flushed > FLUSH_S:
                    post(BranchExtended(job.key, tuple(batch)))
                    batch, flushed = [], time.monotonic()
                if cancelled():
                    break
    except Exception as error:
        failure = error
    # What streamed before a fault or a cancel is kept: the branch stays, partial.
    if batch:
        post(BranchExtended(job.key, tuple(batch)))
    if failure is not None:
        post(EngineFailed("decode", describe(failure), job.key))
        return
    if cancelled():
        post(DecodeCancelled(job.key))
        return
    ids = kept + [step.id for step in steps]
    ended = steps[-1].end if steps else None
    try:
        post(BranchDecoded(job.key, _verdict(client, _text(client, ids, ended), job.gold, ended)))
        post(_scored(client, job.key, job.prompt_ids, ids, cancelled))
    except Exception as error:
        post(EngineFailed("score", describe(error), job.key))


def score(client: EngineClient, key: str, prompt_ids: Sequence[int], ids: Sequence[int], post: Post,
          cancelled: Cancelled) -> None:
    """Score a completion; a cancel (esc, or quitting) stops the engine between chunks ("scoring stopped")."""
    try:
        post(_scored(client, key, prompt_ids, ids, cancelled))
    except Exception as error:
        post(EngineFailed("score", describe(error), key))


def sample(client: EngineClient, job: SampleJob, post: Post, cancelled: Cancelled) -> None:
    """The engine's fork estimate, as outcome bars; a cancel stops the engine at its next step and posts nothing."""
    try:
        estimate = client.fork_outcomes(job.prompt_ids, job.rollout, job.pos, job.token, job.gold, n=job.n,
                                        sampling=job.sampling, should_stop=cancelled)
    except Exception as error:
        if not cancelled():
            post(EngineFailed("sample", describe(error), job.key))
        return
    if cancelled():
        return
    verdicts = [Verdict(answer=run.answer, correct=bool(run.correct), reason=run.grade_reason or "")
                for run in estimate.continuations]
    correct, wrong, no_answer, answers = Outcome.tally(verdicts)
    post(OutcomesSampled(job.key, Outcome(pos=job.pos, token=job.token, text=job.text, correct=correct, wrong=wrong,
                                          no_answer=no_answer, low=estimate.low, high=estimate.high,
                                          answers=answers)))


def intervene(client: EngineClient, job: InterventionJob, post: Post, cancelled: Cancelled) -> None:
    """A run of one intervention mode; a cancel stops the engine at its next step and posts nothing."""
    try:
        result = client.intervene(job.prompt_ids, job.mode, job.sampling, tau=job.tau, gold=job.gold,
                                  top=ALTERNATIVES, should_stop=cancelled)
    except Exception as error:
        if not cancelled():
            # No branch exists yet: the failure belongs to no branch.
            post(EngineFailed("intervention", describe(error)))
        return
    if not cancelled():
        post(InterventionRan(job.key, result))


def compare_edits(client: EngineClient, problem_id: str, prompt_ids: Sequence[int], adapter: str,
                  max_new_tokens: int, post: Post) -> None:
    """The edit overlap of the teacher and `adapter` on the base's greedy rollout of one prompt."""
    try:
        edits = client.edit_overlap(prompt_ids, adapter, max_new_tokens)
        named = sorted(set(edits.ids) | set(edits.teacher_ids) | set(edits.adapter_ids))
        post(EditsCompared(problem_id, edits, dict(zip(named, client.token_texts(named)))))
    except Exception as error:
        post(EngineFailed("overlap", describe(error)))
