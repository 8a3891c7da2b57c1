"""`python -m engine.jobs.runner <run_dir>`: run one job in its run directory, heartbeating, until it ends."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path

from engine.core.errors import Diverged, RmxError
from engine.jobs.store import (
    EventWriter, JobStatus, RunContext, heartbeat_interval, read_spec, resolve_entry, write_json_atomic,
)


class _Heartbeat(threading.Thread):
    """Rewrites status.json every interval with the latest step and event: the job's sign of life."""

    def __init__(self, run_dir: Path, status: JobStatus, run: RunContext) -> None:
        super().__init__(name="rmx-heartbeat", daemon=True)
        self._path = run_dir / "status.json"
        self._status = status
        self._run = run
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self._status.heartbeat_s):
            step, total, last = self._run.snapshot()
            beat = replace(self._status, heartbeat=time.time(), step=step, total=total, last_event=last,
                           cluster=self._run.cluster)
            try:
                write_json_atomic(self._path, beat.to_json())
            except OSError as error:  # a full disk must not kill the job; staleness will tell if it persists
                print(f"rmx job: heartbeat not written: {error}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if isinstance(error, RmxError) else f"{type(error).__name__}: {text}".rstrip(": ")


def run_job(run_dir: Path) -> int:
    """Run the job of `run_dir`; 0 when it ends done or cancelled, 1 when it fails or diverges."""
    run_dir = Path(run_dir).resolve()
    spec = read_spec(run_dir)
    queued = JobStatus.from_json(json.loads((run_dir / "status.json").read_text(encoding="utf-8")))
    if queued.state != "queued":
        print(f"rmx job: {run_dir.name} is {queued.state}, not queued: not starting it twice", file=sys.stderr)
        return 2
    now = time.time()
    status = replace(queued, state="running", pid=os.getpid(), host=socket.gethostname(), started=now,
                     heartbeat=now, heartbeat_s=heartbeat_interval(), ended=None, error=None)
    write_json_atomic(run_dir / "status.json", status.to_json())
    writer = EventWriter(run_dir / "events.jsonl")
    run = RunContext(run_dir, status, writer)
    # SIGTERM (cancel) only raises a flag: the job finishes its step, then ends `cancelled`.
    signal.signal(signal.SIGTERM, lambda *_: run.request_stop())
    heartbeat = _Heartbeat(run_dir, status, run)
    heartbeat.start()
    run.emit({"job/state": "running", "job/attempt": status.attempt})
    state, error = "done", None
    try:
        if not run.should_stop():
            kind = resolve_entry(spec.kind, spec.entry)
            kind.fn(dict(spec.config), run)
        if run.should_stop():
            state = "cancelled"
    except Diverged as exc:
        state, error = "diverged", _one_line(exc)
    except Exception as exc:
        if not isinstance(exc, RmxError):
            traceback.print_exc()
        state, error = "failed", _one_line(exc)
    finally:
        heartbeat.stop()  # before the final write, so no heartbeat can overwrite the final state
    # Events first, status last: a follower that sees the final state has every event on disk.
    run.emit({"job/state": state, **({"job/error": error} if error else {})})
    step, total, last = run.snapshot()
    final = replace(status, state=state, heartbeat=time.time(), ended=time.time(), step=step, total=total,
                    last_event=last, error=error, cluster=run.cluster)
    write_json_atomic(run_dir / "status.json", final.to_json())
    writer.close()
    return 0 if state in ("done", "cancelled") else 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m engine.jobs.runner <run_dir>", file=sys.stderr)
        return 2
    return run_job(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
