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

from engine.core.diskfull import DiskFull, disk_full, is_disk_full
from engine.core.errors import Diverged, RmxError, Stopped
from engine.jobs.store import (
    EventWriter, JobStatus, RunContext, heartbeat_interval, json_bytes, process_started, read_spec, resolve_entry,
    write_json_atomic,
)

SLOT_BYTES = 64 << 10
"""Room reserved in the run dir at start for the final status.json, so a job ending on a full disk says why."""
SLOT_NAME = ".status.slot"
FINAL_RETRY_S = 30.0
"""How long a job that could not write its final status (no slot either) keeps retrying before it gives up."""


def _reserve_slot(run_dir: Path) -> Path | None:
    """Pre-allocate SLOT_BYTES of spaces (trailing whitespace is valid JSON), or None when even that does not fit."""
    slot = run_dir / SLOT_NAME
    try:
        fd = os.open(slot, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b" " * SLOT_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        slot.unlink(missing_ok=True)
        return None
    return slot


def _write_final(run_dir: Path, final: JobStatus, slot: Path | None) -> None:
    """Write the final status: atomically as usual; on a full disk into the reserved slot (overwritten in place,
    so no new block is needed) renamed over status.json; without a slot, retried until space comes back."""
    try:
        write_json_atomic(run_dir / "status.json", final.to_json())
        return
    except OSError as error:
        if not is_disk_full(error):
            raise
    data = json_bytes(final.to_json()) + b"\n"
    if len(data) > SLOT_BYTES:
        data = json_bytes({**final.to_json(), "last_event": None}) + b"\n"
    if slot is not None and len(data) <= SLOT_BYTES:
        fd = os.open(slot, os.O_WRONLY)
        try:
            os.pwrite(fd, data + b" " * (SLOT_BYTES - len(data)), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(slot, run_dir / "status.json")
        return
    deadline = time.monotonic() + FINAL_RETRY_S
    while True:  # the verdict stays in memory and is retried: a reader meanwhile judges the job by its heartbeat
        time.sleep(1.0)
        try:
            write_json_atomic(run_dir / "status.json", final.to_json())
            return
        except OSError:
            if time.monotonic() > deadline:
                raise


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


def _print_quietly(text: str) -> None:
    """To job.log; a full disk may refuse even that, and the status keeps the reason anyway."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except OSError:
        pass


def run_job(run_dir: Path) -> int:
    """Run the job of `run_dir`; 0 when it ends done or cancelled, 1 when it fails or diverges."""
    run_dir = Path(run_dir).resolve()
    spec = read_spec(run_dir)
    queued = JobStatus.from_json(json.loads((run_dir / "status.json").read_text(encoding="utf-8")))
    if queued.state != "queued":
        print(f"rmx job: {run_dir.name} is {queued.state}, not queued: not starting it twice", file=sys.stderr)
        return 2
    now = time.time()
    status = replace(queued, state="running", pid=os.getpid(), pid_started=process_started(os.getpid()),
                     host=socket.gethostname(), started=now, heartbeat=now, heartbeat_s=heartbeat_interval(),
                     ended=None, error=None)
    slot = _reserve_slot(run_dir)
    write_json_atomic(run_dir / "status.json", status.to_json())
    writer = EventWriter(run_dir / "events.jsonl")
    run = RunContext(run_dir, status, writer)
    # SIGTERM (cancel) only raises a flag: the job finishes its step, then ends `cancelled`.
    signal.signal(signal.SIGTERM, lambda *_: run.request_stop())
    heartbeat = _Heartbeat(run_dir, status, run)
    heartbeat.start()
    state, error = "done", None
    try:
        run.emit({"job/state": "running", "job/attempt": status.attempt})
        if not run.should_stop():
            kind = resolve_entry(spec.kind, spec.entry)
            kind.fn(dict(spec.config), run)
        if run.should_stop():
            state = "cancelled"
    except Stopped:
        state = "cancelled"  # every kind stops the one way: what it wrote is kept for `rmx jobs resume`
    except Diverged as exc:
        state, error = "diverged", _one_line(exc)
    except Exception as exc:
        state = "failed"
        if is_disk_full(exc):
            known = exc if isinstance(exc, DiskFull) else None
            where = (known.path if known else None) or getattr(exc, "filename", None) or run_dir
            error = str(disk_full(where, known.needed if known else None,
                                  (known.checkpoint if known else None) or run.checkpoint,
                                  then=f"free space and run rmx jobs resume {run_dir.name}"))
        else:
            if not isinstance(exc, RmxError):
                _print_quietly(traceback.format_exc())
            error = _one_line(exc)
        _print_quietly(f"rmx job: {error}\n")
    finally:
        heartbeat.stop()  # before the final write, so no heartbeat can overwrite the final state
    # Events first, status last: a follower that sees the final state has every event on disk.
    try:
        run.emit({"job/state": state, **({"job/error": error} if error else {})})
    except OSError:  # a full disk: the final status below still carries the state and the reason
        pass
    step, total, last = run.snapshot()
    final = replace(status, state=state, heartbeat=time.time(), ended=time.time(), step=step, total=total,
                    last_event=last, error=error, cluster=run.cluster)
    _write_final(run_dir, final, slot)
    if slot is not None:
        slot.unlink(missing_ok=True)
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
