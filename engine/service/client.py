"""EngineClient: the one interface the TUI and the CLI use to reach the engine, its models and its jobs.

In process, `Workbench` is the client; across a socket, `RemoteClient` is (engine.service.api ties each method to
its request body, response type and route).
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol, Sequence, runtime_checkable

from engine.core.config import ModelSpec, Tau
from engine.core.data import Problem
from engine.core.decode import SamplingSpec, Step
from engine.core.grading import GradeResult
from engine.core.interventions import ForkEstimate, InterventionResult, ShouldStop
from engine.core.prompts import TemplateChoice
from engine.recipes.overlap import RolloutEdits
from engine.recipes.analysis import Analysis
from engine.recipes.pool import DEFAULT_TAUS, PoolStats
from engine.core.records import ScoredRollout
from engine.jobs.store import JobsClient
from engine.service.workbench import FORK_SAMPLING, WorkbenchInfo


@runtime_checkable
class EngineClient(JobsClient, Protocol):
    """What a UI may ask of the engine: the model operations here, and the job operations of JobsClient (submit,
    list, status, events, cancel, resume). Every answer is a plain record; none is a tensor."""

    def load(self, base: ModelSpec, teacher: ModelSpec | None = None) -> WorkbenchInfo: ...

    def info(self) -> WorkbenchInfo: ...

    def prompt_ids(self, problem: str, template: str | None = "raw") -> list[int]: ...

    def template_choice(self, template: str | None = "auto") -> TemplateChoice: ...

    def tokenize(self, text: str) -> list[int]: ...

    def detokenize(self, ids: Sequence[int]) -> str: ...

    def token_texts(self, ids: Sequence[int]) -> list[str]: ...

    def score(self, prompt: Sequence[int], completion: Sequence[int], top_k: int = 5,
              with_teacher: bool = True, *, should_stop: ShouldStop | None = None) -> ScoredRollout:
        """`should_stop` is asked while scoring; True ends it early with Interrupted."""
        ...

    def score_text(self, prompt: str, completion: str, template: str | None = "raw", top_k: int = 5,
                   with_teacher: bool = True) -> ScoredRollout: ...

    def decode(self, prompt: Sequence[int], sampling: SamplingSpec = SamplingSpec(), rollout: Sequence[int] = (),
               force: Sequence[tuple[int, int]] = (), n: int = 1, top: int = 5) -> Iterator[Step]: ...

    def intervene(self, prompt_ids: Sequence[int], mode: str, sampling: SamplingSpec = SamplingSpec(),
                  tau: str | float | Tau | None = None, gold: str | None = None,
                  force: Sequence[tuple[int, int]] = (), rollout: Sequence[int] = (),
                  top: int = 5, *, should_stop: ShouldStop | None = None) -> InterventionResult:
        """`should_stop` is asked between decoding steps; True ends the run early with Interrupted."""
        ...

    def generate(self, prompt_ids: Sequence[int], sampling: SamplingSpec = SamplingSpec(),
                 force: Sequence[tuple[int, int]] = (), intervene: str | None = None,
                 tau: str | float | Tau | None = None, n: int = 1, gold: str | None = None, top: int = 5, *,
                 should_stop: ShouldStop | None = None) -> list[InterventionResult]:
        """n completions, steered by `intervene` (None: the base alone); `should_stop` as in intervene."""
        ...

    def analyze(self, dataset: str, limit: int | None = None, tau: str | float | Tau = "1.4",
                template: str | None = "auto", max_new_tokens: int = 512, batch_size: int | None = None, *,
                should_stop: ShouldStop | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> Analysis:
        """Table 2 over a dataset on the engine's machine; `on_progress(done, total)` as problems are scored."""
        ...

    def fork_outcomes(self, prompt_ids: Sequence[int], rollout: Sequence[int], pos: int, token: int, gold: str,
                      n: int = 8, sampling: SamplingSpec = FORK_SAMPLING, *,
                      should_stop: ShouldStop | None = None) -> ForkEstimate:
        """`should_stop` is asked between decoding steps; True ends the estimate early with Interrupted."""
        ...

    def edit_overlap(self, prompt_ids: Sequence[int], adapter: str, max_new_tokens: int = 256) -> RolloutEdits:
        """The base's greedy rollout with each token marked as edited by the teacher, the adapter or both."""
        ...

    def pool_stats(self, rollouts: str, size: int | None = None, keep_shortest: float = 1.0,
                   taus: Sequence[str] = DEFAULT_TAUS, with_base: bool = False) -> PoolStats: ...

    def grade(self, completion: str, gold: str, finish: str | None = None,
              extract: str = "strict") -> GradeResult: ...

    def problems(self, dataset: str, limit: int | None = None) -> list[Problem]: ...

