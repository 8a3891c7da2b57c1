"""Which adapter the compare view offers first: the newest finished job's, as its result.json lists it."""

from __future__ import annotations

from typing import Any


def newest_adapter(client: Any) -> str | None:
    """The `adapter` output of the newest done run that made one (train, sweep, distill, pipeline), or None.

    `client` is the app's engine client, so a daemon on another machine answers for its own runs."""
    try:
        runs = client.list_jobs()
        for status in sorted((s for s in runs if s.state == "done"), key=lambda s: (s.created, s.id), reverse=True):
            adapter = client.job(status.id).outputs.get("adapter")
            if adapter:
                return adapter
    except Exception:  # an unreadable jobs store leaves the field empty: the user types a path
        return None
    return None
