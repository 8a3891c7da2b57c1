"""The loaded models, the interactive operations on them, and the jobs: what the daemon serves and clients call."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterator, Sequence

from engine.core.config import ModelSpec, ScoreSpec, Tau
from engine.core.data import Problem, load_problems
from engine.core.decode import DecodeSession, SamplingSpec, Step
from engine.core.errors import RmxError
from engine.core.grading import GradeResult, grade
from engine.core.interventions import (
    MODES, RUN_MODES, ForkEstimate, InterventionResult, Interrupted, ShouldStop, fork, run_mode,
)
from engine.core.models import LoadedModel, load_pair, load_views
from engine.jobs.store import LocalJobs
from engine.recipes.analysis import Analysis, analyze
from engine.recipes.overlap import RolloutEdits, rollout_edits
from engine.recipes.pool import DEFAULT_TAUS, PoolSpec, PoolStats, inspect_pool
from engine.core.prompts import TemplateChoice, choose_template, completion_ids, prompt_ids
from engine.core.records import ModelInfo, ScoredRollout
from engine.core.scoring import score


FORK_SAMPLING = SamplingSpec(greedy=False, temperature=0.6, top_p=0.95)
"""How fork_outcomes samples by default: the authors' rollout recipe, as engine.core.interventions.fork."""


def _tau(tau: str | float | Tau | None) -> Tau | None:
    if tau is None or isinstance(tau, Tau):
        return tau
    return Tau.parse(tau)


@dataclass(frozen=True)
class WorkbenchInfo:
    """Which models are loaded."""

    base: ModelInfo | None
    teacher: ModelInfo | None

    def to_json(self) -> dict[str, Any]:
        return {"base": asdict(self.base) if self.base else None,
                "teacher": asdict(self.teacher) if self.teacher else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "WorkbenchInfo":
        return cls(base=ModelInfo(**data["base"]) if data.get("base") else None,
                   teacher=ModelInfo(**data["teacher"]) if data.get("teacher") else None)


class Workbench(LocalJobs):
    """The in-process EngineClient: holds a base and an optional teacher, and reaches this machine's jobs (the job
    operations are LocalJobs'). Model calls are serialised on one lock (one device, one model).

    The lock is a plain Lock, never re-entered: a decode stream may be closed from another thread
    than the one that opened it (a cancelled TUI worker), and only a Lock may be released there.
    """

    def __init__(self) -> None:
        self._base: LoadedModel | None = None
        self._teacher: LoadedModel | None = None
        self._session: DecodeSession | None = None
        self._adapter: LoadedModel | None = None
        """The last adapter edit_overlap compared with the teacher, kept for the next call."""
        self._lock = threading.Lock()

    def load(self, base: ModelSpec, teacher: ModelSpec | None = None) -> WorkbenchInfo:
        """Load (or replace) the base and teacher; on failure the previous models stay loaded."""
        with self._lock:
            if self._base is not None and self._base.spec == base and (
                (self._teacher.spec if self._teacher else None) == teacher
            ):
                return self.info()
            self._base, self._teacher = load_pair(base, teacher)
            self._session = DecodeSession(self._base, self._teacher)
            self._adapter = None
            return self.info()

    def info(self) -> WorkbenchInfo:
        return WorkbenchInfo(
            base=self._base.info() if self._base else None,
            teacher=self._teacher.info() if self._teacher else None,
        )

    @property
    def base(self) -> LoadedModel:
        if self._base is None:
            raise RmxError("no model is loaded: load a base model first")
        return self._base

    @property
    def teacher(self) -> LoadedModel | None:
        return self._teacher

    def prompt_ids(self, problem: str, template: str | None = "raw") -> list[int]:
        return prompt_ids(self.base.tokenizer, problem, template, self.base.template_facts)

    def template_choice(self, template: str | None = "auto") -> TemplateChoice:
        """The template `template` resolves to for the loaded base (`auto` by Appendix C's rule), and why."""
        return choose_template(template, self.base.tokenizer, self.base.template_facts)

    def tokenize(self, text: str) -> list[int]:
        return completion_ids(self.base.tokenizer, text)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.base.tokenizer.decode(list(ids), skip_special_tokens=False)

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        return [self.base.token_text(int(i)) for i in ids]

    def score(self, prompt: Sequence[int], completion: Sequence[int], top_k: int = 5,
              with_teacher: bool = True, *, should_stop: ShouldStop | None = None) -> ScoredRollout:
        """Score one completion under the base (and the teacher, when loaded and asked for).

        `should_stop`, asked between logit chunks, ends the scoring early with Interrupted.
        """
        with self._lock:
            teacher = self._teacher if with_teacher else None
            return score(self.base, [(prompt, completion)], teacher, ScoreSpec(top_k=top_k),
                         should_stop=should_stop)[0]

    def score_text(self, prompt: str, completion: str, template: str | None = "raw", top_k: int = 5,
                   with_teacher: bool = True) -> ScoredRollout:
        return self.score(self.prompt_ids(prompt, template), self.tokenize(completion), top_k, with_teacher)

    def decode(self, prompt: Sequence[int], sampling: SamplingSpec = SamplingSpec(), rollout: Sequence[int] = (),
               force: Sequence[tuple[int, int]] = (), n: int = 1, top: int = 5) -> Iterator[Step]:
        """Stream a continuation step by step: a fresh rollout, or a fork of `rollout` at the forced positions.

        The KV cache of the last decoded sequence is kept, so forking the rollout being browsed
        only feeds the tokens after the fork. Inputs are checked before the first step.
        """
        base = self.base
        with self._lock:
            steps = self._session.decode(prompt, sampling, rollout=rollout, force=force, n=n, top=top)
        return self._locked(steps, base)

    def _locked(self, steps: Iterator[Step], base: LoadedModel) -> Iterator[Step]:
        with self._lock:
            if self._base is not base:
                raise RmxError("the models were reloaded while this stream waited: start it again")
            yield from steps

    def intervene(self, prompt_ids: Sequence[int], mode: str, sampling: SamplingSpec = SamplingSpec(),
                  tau: str | float | Tau | None = None, gold: str | None = None,
                  force: Sequence[tuple[int, int]] = (), rollout: Sequence[int] = (),
                  top: int = 5, *, should_stop: ShouldStop | None = None) -> InterventionResult:
        """One completion under `mode` (base, teacher, oracle, random, gated or manual), graded when `gold` is given.

        `tau` (nats, or a quantile such as `q0.97`) is the gate's threshold; other modes ignore it. Runs on the
        Workbench's decode session, so the caches of the sequence being browsed are reused. `should_stop` is
        asked after every decoded step: True ends the run with Interrupted and frees the Workbench.
        """
        if mode not in RUN_MODES:
            raise RmxError(f"unknown mode '{mode}': use one of {', '.join(RUN_MODES)}")
        gate = _tau(tau)
        with self._lock:
            session = self._loaded_session()
            return run_mode(session, mode, prompt_ids, sampling, force=force, tau=gate, gold=gold,
                            rollout=rollout, top=top, should_stop=should_stop)[0]

    def generate(self, prompt_ids: Sequence[int], sampling: SamplingSpec = SamplingSpec(),
                 force: Sequence[tuple[int, int]] = (), intervene: str | None = None,
                 tau: str | float | Tau | None = None, n: int = 1, gold: str | None = None, top: int = 5, *,
                 should_stop: ShouldStop | None = None) -> list[InterventionResult]:
        """What `rmx generate` runs: n completions of a prompt, the base driving, steered by `intervene` (None: the
        base alone plus any forced tokens; oracle, random, gated or manual). `should_stop` as in intervene."""
        if intervene is not None and intervene not in MODES:
            raise RmxError(f"unknown intervention '{intervene}': use one of {', '.join(MODES)}")
        gate = _tau(tau)
        with self._lock:
            session = self._loaded_session()
            return run_mode(session, intervene or "base", prompt_ids, sampling, force=force, tau=gate, n=n, gold=gold,
                            top=top, should_stop=should_stop)

    def analyze(self, dataset: str, limit: int | None = None, tau: str | float | Tau = "1.4",
                template: str | None = "auto", max_new_tokens: int = 512, batch_size: int | None = None, *,
                should_stop: ShouldStop | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> Analysis:
        """Table 2 over `dataset` (a path on the engine's machine, or a bundled name) with the loaded base and
        teacher. `on_progress(done, total)` is called as each problem is scored; `should_stop`, asked then, ends the
        analysis early with Interrupted."""
        problems = load_problems(dataset, limit=limit)
        gate = _tau(tau)

        def progress(done: int, total: int) -> None:
            if on_progress is not None:
                on_progress(done, total)
            if should_stop is not None and should_stop():
                raise Interrupted("analysis stopped")

        with self._lock:
            return analyze(self.base, self._teacher, problems, tau=gate, template=template,
                           max_new_tokens=max_new_tokens, batch_size=batch_size, on_progress=progress)

    def fork_outcomes(self, prompt_ids: Sequence[int], rollout: Sequence[int], pos: int, token: int, gold: str,
                      n: int = 8, sampling: SamplingSpec = FORK_SAMPLING, *,
                      should_stop: ShouldStop | None = None) -> ForkEstimate:
        """Force `token` at `pos` of `rollout`, sample n base continuations, estimate P(correct) with a Wilson CI.

        `should_stop`, asked after every decoded step, ends the estimate early with Interrupted.
        """
        with self._lock:
            session = self._loaded_session()
            return fork(session, prompt_ids, rollout, pos, token, gold, sampling, n, should_stop)

    def edit_overlap(self, prompt_ids: Sequence[int], adapter: str, max_new_tokens: int = 256) -> RolloutEdits:
        """The base's greedy rollout of `prompt_ids`, each token marked when the teacher, the adapter (a PEFT folder
        for the loaded base) or both would pick another token than the base's argmax (as `rmx overlap`)."""
        with self._lock:
            base = self.base
            if self._teacher is None:
                raise RmxError("no teacher is loaded: the edit overlap compares the teacher's edits with an adapter's")
            if base.spec.adapter:
                raise RmxError("the loaded base carries an adapter: load a bare base to compare edits with an adapter")
            if self._adapter is None or self._adapter.spec.adapter != adapter:
                self._adapter = None
                # Its own copy of the base: attaching to the loaded module would change what the teacher shares.
                self._adapter = load_views(base.spec, {"adapter": replace(base.spec, adapter=adapter)})["adapter"]
            return rollout_edits(base, self._teacher, self._adapter, prompt_ids, max_new_tokens)

    def _loaded_session(self) -> DecodeSession:
        self.base  # noqa: B018  (raises the one-line "no model is loaded")
        assert self._session is not None
        return self._session

    def pool_stats(self, rollouts: str, size: int | None = None, keep_shortest: float = 1.0,
                   taus: Sequence[str] = DEFAULT_TAUS, with_base: bool = False) -> PoolStats:
        """What `rmx pool show` reports for a rollouts.jsonl; `with_base` adds the decision-point rate per τ under
        the loaded base (its entropies cached beside the rollouts, as the CLI does)."""
        spec = PoolSpec(rollouts, size, keep_shortest)
        if not with_base:
            return inspect_pool(spec, taus)
        with self._lock:
            return inspect_pool(spec, taus, lambda: self.base)

    def grade(self, completion: str, gold: str, finish: str | None = None, extract: str = "strict") -> GradeResult:
        """The verdict on a completion; `finish` is why it ended (eos, stop, length, context; None: unknown)."""
        return grade(completion, gold, finish=finish, extract=extract)

    def problems(self, dataset: str, limit: int | None = None) -> list[Problem]:
        return load_problems(dataset, limit=limit)
