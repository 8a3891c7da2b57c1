"""What engine workers report back to the UI thread, each named as a fact that already happened."""

from __future__ import annotations

from engine.core.data import Problem
from engine.core.decode import Step
from engine.core.interventions import InterventionResult
from engine.core.records import Rollout, ScoredRollout
from engine.recipes.overlap import RolloutEdits
from engine.service.workbench import WorkbenchInfo
from textual.message import Message

from rmx_tui.ui_state import Outcome, Verdict


class LoadProgressed(Message):
    """The engine moved on to another loading stage."""

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage


class ProblemsListed(Message):
    """The problems of the dataset were read, with any stored rollouts of them."""

    def __init__(self, problems: list[Problem], rollouts: list[Rollout]) -> None:
        super().__init__()
        self.problems = problems
        self.rollouts = rollouts


class EngineLoaded(Message):
    """The base (and teacher) are loaded and ready; `running_jobs` jobs are using the machine meanwhile."""

    def __init__(self, info: WorkbenchInfo, running_jobs: int = 0) -> None:
        super().__init__()
        self.info = info
        self.running_jobs = running_jobs


class BranchExtended(Message):
    """A decode stream produced more tokens of a branch."""

    def __init__(self, key: str, steps: tuple[Step, ...]) -> None:
        super().__init__()
        self.key = key
        self.steps = steps


class BranchDecoded(Message):
    """A branch's decode stream ended on its own, and the completion was graded."""

    def __init__(self, key: str, verdict: Verdict) -> None:
        super().__init__()
        self.key = key
        self.verdict = verdict


class RolloutScored(Message):
    """A branch went through the scorer: exact ranks, and the teacher's pick at every token if one is loaded."""

    def __init__(self, key: str, rollout: ScoredRollout, texts: dict[int, str]) -> None:
        super().__init__()
        self.key = key
        self.rollout = rollout
        self.texts = texts
        """Texts of the teacher's picks that are not among a position's top-k."""


class DecodeCancelled(Message):
    """The user stopped a branch's decode: what streamed is kept."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key


class OutcomesSampled(Message):
    """n continuations after one choice were sampled and graded."""

    def __init__(self, key: str, outcome: Outcome) -> None:
        super().__init__()
        self.key = key
        self.outcome = outcome


class InterventionRan(Message):
    """An intervention mode decoded a completion of a root rollout's prompt, and it was graded."""

    def __init__(self, key: str, result: InterventionResult) -> None:
        super().__init__()
        self.key = key
        """The root rollout the run is compared with."""
        self.result = result


class EditsCompared(Message):
    """The base's greedy rollout of a problem was scored under the teacher and an adapter: who edits which token."""

    def __init__(self, problem_id: str, edits: RolloutEdits, names: dict[int, str]) -> None:
        super().__init__()
        self.problem_id = problem_id
        self.edits = edits
        self.names = names
        """The text of every token id the rollout and both models' picks use."""


class EngineFailed(Message):
    """An engine call raised; `key` names the branch it was working on, if any."""

    def __init__(self, during: str, error: str, key: str | None = None) -> None:
        super().__init__()
        self.during = during
        self.error = error
        self.key = key
