"""What jobs workers report back to the jobs screen and the run view, each named as a fact that already happened."""

from __future__ import annotations

from typing import Any

from engine.jobs.store import JobStatus, JobView
from textual.message import Message

from rmx_tui.widgets.tau_grid import SweepPoint


class JobsListed(Message):
    """Every run was listed; a newer listing supersedes one the UI has not handled yet."""

    def __init__(self, statuses: list[JobStatus], at: float) -> None:
        super().__init__()
        self.statuses = statuses
        self.at = at
        """Unix time of the listing: what running times and ETAs are measured against."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobsListed)


class JobProgressed(Message):
    """A run's status and spec were read; a newer read of the same run supersedes an unhandled one."""

    def __init__(self, view: JobView) -> None:
        super().__init__()
        self.view = view

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobProgressed) and message.view.status.id == self.view.status.id


class EventsArrived(Message):
    """A batch of a run's events arrived, in log order: history first on attach, then what the job appends."""

    def __init__(self, job_id: str, events: list[dict[str, Any]]) -> None:
        super().__init__()
        self.job_id = job_id
        self.events = events


class EventsEnded(Message):
    """A run's event stream ended: the job reached a final state and every event it wrote has arrived."""

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id


class SweepRead(Message):
    """New events of a train or sweep run were read and reduced to the τ grid's points."""

    def __init__(self, job_id: str, tau: str, read: int, points: list[SweepPoint]) -> None:
        super().__init__()
        self.job_id = job_id
        self.tau = tau
        """The run's configured τ, for points whose events name none."""
        self.read = read
        """How many events of the run have been read so far, all of them counted."""
        self.points = points


class JobCancelRequested(Message):
    """A job was asked to stop; it finishes its step, then ends `cancelled`."""

    def __init__(self, status: JobStatus) -> None:
        super().__init__()
        self.status = status


class JobResumed(Message):
    """A failed, cancelled or diverged job was relaunched in its run dir."""

    def __init__(self, status: JobStatus) -> None:
        super().__init__()
        self.status = status


class JobViewRead(Message):
    """A run's status, spec and outputs were read through the jobs client, for the pool inspector."""

    def __init__(self, view: JobView) -> None:
        super().__init__()
        self.view = view


class JobCallFailed(Message):
    """A jobs call raised: `during` says which, `job_id` names the run when there is one."""

    def __init__(self, during: str, error: str, job_id: str | None = None) -> None:
        super().__init__()
        self.during = during
        self.error = error
        self.job_id = job_id


class JobLaunched(Message):
    """A job was submitted from the launch dialog: its run exists, queued."""

    def __init__(self, status: JobStatus) -> None:
        super().__init__()
        self.status = status


class LaunchRefused(Message):
    """The engine refused a job the launch dialog submitted (its validator's RmxError, or the call failed)."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error
