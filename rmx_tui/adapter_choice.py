"""Which adapter the compare view offers first: the newest finished job's, as its result.json lists it."""

from __future__ import annotations

from engine.jobs.store import list_runs, run_outputs, runs_dir


def newest_adapter() -> str | None:
    """The `adapter` output of the newest done run that made one (train, sweep, distill, pipeline), or None."""
    try:
        runs = list_runs()
    except Exception:  # an unreadable jobs store leaves the field empty: the user types a path
        return None
    for status in reversed(runs):
        if status.state == "done":
            adapter = run_outputs(runs_dir() / status.id).get("adapter")
            if adapter:
                return adapter
    return None
