"""Jobs: run directories, detached job processes, heartbeats, cancel and resume, and the event log."""

from __future__ import annotations

import calendar
import dataclasses
import importlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

from engine.core.diskfull import disk_full, is_disk_full
from engine.core.errors import RmxError
from engine.core.io import atomic_write

STATES = ("queued", "running", "done", "failed", "cancelled", "diverged", "damaged")
"""`damaged` is never written: it is what a reader reports for a run folder whose files it cannot trust."""
ACTIVE_STATES = frozenset({"queued", "running"})
DEFAULT_HEARTBEAT_S = 2.0
STALE_HEARTBEATS = 3
"""A job whose heartbeat is older than this many intervals is dead."""
QUEUED_GRACE_S = 30.0
"""How long a job may stay queued (its process importing) before a missing process counts as dead."""
EXIT_GRACE_S = 30.0
"""How long resume waits for a job that wrote its final state to finish exiting: tearing down torch and the
grading worker took 4–5 s on a loaded 2-core machine, so 5 s made resume refuse a job that was already over."""
POLL_S = 0.05
"""How often a follower looks for new events while the log is idle."""
ENTRY_PACKAGES = ("engine", "rmx_tui")
"""Only modules of these packages may be named as a job entry: a request never imports arbitrary code."""

MOVED_ENTRIES = {
    "engine.pipeline": "engine.jobs.kinds",
    "engine.intervene_job": "engine.jobs.intervene",
    "engine.selftest_job": "engine.jobs.selftest",
}
"""Where the job functions of runs made before the engine's layers were folders live now, so they resume."""

_KIND_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_ID_RE = re.compile(r"^\d{8}-\d{6}-[a-z][a-z0-9-]{0,31}-[0-9a-f]{4}$")
_ENTRY_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_READ_CHUNK = 1 << 20


class JobNotFound(RmxError):
    """No run directory has this id."""


class JobConflict(RmxError):
    """The job is in a state that forbids the request (cancel a finished job, resume a running one)."""


class RunDamaged(RmxError):
    """A run folder file is missing or does not match its schema; the message names the file and the fault."""


_NUMBER = (int, float)
_STATUS_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": ((str,), True), "kind": ((str,), True), "state": ((str,), True), "created": (_NUMBER, True),
    "pid": ((int, type(None)), False), "host": ((str, type(None)), False), "attempt": ((int,), False),
    "started": (_NUMBER + (type(None),), False), "ended": (_NUMBER + (type(None),), False),
    "heartbeat": (_NUMBER + (type(None),), False), "heartbeat_s": (_NUMBER, False), "step": ((int,), False),
    "total": ((int, type(None)), False), "last_event": ((dict, type(None)), False),
    "error": ((str, type(None)), False), "pid_started": (_NUMBER + (type(None),), False),
}
"""status.json's fields: the JSON types each may hold, and whether it must be there."""
_SPEC_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "kind": ((str,), True), "entry": ((str,), True), "config": ((dict, type(None)), False),
    "rmx_version": ((str,), False), "created": (_NUMBER, True),
}
"""config.json's fields, as _STATUS_SCHEMA."""


def _check_schema(data: Any, schema: dict[str, tuple[tuple[type, ...], bool]], name: str) -> dict[str, Any]:
    """`data` if it is an object whose fields have the schema's types; else RunDamaged saying which field is wrong."""
    if not isinstance(data, dict):
        raise RunDamaged(f"{name}: not an object")
    for field, (types, required) in schema.items():
        if field not in data:
            if required:
                raise RunDamaged(f"{name}: no '{field}'")
            continue
        value = data[field]
        if isinstance(value, bool) or not isinstance(value, types):
            raise RunDamaged(f"{name}: '{field}' is {type(value).__name__}, not {' or '.join(t.__name__ for t in types)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise RunDamaged(f"{name}: '{field}' is not a finite number")
    return data


def read_json_file(path: Path) -> Any:
    """A run folder's JSON file, or RunDamaged naming the file and what is wrong with it (one line)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RunDamaged(f"{path.name}: missing") from None
    except PermissionError:
        raise RunDamaged(f"{path.name}: unreadable (permission denied)") from None
    except IsADirectoryError:
        raise RunDamaged(f"{path.name}: a folder, not a file") from None
    except OSError as error:
        raise RunDamaged(f"{path.name}: unreadable ({error.strerror or error})") from None
    if not raw.strip():
        raise RunDamaged(f"{path.name}: empty")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise RunDamaged(f"{path.name}: not valid JSON (cut short?)") from None


def data_dir() -> Path:
    """Where rmx keeps runs (platformdirs user data dir, overridable with RMX_DATA_DIR)."""
    override = os.environ.get("RMX_DATA_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_data_dir("rmx"))


def runs_dir() -> Path:
    return data_dir() / "runs"


def heartbeat_interval() -> float:
    """Seconds between a job's heartbeats (RMX_HEARTBEAT_S; tests make it short)."""
    raw = os.environ.get("RMX_HEARTBEAT_S", "")
    if not raw:
        return DEFAULT_HEARTBEAT_S
    try:
        value = float(raw)
    except ValueError:
        raise RmxError(f"RMX_HEARTBEAT_S must be a number of seconds, got '{raw}'") from None
    if not 0 < value <= 3600:
        raise RmxError(f"RMX_HEARTBEAT_S must be in (0, 3600], got {raw}")
    return value


def rmx_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("rmx")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """numpy/torch scalars and records reach the log as plain JSON; anything else is a job bug."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON: emit plain numbers, strings, lists and dicts")


def json_bytes(data: Any) -> bytes:
    """Standard one-line JSON in UTF-8, which every consumer (jq, browsers) can read.

    NaN and ±inf become null; text UTF-8 cannot carry (a lone surrogate echoed from a request) is \\u-escaped.
    """
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, default=_plain)
    except ValueError:
        text = json.dumps(_finite(json.loads(json.dumps(data, default=_plain))), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(json.loads(text)).encode("ascii")


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace `path` with `data` through tmp+rename, so a reader never sees half a file.

    No fsync: this guards against a killed process, which is the failure jobs see, not against power loss.
    """
    atomic_write(path, json_bytes(data) + b"\n")


@dataclass(frozen=True)
class JobSpec:
    """What a run is: `config.json`, written once when the run is created."""

    kind: str
    """The registered job kind (train, rollouts, selftest...)."""
    entry: str
    """`module.path:function` that job_main imports; importing the module registers the kind."""
    config: dict[str, Any]
    """The kind's own frozen configuration."""
    rmx_version: str
    """The rmx that created the run, to explain a run that a later rmx cannot resume."""
    created: float
    """Unix time the run was created."""

    def __post_init__(self) -> None:
        if not _KIND_RE.match(self.kind):
            raise RmxError(f"job kind '{self.kind}' must be lowercase letters, digits and dashes")
        if not _ENTRY_RE.match(self.entry):
            raise RmxError(f"job entry '{self.entry}' must look like module.path:function")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JobSpec":
        _check_schema(data, _SPEC_SCHEMA, "config.json")
        return cls(kind=data["kind"], entry=data["entry"], config=dict(data.get("config") or {}),
                   rmx_version=data.get("rmx_version", "0+unknown"), created=float(data["created"]))


@dataclass(frozen=True)
class JobStatus:
    """Where a run stands: `status.json`, rewritten atomically by the job and its launcher."""

    id: str
    """The run dir's name, `20261130-071501-train-3f2a`."""
    kind: str
    state: str
    """queued, running, done, failed, cancelled or diverged."""
    created: float
    """Unix time the run was created."""
    pid: int | None = None
    """The job process (also its process group), None before it starts."""
    host: str | None = None
    """The machine `pid` lives on: on a shared home (NFS), another node's pid says nothing here."""
    attempt: int = 1
    """1 for the first launch, +1 per resume."""
    started: float | None = None
    """Unix time the current attempt's process started."""
    ended: float | None = None
    """Unix time the run reached its final state."""
    heartbeat: float | None = None
    """Unix time of the job's last sign of life."""
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    """The job's heartbeat interval, so readers judge staleness with the job's own clock."""
    step: int = 0
    """Progress the job reported with set_progress."""
    total: int | None = None
    """The step count it expects, when it knows."""
    last_event: dict[str, Any] | None = None
    """The latest event (as of the last heartbeat, or the log's last line for a dead job)."""
    error: str | None = None
    """One line saying why the job failed or diverged (or, for `damaged`, what is wrong with its folder)."""
    pid_started: float | None = None
    """When `pid` started (Unix time, from the process table): a recycled pid has another start time."""
    cluster: str | None = None
    """For a job run on Ray: the cluster's address and how many of its tasks are busy (`10.0.0.5:6379, 3/4 busy`)."""

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise RmxError(f"unknown job state '{self.state}': use one of {', '.join(STATES)}")
        if self.attempt < 1 or self.step < 0 or self.heartbeat_s <= 0:
            raise RmxError(f"job {self.id}: attempt, step and heartbeat interval must be positive")

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JobStatus":
        _check_schema(data, _STATUS_SCHEMA, "status.json")
        try:
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except RmxError as error:
            raise RunDamaged(f"status.json: {error}") from None


@dataclass(frozen=True)
class JobView:
    """A run's status and spec together: what `rmx jobs show` prints."""

    status: JobStatus
    spec: JobSpec | None
    """None when config.json is missing or damaged (the status then says `damaged` and why)."""
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)
    """What the run made, as its result.json lists it (name → path); empty until it has one."""

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.to_json(), "spec": self.spec.to_json() if self.spec else None,
                "outputs": dict(self.outputs)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JobView":
        spec = data.get("spec")
        outputs = data.get("outputs") if isinstance(data.get("outputs"), dict) else {}
        return cls(JobStatus.from_json(data["status"]), JobSpec.from_json(spec) if spec is not None else None,
                   dict(outputs))


# --- the job-kind registry -------------------------------------------------------------------------
# A module-level table by design: importing a module registers its kinds, in whichever process imports
# it (the submitting client, the daemon, job_main), so no central list of kinds exists anywhere.


@dataclass(frozen=True)
class JobKind:
    """A registered job kind."""

    fn: Callable[[dict, "RunContext"], None]
    """Does the work, in the job process."""
    validate: Callable[[dict], None] | None
    """Raises RmxError for a bad config, before any process starts."""
    entry: str
    """`module:function` of `fn`, stored in config.json for job_main."""


_KINDS: dict[str, JobKind] = {}


def register_job_kind(name: str, fn: Callable[[dict, "RunContext"], None],
                      validate: Callable[[dict], None] | None = None) -> None:
    """Make `name` runnable as a job: `fn(config, run)` does the work in the job process.

    `validate(config)` raises RmxError for a bad config, so a submit is refused before a process starts.
    """
    if not _KIND_RE.match(name):
        raise ValueError(f"job kind '{name}' must be lowercase letters, digits and dashes")
    entry = f"{fn.__module__}:{fn.__qualname__}"
    if not _ENTRY_RE.match(entry):
        raise ValueError(f"job function {entry} must be a module-level function")
    known = _KINDS.get(name)
    if known is not None and known.entry != entry:
        raise ValueError(f"job kind '{name}' is already registered by {known.entry}")
    _KINDS[name] = JobKind(fn, validate, entry)


def job_entry(kind: str) -> str | None:
    """The entry of a kind registered in this process, None when this process never imported it."""
    known = _KINDS.get(kind)
    return known.entry if known else None


def resolve_entry(kind: str, entry: str | None) -> JobKind:
    """The registered kind, importing `entry`'s module first when given; refuses unregistered functions."""
    if entry is not None:
        module, _, function = entry.partition(":")
        entry = f"{MOVED_ENTRIES.get(module, module)}:{function}" if function else entry
        if not _ENTRY_RE.match(entry) or entry.split(".")[0].split(":")[0] not in ENTRY_PACKAGES:
            raise RmxError(f"job entry '{entry}' must be module:function inside {' or '.join(ENTRY_PACKAGES)}")
        module = entry.split(":")[0]
        try:
            importlib.import_module(module)
        except Exception as error:  # a broken module is the entry's problem, not the daemon's
            detail = f"no module named {error.name}" if isinstance(error, ModuleNotFoundError) else "it failed to import"
            raise RmxError(f"job entry '{entry}': cannot import {module} ({detail})") from None
    known = _KINDS.get(kind)
    if known is None:
        names = ", ".join(sorted(_KINDS)) or "none"
        raise RmxError(f"unknown job kind '{kind}' (registered here: {names}); "
                       "pass the entry of the module that registers it")
    if entry is not None and known.entry != entry:
        raise RmxError(f"job kind '{kind}' is registered by {known.entry}, not {entry}")
    return known


# --- run directories ----------------------------------------------------------------------------

OUTPUT_KEYS = frozenset({"out", "out_dir", "output", "output_dir"})
"""Job config keys (at any depth) that name where a job writes."""


def contained(path: Any, roots: list[Path], what: str = "out") -> Path:
    """`path` resolved (`..` and symlinks followed) when it lies under one of `roots`; else a one-line refusal."""
    if not isinstance(path, str) or not path.strip() or "\x00" in path or len(path) > 4096:
        raise RmxError(f"{what} must be a path, got {str(path)[:80]!r}")
    resolved = Path(path).expanduser().resolve()
    if any(resolved.is_relative_to(Path(root).expanduser().resolve()) for root in roots):
        return resolved
    raise RmxError(f"{what} {path!r} lies outside the engine's data folder: a job started over the API writes only "
                   "under it (or into its run folder when out is left out)")


def check_outputs(config: Any, roots: list[Path]) -> None:
    """Refuse a job config whose output paths (OUTPUT_KEYS, at any depth) escape `roots`."""
    if isinstance(config, dict):
        for key, value in config.items():
            if key in OUTPUT_KEYS and value is not None:
                contained(value, roots, str(key))
            else:
                check_outputs(value, roots)
    elif isinstance(config, list):
        for value in config:
            check_outputs(value, roots)


def new_job_id(kind: str, now: float | None = None) -> str:
    """`20261130-071501-train-3f2a`: UTC, so ids sort by time across time zones and DST changes."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{kind}-{secrets.token_hex(2)}"


def find_run(job_id: str) -> Path:
    """The run directory of `job_id`; the strict id pattern keeps requests inside runs/."""
    if not isinstance(job_id, str) or not _ID_RE.match(job_id):
        raise JobNotFound(f"no job '{job_id}': job ids look like 20261130-071501-train-3f2a")
    run_dir = runs_dir() / job_id
    if not run_dir.is_dir():  # a folder without a readable status.json is a damaged run, not a missing one
        raise JobNotFound(f"no job '{job_id}' on this machine (rmx jobs list shows its runs)")
    return run_dir


def create_run(spec: JobSpec) -> Path:
    """Make `runs/<id>/` with config.json, status.json (queued), an empty events.jsonl and artifacts/.

    Built under a hidden name and renamed into place, so listings never see a half-made run.
    """
    root = runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    while True:
        job_id = new_job_id(spec.kind, spec.created)
        if not (root / job_id).exists():
            break
    tmp = root / f".{job_id}.tmp"
    try:
        tmp.mkdir()
        (tmp / "artifacts").mkdir()
        (tmp / "events.jsonl").touch()
        write_json_atomic(tmp / "config.json", spec.to_json())
        status = JobStatus(id=job_id, kind=spec.kind, state="queued", created=spec.created,
                           host=socket.gethostname(), heartbeat=spec.created, heartbeat_s=heartbeat_interval())
        write_json_atomic(tmp / "status.json", status.to_json())
        os.rename(tmp, root / job_id)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(error):
            raise disk_full(error.filename or root, then="free space and submit the job again") from None
        raise
    return root / job_id


RESULT_FILE = "result.json"
"""artifacts/result.json: a finished job's result, with `outputs` naming each file or folder it made."""


def write_result(artifacts: Path, result: dict[str, Any], outputs: dict[str, str | None]) -> None:
    """The job's result and its outputs (name → path; None for an output this run did not make), atomically."""
    listed = {name: str(path) for name, path in outputs.items() if path is not None}
    write_json_atomic(Path(artifacts) / RESULT_FILE, {**result, "outputs": listed})


def _legacy_outputs(result: dict[str, Any]) -> dict[str, str]:
    """The outputs of a result.json written before `outputs` existed: the paths its result fields name."""
    stages = result.get("stages") if isinstance(result.get("stages"), dict) else {}
    found = {"rollouts": (stages.get("rollouts") or {}).get("path") if stages else None,
             "pool": (stages.get("pool") or {}).get("path") if stages else None,
             "adapter": result.get("adapter") or result.get("best_adapter"), "report": result.get("report")}
    if not stages and isinstance(result.get("path"), str):  # rollouts and pool results name their one file
        found["pool" if "stats" in result else "rollouts"] = result["path"]
    return {name: path for name, path in found.items() if isinstance(path, str) and path}


def run_outputs(run_dir: Path) -> dict[str, str]:
    """What a run made, from its artifacts/result.json ({} while it has none: queued, running or failed)."""
    try:
        result = json.loads((Path(run_dir) / "artifacts" / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(result, dict):
        return {}
    outputs = result.get("outputs")
    if isinstance(outputs, dict):
        return {name: path for name, path in outputs.items() if isinstance(path, str)}
    return _legacy_outputs(result)


def job_outputs(job_id: str) -> dict[str, str]:
    """What job `job_id` made (see run_outputs)."""
    return run_outputs(find_run(job_id))


def read_spec(run_dir: Path) -> JobSpec:
    """config.json, checked against its schema; RunDamaged (one line naming the fault) when it is not usable."""
    try:
        return JobSpec.from_json(read_json_file(Path(run_dir) / "config.json"))
    except RunDamaged:
        raise
    except RmxError as error:
        raise RunDamaged(f"config.json: {error}") from None


def _read_raw_status(run_dir: Path) -> JobStatus:
    return JobStatus.from_json(read_json_file(Path(run_dir) / "status.json"))


def damaged_status(run_dir: Path, reason: str) -> JobStatus:
    """What a reader reports for a run folder it cannot trust: its id, kind and time come from the folder name."""
    name = Path(run_dir).name
    try:
        created = float(calendar.timegm(time.strptime(name[:15], "%Y%m%d-%H%M%S")))
    except ValueError:
        created = 0.0
    kind = name[16:].rsplit("-", 1)[0] or "unknown"
    return JobStatus(id=name, kind=kind, state="damaged", created=created, error=reason)


def check_events_file(run_dir: Path) -> None:
    """events.jsonl exists and can be read (a torn last line is no damage: readers stop before it)."""
    path = Path(run_dir) / "events.jsonl"
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise RunDamaged("events.jsonl: missing") from None
    except PermissionError:
        raise RunDamaged("events.jsonl: unreadable (permission denied)") from None
    except IsADirectoryError:
        raise RunDamaged("events.jsonl: a folder, not a file") from None
    except OSError as error:
        raise RunDamaged(f"events.jsonl: unreadable ({error.strerror or error})") from None


def load_run(run_dir: Path) -> tuple[JobStatus, JobSpec | None]:
    """The one reader of a run folder: status.json, config.json and events.jsonl checked against their schema.

    Never raises for a damaged folder: its status says `damaged` and, in `error`, what is wrong.
    """
    run_dir = Path(run_dir)
    try:
        status = read_status(run_dir)
        spec = read_spec(run_dir)
        check_events_file(run_dir)
    except RunDamaged as damage:
        try:
            spec = read_spec(run_dir)
        except RunDamaged:
            spec = None
        return damaged_status(run_dir, str(damage)), spec
    return status, spec


def refuse_damaged(status: JobStatus) -> None:
    if status.state == "damaged":
        raise JobConflict(f"job {status.id} is damaged ({status.error}): run rmx jobs repair {status.id}")


def pid_alive(pid: int | None) -> bool:
    """True when `pid` runs; a zombie (dead, not yet reaped by its parent) counts as dead."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (macOS): signal 0 is all we know
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def last_event(run_dir: Path) -> dict[str, Any] | None:
    """The last complete event of the log, read from its end."""
    path = run_dir / "events.jsonl"
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        window = 1 << 16
        while True:
            start = max(0, size - window)
            handle.seek(start)
            lines = handle.read(size - start).split(b"\n")[:-1]  # the piece after the last \n is incomplete
            for line in reversed(lines if start == 0 else lines[1:]):
                event = _parse(line)
                if event is not None:
                    return event
            if start == 0:
                return None
            window *= 4


def process_started(pid: int) -> float | None:
    """When process `pid` started (Unix time, to the clock tick), None without procfs or once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
    except (OSError, StopIteration):
        return None
    return int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def is_job_process(status: JobStatus) -> bool:
    """`status.pid` is this run's process: alive and started when recorded (a pid and its start time name one
    process for good); for a run that recorded no start time, a runner of this very run dir.

    A pid recycled by an unrelated process fails the check, so nothing signals a stranger's process group.
    """
    if not pid_alive(status.pid):
        return False
    started = process_started(status.pid)
    if started is None:  # no procfs (macOS): liveness is all we can check
        return True
    if status.pid_started is not None:
        return abs(started - status.pid_started) <= 1.0
    try:
        cmdline = Path(f"/proc/{status.pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"engine.jobs.runner" in cmdline and status.id.encode() in cmdline


def _known_dead(status: JobStatus) -> bool:
    """The job's process is gone for sure; from another machine we cannot tell (the heartbeat will)."""
    return status.host in (None, socket.gethostname()) and not is_job_process(status)


def _known_alive(status: JobStatus) -> bool:
    return status.host == socket.gethostname() and is_job_process(status)


def _death(status: JobStatus, now: float) -> str | None:
    """Why an active job is dead, or None while it is alive."""
    if status.state == "running":
        if _known_dead(status):
            return f"job process {status.pid} died without a word (killed?)"
        if status.heartbeat is None or now - status.heartbeat > STALE_HEARTBEATS * status.heartbeat_s:
            return f"job process {status.pid} stopped its heartbeat (hung or stopped?)"
        return None
    grace = max(QUEUED_GRACE_S, STALE_HEARTBEATS * status.heartbeat_s)
    if status.heartbeat is not None and now - status.heartbeat > grace:
        return f"job never started within {grace:g} s"
    return None


def read_status(run_dir: Path) -> JobStatus:
    """A run's status; an active job whose process died or whose heartbeat went stale becomes `failed`.

    The verdict is written back (only if nobody rewrote the status meanwhile), so a dead job is never
    left `running` forever, whoever looks first.
    """
    run_dir = Path(run_dir)
    status = _read_raw_status(run_dir)
    if not status.active:
        return status
    now = time.time()
    reason = _death(status, now)
    if reason is None:
        return status
    if _read_raw_status(run_dir) != status:  # it moved on meanwhile (a job ending as we looked): judge again
        return read_status(run_dir)
    try:
        tail = last_event(run_dir)
    except OSError:
        tail = None
    failed = replace(status, state="failed", ended=now, error=reason, last_event=tail or status.last_event)
    try:
        write_json_atomic(run_dir / "status.json", failed.to_json())
    except OSError:  # a full or read-only disk: the verdict stands in this answer, and the next reader judges again
        pass
    return failed


def list_runs() -> list[JobStatus]:
    """Every run, oldest first; a damaged run folder is listed as `damaged` with the reason, never skipped."""
    root = runs_dir()
    try:
        names = sorted(entry.name for entry in os.scandir(root) if _ID_RE.match(entry.name))
    except FileNotFoundError:
        return []
    except OSError as error:
        raise RmxError(f"cannot read {root}: {error.strerror or error}") from None
    runs = [load_run(root / name)[0] for name in names if (root / name).is_dir()]
    return sorted(runs, key=lambda s: (s.created, s.id))


# --- the event log ------------------------------------------------------------------------------


def _parse(line: bytes) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


class EventWriter:
    """Appends events to events.jsonl, one write(2) per line, so a kill leaves at most one partial line.

    Before each append it makes sure the log ends with a newline: a torn last line (a killed writer, a write cut
    short by a full disk, a hand edit) is closed there and counted in `dropped`, never glued to the next event.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self.dropped = 0
        """Torn lines this writer closed: each is one event lost (readers skip it as a damaged line)."""

    def _close_torn_line(self) -> None:
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            os.write(self._fd, b"\n")
            self.dropped += 1

    def write(self, event: dict[str, Any]) -> None:
        data = json_bytes(event) + b"\n"
        self._close_torn_line()
        while data:
            data = data[os.write(self._fd, data):]

    def sync(self) -> None:
        """fsync the log: called at checkpoints, so the events that led to a checkpoint survive a power loss."""
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


class EventTail:
    """Reads the events appended to a run's log since the last read; never blocks, never parses a partial line.

    `offset` is the byte offset after the last complete line read, to resume a tail later.
    """

    def __init__(self, run_dir: Path, offset: int = 0) -> None:
        self.path = Path(run_dir) / "events.jsonl"
        self.offset = offset
        self.skipped = 0
        """Complete lines that were not a JSON object (damaged by hand): skipped, counted."""

    def _open(self):
        try:
            return self.path.open("rb")
        except FileNotFoundError:
            raise RunDamaged(f"job {self.path.parent.name} is damaged (events.jsonl: missing): "
                             f"run rmx jobs repair {self.path.parent.name}") from None
        except PermissionError:
            raise RunDamaged(f"cannot read {self.path}: permission denied") from None

    def _take(self) -> tuple[list[bytes], list[dict[str, Any]]]:
        with self._open() as handle:
            handle.seek(self.offset)
            data = handle.read(_READ_CHUNK)
            while data and b"\n" not in data:  # one line longer than a chunk
                more = handle.read(_READ_CHUNK)
                if not more:
                    break
                data += more
        end = data.rfind(b"\n")
        if end < 0:
            return [], []
        self.offset += end + 1
        lines = [line for line in data[:end].split(b"\n") if line.strip()]
        try:  # one parse for the whole block: twice as fast as a parse per line
            events = json.loads(b"[" + b",".join(lines) + b"]")
        except ValueError:
            events = None
        if events is not None and len(events) == len(lines) and all(type(e) is dict for e in events):
            return lines, events
        good = [(line, event) for line in lines if (event := _parse(line)) is not None]
        self.skipped += len(lines) - len(good)
        return [line for line, _ in good], [event for _, event in good]

    def read(self) -> list[dict[str, Any]]:
        return self._take()[1]

    def read_lines(self) -> list[bytes]:
        """Like read, but the events' lines as they are on disk (checked to be JSON objects): no re-encoding."""
        return self._take()[0]

    def poll(self, follow: bool, raw: bool = False) -> tuple[list[Any], bool]:
        """New events (lines when `raw`), and whether the tail is over: at the end without `follow`, or the job
        ended and its log is drained."""
        take = self.read_lines if raw else self.read
        events = take()
        if events:
            return events, False
        if not follow:
            return [], True
        if read_status(self.path.parent).active:
            return [], False
        return take(), True  # the job writes its last events before its final status


def tail_events(run_dir: Path, follow: bool, from_offset: int = 0) -> Iterator[dict[str, Any]]:
    """Replay a run's events, then (with `follow`) wait for new ones until the job ends."""
    tail = EventTail(run_dir, from_offset)
    while True:
        events, finished = tail.poll(follow)
        yield from events
        if finished:
            return
        if not events:
            time.sleep(POLL_S)


# --- what a job function sees -------------------------------------------------------------------


class RunContext:
    """Handed to a job function: emit events, report progress, and notice a cancel request."""

    def __init__(self, run_dir: Path, status: JobStatus, writer: EventWriter) -> None:
        self.run_dir = Path(run_dir)
        self.artifacts = self.run_dir / "artifacts"
        self.attempt = status.attempt
        self.resumed = status.attempt > 1
        """True when relaunched by resume: the job function reads its own checkpoints from `artifacts`."""
        self.step = status.step
        self.total = status.total
        self.last_event: dict[str, Any] | None = status.last_event
        self.cluster: str | None = status.cluster
        """The Ray cluster the job's tasks run on, as its `ray/…` events last said."""
        self.checkpoint: str | None = None
        """The last checkpoint this attempt wrote (a `…/checkpoint` event's value), for a disk-full message."""
        self._writer = writer
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def emit(self, event: dict[str, Any]) -> None:
        """Append one event (slash keys like `train/loss`); `t` and the current `step` are added.

        After a torn line was closed, the event says how many were lost so far (`log/dropped`).
        """
        bad = [k for k in event if k not in ("t", "step") and "/" not in str(k)]
        if bad:
            raise ValueError(f"event keys need a slash (train/loss), got {bad}")
        with self._lock:
            full = {"t": time.time(), "step": self.step, **event}
            dropped = self._writer.dropped
            self._writer.write(full)
            if self._writer.dropped != dropped:
                self._writer.write({"t": full["t"], "step": self.step, "log/dropped": self._writer.dropped})
            self.last_event = full
            if "ray/busy" in event:
                self.cluster = f"{event.get('ray/address', '?')}, {event['ray/busy']}/{event.get('ray/tasks', '?')} busy"
            marks = [v for k, v in event.items() if str(k).endswith("/checkpoint")]
            if marks:  # a checkpoint is on disk: the events that led to it must survive a power loss too
                self._writer.sync()
                self.checkpoint = Path(str(marks[-1])).name


    def set_progress(self, step: int, total: int | None = None) -> None:
        with self._lock:
            self.step = int(step)
            if total is not None:
                self.total = int(total)

    def request_stop(self) -> None:
        """Called from the SIGTERM handler: the job finishes its step and ends `cancelled`."""
        self._stop.set()

    def should_stop(self) -> bool:
        return self._stop.is_set() or (self.run_dir / "cancel").exists()

    def snapshot(self) -> tuple[int, int | None, dict[str, Any] | None]:
        with self._lock:
            return self.step, self.total, self.last_event


# --- launching, cancelling, resuming ------------------------------------------------------------


def spawn_detached(argv: list[str], log_path: Path) -> subprocess.Popen:
    """Start `argv` in its own session (it outlives us and our terminal), output appended to `log_path`."""
    env = dict(os.environ)
    # The child imports the same engine as we do, installed or run from a checkout.
    source_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH")) if p)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, close_fds=True, env=env)
    return process


def _watch(process: subprocess.Popen, run_dir: Path, attempt: int) -> None:
    """Reap the job and, if it died without writing a final state, say so at once (no need to wait for staleness)."""
    code = process.wait()
    try:
        status = _read_raw_status(run_dir)
    except (OSError, ValueError):
        return
    if not status.active or status.attempt != attempt:  # ended well, or already resumed by someone else
        return
    how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
    failed = replace(status, state="failed", ended=time.time(), error=f"job process {process.pid} {how}",
                     last_event=last_event(run_dir) or status.last_event)
    write_json_atomic(run_dir / "status.json", failed.to_json())


def launch(run_dir: Path) -> None:
    """Start `python -m engine.jobs.runner <run_dir>` detached, watched by a thread of this process."""
    attempt = _read_raw_status(run_dir).attempt
    process = spawn_detached([sys.executable, "-m", "engine.jobs.runner", str(run_dir)], run_dir / "job.log")
    threading.Thread(target=_watch, args=(process, run_dir, attempt), daemon=True,
                     name=f"rmx-job-{process.pid}").start()


def submit_job(kind: str, config: dict[str, Any], entry: str | None = None) -> JobStatus:
    """Validate, create the run dir and start the job process; returns the queued status."""
    if not isinstance(config, dict):
        raise RmxError("a job config must be a JSON object")
    known = resolve_entry(kind, entry)
    if known.validate is not None:
        known.validate(config)
    spec = JobSpec(kind=kind, entry=known.entry, config=config, rmx_version=rmx_version(), created=time.time())
    run_dir = create_run(spec)
    launch(run_dir)
    return _read_raw_status(run_dir)


def cancel_job(job_id: str) -> JobStatus:
    """Ask a job to stop: a `cancel` file (seen by should_stop) and SIGTERM to its process group."""
    run_dir = find_run(job_id)
    status, _ = load_run(run_dir)
    refuse_damaged(status)
    if not status.active:
        raise JobConflict(f"job {job_id} is already {status.state}")
    write_json_atomic(run_dir / "cancel", {"requested": time.time()})
    # Only a process group that is this run's job (same pid and start time, the runner on this run dir) is
    # signalled; on another machine, or for a recycled pid, the cancel file alone does it.
    if _known_alive(status):
        try:
            os.killpg(status.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return read_status(run_dir)


def resume_job(job_id: str) -> JobStatus:
    """Relaunch a failed, cancelled or diverged job in the same run dir (attempt + 1, `run.resumed`)."""
    run_dir = find_run(job_id)
    status, _ = load_run(run_dir)
    refuse_damaged(status)
    if status.active:
        raise JobConflict(f"job {job_id} is still {status.state}")
    if status.state == "done":
        raise JobConflict(f"job {job_id} is already done")
    deadline = time.monotonic() + EXIT_GRACE_S
    while _known_alive(status) and time.monotonic() < deadline:  # it wrote its final state and is exiting
        time.sleep(POLL_S)
    if _known_alive(status):
        raise JobConflict(f"job {job_id}'s process {status.pid} is still alive: cancel it, or kill it, first")
    (run_dir / "cancel").unlink(missing_ok=True)
    now = time.time()
    queued = replace(status, state="queued", pid=None, pid_started=None, host=socket.gethostname(),
                     attempt=status.attempt + 1, started=None, ended=None, heartbeat=now, heartbeat_s=heartbeat_interval(), error=None)
    write_json_atomic(run_dir / "status.json", queued.to_json())
    launch(run_dir)
    return _read_raw_status(run_dir)


@runtime_checkable
class JobsClient(Protocol):
    """The job operations a UI may ask for, locally (LocalJobs) or through the daemon (RemoteClient)."""

    def list_jobs(self) -> list[JobStatus]: ...

    def submit_job(self, kind: str, config: dict[str, Any], entry: str | None = None) -> JobStatus: ...

    def job(self, job_id: str) -> JobView: ...

    def job_events(self, job_id: str, follow: bool = False, since: int = 0) -> Iterator[dict[str, Any]]: ...

    def cancel_job(self, job_id: str) -> JobStatus: ...

    def resume_job(self, job_id: str) -> JobStatus: ...


class LocalJobs:
    """JobsClient over this machine's run directories: no daemon needed (the run dir is the truth)."""

    def list_jobs(self) -> list[JobStatus]:
        return list_runs()

    def submit_job(self, kind: str, config: dict[str, Any], entry: str | None = None) -> JobStatus:
        return submit_job(kind, config, entry)

    def job(self, job_id: str) -> JobView:
        run_dir = find_run(job_id)
        return JobView(*load_run(run_dir), outputs=run_outputs(run_dir))

    def job_events(self, job_id: str, follow: bool = False, since: int = 0) -> Iterator[dict[str, Any]]:
        """Events in order; `since` skips that many (what a reconnecting follower has already seen)."""
        run_dir = find_run(job_id)
        for index, event in enumerate(tail_events(run_dir, follow)):
            if index >= since:
                yield event

    def cancel_job(self, job_id: str) -> JobStatus:
        return cancel_job(job_id)

    def resume_job(self, job_id: str) -> JobStatus:
        return resume_job(job_id)
