"""Freezer: takes long-lived scored token records out of the cyclic garbage collector's reach."""

from __future__ import annotations

import gc
from weakref import WeakKeyDictionary

from rmx_tui.ui_state import Branch

FREEZE_AFTER = 4096
"""Newly scored tokens shown that make another gc.freeze() worth its cost (see Freezer)."""


class Freezer:
    """Takes scored token records out of the cyclic garbage collector's reach once enough new ones were shown.

    A scored token is about nine objects the collector tracks (its record, its top-k tuple and entries, the
    teacher's pick), kept for the session: a 32k-token rollout is ~300k of them, and every full collection walks
    them all (150-300 ms on a loaded 2-vCPU machine) inside whichever open or key Textual's paint churn (a Strip
    is 16 tracked objects) happens to trigger it in. Nothing the view allocates can shorten that walk; freezing
    does, and costs the records nothing: they hold no cycles, so refcounting still frees them. What it costs is
    that cycles among the other objects alive at that moment (mostly Strips in Textual's caches, about 0.2 MB
    measured at 160×50) are never collected once they become garbage: hence a freeze per FREEZE_AFTER newly
    scored tokens shown (4 MB of records or more), not one per open.
    """

    def __init__(self) -> None:
        self.counted: WeakKeyDictionary[Branch, int] = WeakKeyDictionary()
        """The id of each branch's token list already counted: scoring a branch again gives it a new list."""
        self.pending = 0

    def shown(self, branch: Branch) -> None:
        if not branch.scored or self.counted.get(branch) == id(branch.tokens):
            return
        self.counted[branch] = id(branch.tokens)
        self.pending += len(branch.tokens)
        if self.pending >= FREEZE_AFTER:
            gc.freeze()
            self.pending = 0
