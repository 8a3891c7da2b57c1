"""Which adapter the compare view offers first: the newest finished train or pipeline job's, from the jobs store."""

from __future__ import annotations

import json

from engine.jobs.store import list_runs, runs_dir

ADAPTER_KINDS = ("train", "pipeline")
"""Job kinds whose result.json names the adapter they trained."""


def newest_adapter() -> str | None:
    """The `adapter` of the newest done train or pipeline run, or None (no such run, or its result unreadable)."""
    try:
        runs = list_runs()
    except Exception:  # an unreadable jobs store leaves the field empty: the user types a path
        return None
    for status in reversed(runs):
        if status.kind not in ADAPTER_KINDS or status.state != "done":
            continue
        try:
            result = json.loads((runs_dir() / status.id / "artifacts" / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(result, dict) and isinstance(result.get("adapter"), str):
            return result["adapter"]
    return None
