"""What the workbench remembers between sessions (today: that the first-run tour was dismissed), in one JSON file."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

PREFERENCES_FILE = "tui.json"
"""Kept in rmx's data dir (RMX_DATA_DIR overrides it), next to the runs."""


@dataclass(frozen=True)
class Preferences:
    """The workbench's remembered choices."""

    tour_dismissed: bool = False
    """The first-run tour was closed once: `rmx demo` no longer opens with it (T on the help screen still does)."""


def preferences_path() -> Path:
    from engine.jobs.store import data_dir

    return data_dir() / PREFERENCES_FILE


def load_preferences() -> Preferences:
    """The saved preferences; a missing or unreadable file gives the defaults (it is rewritten on the next save)."""
    try:
        data = json.loads(preferences_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Preferences()
    if not isinstance(data, dict):
        return Preferences()
    known = {f.name: data[f.name] for f in fields(Preferences) if isinstance(data.get(f.name), bool)}
    return Preferences(**known)


def save_preferences(**changes: bool) -> Preferences:
    """Apply `changes` to the saved preferences and write them atomically; returns what was saved."""
    updated = replace(load_preferences(), **changes)
    path = preferences_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(asdict(updated), indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return updated
