"""The `selftest` job kind: counts to N with a pause per step; a real job to exercise job handling end to end."""

from __future__ import annotations

import json
import time
from typing import Any

from engine.core.errors import Diverged, RmxError
from engine.jobs.store import RunContext, register_job_kind, write_json_atomic

MAX_COUNT = 10_000_000
MAX_SLEEP_S = 10.0


def validate(config: dict[str, Any]) -> None:
    """`count` (required), `sleep` seconds per step, and optional `fail_at` / `diverge_at` steps."""
    unknown = set(config) - {"count", "sleep", "fail_at", "diverge_at"}
    if unknown:
        raise RmxError(f"selftest: unknown config keys {sorted(unknown)}")
    count = config.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= MAX_COUNT:
        raise RmxError(f"selftest: count must be an integer in 1..{MAX_COUNT}")
    sleep = config.get("sleep", 0.0)
    if not isinstance(sleep, (int, float)) or isinstance(sleep, bool) or not 0 <= sleep <= MAX_SLEEP_S:
        raise RmxError(f"selftest: sleep must be a number of seconds in 0..{MAX_SLEEP_S:g}")
    for key in ("fail_at", "diverge_at"):
        value = config.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise RmxError(f"selftest: {key} must be a step number ≥ 0")


def selftest(config: dict[str, Any], run: RunContext) -> None:
    """Emit `selftest/value` = i for i in 0..count-1, checkpointing after each step so resume continues.

    `fail_at` / `diverge_at` break the first attempt at that step, so a resume can finish the count.
    """
    count, sleep = config["count"], float(config.get("sleep", 0.0))
    checkpoint = run.artifacts / "checkpoint.json"
    start = json.loads(checkpoint.read_text())["next"] if run.resumed and checkpoint.exists() else 0
    run.set_progress(start, count)
    for value in range(start, count):
        if run.should_stop():
            return
        if sleep:
            time.sleep(sleep)
        if not run.resumed and value == config.get("fail_at"):
            raise RmxError(f"selftest failed at step {value}, as configured")
        if not run.resumed and value == config.get("diverge_at"):
            raise Diverged(f"selftest diverged at step {value}, as configured")
        run.emit({"selftest/value": value})
        write_json_atomic(checkpoint, {"next": value + 1})
        run.checkpoint = f"step-{value + 1}"
        run.set_progress(value + 1, count)
    run.emit({"selftest/done": count})


register_job_kind("selftest", selftest, validate)
