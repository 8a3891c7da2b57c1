"""Where a recipe's independent tasks run: spawned processes over this machine's devices, or a Ray cluster.

A task is a module-level function called as `fn(device=, lane=, emit=, should_stop=, **kwargs)`: `lane` names
the worker slot it runs in (a local lane's index; on Ray, the task's own index). It writes into its own
run sub-folder and resumes from it, so that a retried task (its worker died) ends as an uninterrupted one.
Both pools drive the same loop: tasks report events, a result or an error through one message queue, and
the driver re-emits every event with the task's label, stops them all on the first error or on a stop.
"""

from __future__ import annotations

import queue as queues
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from engine.core.errors import RmxError, Stopped

RAY_INSTALL = "pip install 'rmx[ray]'"
"""What a user without Ray is told to run."""
CONNECT_TIMEOUT_S = 10.0
"""How long an unreachable cluster address is waited for before the run is refused."""
POLL_S = 0.2
"""How often the driver looks at its tasks while no message arrives."""


@dataclass(frozen=True)
class Task:
    """One independent piece of a recipe: a τ of a sweep, a shard of an eval."""

    label: str
    """Names the task in events and errors (`τ 1.4`, `math500[0:25]`)."""
    fn: Callable[..., Any]
    """A module-level function, called as fn(device=, lane=, emit=, should_stop=, **kwargs) in the worker."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Its arguments: plain, picklable values."""


class Pool(Protocol):
    def run(self, tasks: list[Task], emit: Callable[[dict], None],
            should_stop: Callable[[], bool] | None) -> list[Any]:
        """Run every task; their results in task order. Raises RmxError on a task's error or a stop."""
        ...


@dataclass(frozen=True)
class RaySpec:
    """Which Ray cluster runs the tasks, and what each asks of it."""

    address: str = "auto"
    """`auto` (the cluster this node belongs to: `ray start --head` first), `local` (a private one-machine
    cluster started for this run), or the head's `host:port` / `ray://host:port`."""
    max_retries: int = 2
    """How often a task whose worker died (node lost, OOM, `ray kill`) is retried from its last checkpoint."""
    gpus_per_task: float | None = None
    """GPUs each task asks for; None: 1 when the cluster has GPUs, else 0 (and `cpus_per_task` CPUs)."""
    cpus_per_task: float = 1.0
    """CPUs each task asks for."""
    shards: int | None = None
    """How many shards a problem list is split into; None: as many as the cluster can run at once."""

    def __post_init__(self) -> None:
        address = str(self.address).strip()
        if not address:
            raise RmxError("--ray needs an address: auto, local, or the head's host:port")
        object.__setattr__(self, "address", address)
        if address not in ("auto", "local"):
            host_port(address)  # a malformed address is refused before anything starts
        if not isinstance(self.max_retries, int) or not 0 <= self.max_retries <= 100:
            raise RmxError(f"--ray-retries must be an integer in 0..100, got {self.max_retries}")
        if self.gpus_per_task is not None and not 0 <= self.gpus_per_task <= 64:
            raise RmxError(f"GPUs per task must be in 0..64, got {self.gpus_per_task}")
        if not 0 < self.cpus_per_task <= 1024:
            raise RmxError(f"CPUs per task must be in (0, 1024], got {self.cpus_per_task}")
        if self.shards is not None and (not isinstance(self.shards, int) or not 1 <= self.shards <= 100_000):
            raise RmxError(f"--ray-shards must be a positive integer, got {self.shards}")


def host_port(address: str) -> tuple[str, int]:
    """The host and port of `host:port` or `ray://host:port`; a one-line refusal for anything else."""
    bare = address.removeprefix("ray://")
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RmxError(f"--ray '{address}' is not an address: give auto, local, or host:port")
    return host.strip("[]"), int(port)


def import_ray():
    try:
        import ray
    except ImportError:
        raise RmxError(f"--ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


def check_ray_installed() -> None:
    """Refuse --ray without the extra before a run folder is made."""
    import_ray()


def check_reachable(spec: "RaySpec") -> None:
    """Refuse, before a run folder or a job exists, Ray missing or a named cluster that does not answer."""
    import_ray()
    if spec.address not in ("auto", "local"):
        _reachable(spec.address)


# --- this machine's devices ------------------------------------------------------------------------------


@dataclass
class LocalLanes:
    """One spawned process per device, each working through its share of the tasks in order."""

    devices: tuple[str, ...]

    def run(self, tasks: list[Task], emit: Callable[[dict], None],
            should_stop: Callable[[], bool] | None) -> list[Any]:
        import multiprocessing

        import torch

        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked; a lane must not share RNG state
        messages, stop = context.Queue(), context.Event()
        shares = [list(range(len(tasks)))[index::len(self.devices)] for index in range(len(self.devices))]
        threads = max(1, torch.get_num_threads() // len(self.devices))
        processes = [context.Process(target=_lane, args=(device, str(lane), [(i, tasks[i]) for i in share],
                                                          threads, messages, stop))
                     for lane, (device, share) in enumerate(zip(self.devices, shares)) if share]
        for process in processes:
            process.start()

        def alive() -> bool:
            return any(process.is_alive() for process in processes)

        try:
            results = _drive(tasks, messages.get, alive, emit, should_stop, stop.set)
        finally:
            stop.set()
            for process in processes:
                process.join()
        crashed = [p for p in processes if p.exitcode not in (0, None)]
        if crashed and len(results) < len(tasks):
            raise RmxError(f"a lane died (exit code {crashed[0].exitcode})")
        return [results[index] for index in range(len(tasks))]


def _lane(device: str, lane: str, share: list[tuple[int, Task]], threads: int, messages, stop) -> None:
    import torch

    torch.set_num_threads(threads)
    for index, task in share:
        if stop.is_set():
            return
        if not _attempt(index, task, device, lane, messages.put, stop.is_set):
            return


def _attempt(index: int, task: Task, device: str, lane: str, put: Callable[[tuple], None],
             should_stop: Callable[[], bool] | None) -> bool:
    """Run one task, reporting through `put`; False when it failed (the error is reported)."""
    try:
        result = task.fn(device=device, lane=lane, emit=lambda event: put(("event", index, event)),
                         should_stop=should_stop, **task.kwargs)
    except RmxError as error:
        put(("error", index, f"{task.label} on {device}: {error}"))
        return False
    except Exception as error:  # the driver reports it as one line; the other tasks are stopped
        put(("error", index, f"{task.label} on {device}: {type(error).__name__}: {error}"))
        return False
    put(("result", index, result))
    return True


def _drive(tasks: list[Task], get: Callable[..., tuple], running: Callable[[], bool],
           emit: Callable[[dict], None], should_stop: Callable[[], bool] | None,
           stop_all: Callable[[], None]) -> dict[int, Any]:
    """The driver's loop, shared by both pools: events out, results in, the first error stops everything."""
    results: dict[int, Any] = {}
    while len(results) < len(tasks):
        if should_stop is not None and should_stop():
            stop_all()
            raise Stopped("stopped before every task finished: resume the run to go on")
        try:
            kind, index, payload = get(timeout=POLL_S)
        except queues.Empty:
            if not running():
                break
            continue
        if kind == "event":
            emit({**payload, "lane/task": tasks[index].label})
        elif kind == "result":
            results[index] = payload
        else:
            stop_all()
            raise RmxError(payload)
    return results


# --- a Ray cluster -----------------------------------------------------------------------------------------


class RayLanes:
    """Each task a Ray task on the cluster: retried from its checkpoint when its worker dies."""

    def __init__(self, spec: RaySpec) -> None:
        self.spec = spec
        self.ray = connect(spec)
        resources = self.ray.cluster_resources()
        self.address = describe(self.ray)
        gpus = resources.get("GPU", 0)
        self.gpus_per_task = self.spec.gpus_per_task if self.spec.gpus_per_task is not None else (1 if gpus else 0)
        largest = max((node["Resources"].get("GPU", 0) for node in self.ray.nodes() if node.get("Alive")),
                      default=0)
        if self.gpus_per_task > largest:
            raise RmxError(f"each task asks for {self.gpus_per_task:g} GPU(s) but the largest node of the Ray "
                           f"cluster at {self.address} has {largest:g}")
        if self.gpus_per_task:
            self.slots = max(1, int(gpus // self.gpus_per_task))
        else:
            self.slots = max(1, int(resources.get("CPU", 1) // self.spec.cpus_per_task))

    def shard_count(self) -> int:
        return self.spec.shards or self.slots

    def run(self, tasks: list[Task], emit: Callable[[dict], None],
            should_stop: Callable[[], bool] | None) -> list[Any]:
        from ray.util.queue import Queue

        ray = self.ray
        messages = Queue()
        remote = ray.remote(_ray_task).options(num_gpus=self.gpus_per_task, num_cpus=self.spec.cpus_per_task,
                                              max_retries=self.spec.max_retries, retry_exceptions=False)
        device = "cuda" if self.gpus_per_task else "cpu"
        refs = {remote.remote(index, task, device, messages): index for index, task in enumerate(tasks)}
        pending = list(refs)
        busy = -1

        def running() -> bool:
            nonlocal pending, busy
            if pending:
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
            if len(pending) != busy:
                busy = len(pending)
                emit({"ray/address": self.address, "ray/busy": busy, "ray/tasks": len(tasks)})
            return bool(pending)

        def stop_all() -> None:
            for ref in refs:
                ray.cancel(ref, force=True)

        def get(timeout: float) -> tuple:
            try:
                return messages.get(timeout=timeout)
            except Exception:  # ray.util.queue.Empty is not queue.Empty
                raise queues.Empty from None

        try:
            results = _drive(tasks, get, running, emit, should_stop, stop_all)
            if len(results) < len(tasks):
                # A task's worker died more often than retries allow: its error is on its ref.
                for ref, index in refs.items():
                    if index not in results:
                        try:
                            kind, _, payload = ray.get(ref)
                        except Exception as error:
                            raise RmxError(f"{tasks[index].label}: its worker died {self.spec.max_retries + 1} "
                                           f"time(s) ({type(error).__name__}); resume the run to go on") from None
                        if kind == "error":
                            raise RmxError(payload)
                        results[index] = payload
            return [results[index] for index in range(len(tasks))]
        finally:
            messages.shutdown()


def _ray_task(index: int, task: Task, device: str, messages) -> tuple:
    """The task in a Ray worker; returns its outcome message too, which the driver reads when the queue lags."""
    import os

    messages.put(("event", index, {"ray/worker_pid": os.getpid(), "ray/node": _node_ip()}))
    outcome: list[tuple] = []

    def put(message: tuple) -> None:
        if message[0] != "event":
            outcome.append(message)
        messages.put(message)

    _attempt(index, task, device, str(index), put, None)
    return outcome[0]


def _node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


def connect(spec: RaySpec):
    """The `ray` module, connected to the cluster `spec` names; one line, within seconds, when it can't be."""
    ray = import_ray()
    import os

    env = {key: value for key, value in os.environ.items()
           if key.startswith(("RMX_", "HF_")) or key in ("PYTHONPATH", "TRANSFORMERS_OFFLINE")}
    options: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False, "namespace": "rmx",
                               "runtime_env": {"env_vars": env}, "configure_logging": False}
    if spec.address == "local":
        options["include_dashboard"] = False
    else:
        if spec.address != "auto":
            _reachable(spec.address)
        options["address"] = spec.address
    if ray.is_initialized():
        return ray
    try:
        ray.init(**options)
    except ConnectionError as error:
        raise RmxError(f"cannot reach the Ray cluster at {spec.address}: {str(error).splitlines()[0]} "
                       "(start one with `ray start --head`, or pass --ray local)") from None
    except Exception as error:
        raise RmxError(f"cannot start Ray at {spec.address}: {type(error).__name__}: "
                       f"{str(error).splitlines()[0] if str(error) else ''}") from None
    return ray


def _reachable(address: str) -> None:
    """Refuse, within CONNECT_TIMEOUT_S, an address where no Ray cluster answers: ray.init alone retries for a
    minute or more. A cluster that answers, even to refuse a missing token, is left to ray.init."""
    host, port = host_port(address)
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        raise RmxError(f"cannot reach the Ray cluster at {address}: {error.strerror or error} "
                       f"(after {time.monotonic() - started:.1f} s)") from None
    try:
        from ray._raylet import GcsClient  # private, but the one way to ask a cluster's GCS with a deadline
    except ImportError:
        return
    left = max(1.0, CONNECT_TIMEOUT_S - (time.monotonic() - started))
    try:
        with _native_stderr_silenced():  # the GCS client logs each failed try on fd 2
            GcsClient(address=f"{host}:{port}").internal_kv_get(b"session_name", namespace=None, timeout=left)
    except Exception as error:
        if "Authentication" in type(error).__name__ or "AuthToken" in str(error):
            return
        raise RmxError(f"cannot reach the Ray cluster at {address}: no Ray cluster answers there "
                       f"(after {time.monotonic() - started:.1f} s)") from None


class _native_stderr_silenced:
    """fd 2 pointed at /dev/null for a native call's duration, then restored."""

    def __enter__(self) -> None:
        import os

        self._saved = os.dup(2)
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)

    def __exit__(self, *exc: object) -> None:
        import os

        os.dup2(self._saved, 2)
        os.close(self._saved)


def describe(ray) -> str:
    """The cluster's address as a user would pass it back."""
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:
        return "local"


def pool_for(ray_spec: RaySpec | None, devices: tuple[str, ...]) -> Pool:
    """Ray when asked for, else one lane per local device."""
    return RayLanes(ray_spec) if ray_spec is not None else LocalLanes(devices)
