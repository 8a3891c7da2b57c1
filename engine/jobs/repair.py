"""`rmx jobs repair`: rebuild a damaged run's status.json from its events.jsonl and the process table."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.jobs.store import (
    ACTIVE_STATES, STATES, EventTail, JobStatus, RunDamaged, check_events_file, damaged_status, find_run,
    heartbeat_interval, load_run, process_started, read_json_file, read_spec, write_json_atomic,
)

FINAL_STATES = frozenset(STATES) - ACTIVE_STATES - {"damaged"}


@dataclass(frozen=True)
class RepairReport:
    """What `repair_run` found and did."""

    status: JobStatus
    """The run's status after the repair (still `damaged` when what is missing cannot be rebuilt)."""
    repaired: list[str] = field(default_factory=list)
    """What was rebuilt, one line each."""
    lost: list[str] = field(default_factory=list)
    """What could not be recovered, one line each."""

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.to_json(), "repaired": self.repaired, "lost": self.lost}


def _runner_process(run_dir: Path) -> int | None:
    """The pid of a live `engine.jobs.runner` working on `run_dir`, from /proc; None when none (or no procfs)."""
    needle = str(run_dir).encode()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        args = cmdline.split(b"\0")
        if b"engine.jobs.runner" in args and needle in args:
            return int(entry)
    return None


def _from_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The status fields the event log can vouch for: attempt, step, last event, final state and error."""
    found: dict[str, Any] = {"attempt": 1, "step": 0, "state": None, "error": None, "last_event": None,
                             "heartbeat": None, "started": None}
    for event in events:
        found["last_event"] = event
        if isinstance(event.get("step"), int) and event["step"] >= 0:
            found["step"] = event["step"]
        if isinstance(event.get("t"), (int, float)):
            found["heartbeat"] = float(event["t"])
        state = event.get("job/state")
        if state == "running":
            attempt = event.get("job/attempt")
            found["attempt"] = attempt if isinstance(attempt, int) and attempt >= 1 else found["attempt"]
            found["state"], found["error"], found["started"] = "running", None, found["heartbeat"]
        elif state in FINAL_STATES:
            found["state"] = state
            error = event.get("job/error")
            found["error"] = error if isinstance(error, str) else None
    return found


def repair_run(job_id: str) -> RepairReport:
    """Rebuild `job_id`'s status.json (and an empty events.jsonl when it is missing) from what the folder holds.

    A final state in the log is kept; a job whose log stops mid-run is `running` if its runner process still
    lives, else `failed`. Fields no file records (the heartbeat interval, progress totals) get defaults, and the
    report says so. A run that was not damaged is left as it is.
    """
    run_dir = find_run(job_id)
    before, _ = load_run(run_dir)
    if before.state != "damaged":
        return RepairReport(before, [], [])
    repaired: list[str] = []
    lost: list[str] = []
    try:
        check_events_file(run_dir)
        tail, events = EventTail(run_dir), []
        while batch := tail.read():
            events += batch
    except RunDamaged as damage:
        if "missing" not in str(damage):
            raise RunDamaged(f"job {job_id}: cannot repair ({damage})") from None
        (run_dir / "events.jsonl").touch()
        events = []
        repaired.append("events.jsonl: recreated empty")
        lost.append("events.jsonl: the events of this run are gone")
    try:
        spec = read_spec(run_dir)
    except RunDamaged as damage:
        spec = None
        lost.append(f"{damage}: the job's kind and settings cannot be rebuilt, so it cannot be resumed")
    try:
        JobStatus.from_json(read_json_file(run_dir / "status.json"))
        status_ok = True
    except RunDamaged:  # the file is what is damaged: rebuild it
        status_ok = False
    if not status_ok:
        found = _from_events(events)
        base = damaged_status(run_dir, "")
        pid = _runner_process(run_dir) if found["state"] not in FINAL_STATES else None  # an ended job may be exiting
        state = found["state"]
        error = found["error"]
        if pid is not None:
            state, error = "running", None
            repaired.append(f"status.json: the job's process {pid} is alive, so it is running")
        elif state in (None, "running"):
            state = "failed"
            error = "job process gone; status.json was rebuilt from events.jsonl by rmx jobs repair"
            repaired.append("status.json: no job process alive, so it failed (resume it)")
        else:
            repaired.append(f"status.json: state {state} from the log's last job/state event")
        now = time.time()
        status = JobStatus(
            id=run_dir.name, kind=spec.kind if spec else base.kind, state=state,
            created=spec.created if spec else base.created, pid=pid, host=socket.gethostname(),
            attempt=found["attempt"], started=found["started"], ended=None if state == "running" else now,
            heartbeat=now if pid is not None else found["heartbeat"] or now, heartbeat_s=heartbeat_interval(),
            step=found["step"], total=None, last_event=found["last_event"], error=error,
            pid_started=process_started(pid) if pid is not None else None,
        )
        write_json_atomic(run_dir / "status.json", status.to_json())
        repaired.append(f"status.json: rebuilt (attempt {status.attempt}, step {status.step}, "
                        f"{len(events)} events)")
        lost.append("status.json: the step total is unknown until the job reports progress again")
    after, _ = load_run(run_dir)
    return RepairReport(after, repaired, lost)
