"""A run folder for work done in this process: the same config, events.jsonl and status.json as a detached job."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.core.errors import Diverged, RmxError
from engine.recipes.trackers import Mirror, report_spec_of
from engine.jobs.runner import _Heartbeat, _one_line, _reserve_slot, _write_final
from engine.jobs.store import (
    EventWriter, JobSpec, JobStatus, RunContext, create_run, heartbeat_interval, process_started, resolve_entry,
    rmx_version, write_json_atomic,
)


class ForegroundRun:
    """A RunContext for in-process work, whose events also go to `echo` (stderr lines, or NDJSON on stdout)."""

    def __init__(self, context: RunContext, echo: Callable[[dict[str, Any]], None], mirror: Mirror | None) -> None:
        self.context = context
        self.run_dir = context.run_dir
        self._echo = echo
        self._mirror = mirror
        self._diverged: str | None = None

    def emit(self, event: dict[str, Any]) -> None:
        """Append the event to events.jsonl (flushed per event), then echo and mirror it as written."""
        self.context.emit(event)
        written = self.context.last_event or event
        self._echo(written)
        if self._mirror is not None:
            self._mirror.log(written)

    def set_progress(self, step: int, total: int | None = None) -> None:
        self.context.set_progress(step, total)

    def should_stop(self) -> bool:
        return self.context.should_stop()

    def diverged(self, reason: str) -> None:
        """The recipe returned a diverged result instead of raising: the run ends `diverged` with this reason."""
        self._diverged = reason


def _link_output(run_dir: Path, out: Path) -> None:
    """`artifacts` points at the command's own output, so readers of job runs (pool inspector, costs) find it."""
    artifacts = run_dir / "artifacts"
    try:
        if out.suffix in (".jsonl", ".json"):  # a file output: linked under its job-run name inside artifacts/
            (artifacts / out.name).symlink_to(out)
        else:
            artifacts.rmdir()
            artifacts.symlink_to(out, target_is_directory=True)
    except OSError:
        pass  # the run folder still holds config, events and status; only the shortcut is missing


@contextlib.contextmanager
def foreground_run(kind: str, config: dict[str, Any], out: str | Path,
                   echo: Callable[[dict[str, Any]], None]) -> Iterator[ForegroundRun]:
    """Make `runs/<id>/` for a command running here and keep its status like a job's until the block ends.

    `config` has the job kind's shape plus `out` (the command's output, absolute), so `rmx jobs resume` of a
    failed foreground run continues detached in the same output. SIGTERM and `rmx jobs cancel` stop it after its
    current step, as they stop a job; ctrl-c ends it `cancelled`.
    """
    out = Path(out).expanduser().resolve()
    known = resolve_entry(kind, None)
    if known.validate is not None:
        known.validate(config)  # bad input is one line before a run folder exists, as for a job
    spec = JobSpec(kind=kind, entry=known.entry, config={**config, "out": str(out), "foreground": True},
                   rmx_version=rmx_version(), created=time.time())
    run_dir = create_run(spec)
    _link_output(run_dir, out)
    now = time.time()
    status = JobStatus(id=run_dir.name, kind=kind, state="running", created=spec.created, pid=os.getpid(),
                       pid_started=process_started(os.getpid()), host=socket.gethostname(), started=now,
                       heartbeat=now, heartbeat_s=heartbeat_interval())
    slot = _reserve_slot(run_dir)
    write_json_atomic(run_dir / "status.json", status.to_json())
    writer = EventWriter(run_dir / "events.jsonl")
    context = RunContext(run_dir, status, writer)
    report = report_spec_of(config)
    mirror = Mirror(report, run_dir.name, run_dir, config, kind) if report else None
    run = ForegroundRun(context, echo, mirror)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: context.request_stop()) if in_main else None
    heartbeat = _Heartbeat(run_dir, status, context)
    heartbeat.start()
    run.emit({"job/state": "running", "job/run": run_dir.name})
    state, error = "done", None
    try:
        yield run
        if run._diverged is not None:
            state, error = "diverged", run._diverged
        elif context.should_stop():
            state = "cancelled"
    except Diverged as exc:
        state, error = "diverged", _one_line(exc)
        raise
    except KeyboardInterrupt:
        state = "cancelled"
        raise
    except BaseException as exc:
        state, error = "failed", _one_line(exc) if isinstance(exc, Exception) else type(exc).__name__
        raise
    finally:
        heartbeat.stop()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(Exception):  # the final state must be written even when echoing fails
            run.emit({"job/state": state, **({"job/error": error} if error else {})})
        step, total, last = context.snapshot()
        final = replace(status, state=state, heartbeat=time.time(), ended=time.time(), step=step, total=total,
                        last_event=last, error=error)
        _write_final(run_dir, final, slot)
        if slot is not None:
            slot.unlink(missing_ok=True)
        writer.close()
        if mirror is not None:
            mirror.close()


def output_of(config: dict[str, Any], run: RunContext, file_name: str | None = None) -> Path:
    """Where a job kind writes: a foreground run's own `out`, else artifacts/ (or the file `file_name` in it)."""
    out = config.get("out")
    if out is None:
        return run.artifacts / file_name if file_name else run.artifacts
    if not isinstance(out, str) or not out:
        raise RmxError("job config 'out' must be a path")
    return Path(out)
