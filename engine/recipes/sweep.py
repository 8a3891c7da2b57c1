"""The τ sweep: one ReasonMaxxer adapter per τ, each scored on a holdout, the best kept; one lane per device."""

from __future__ import annotations

import queue as queues
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from engine.core.config import ModelSpec
from engine.core.errors import RmxError
from engine.core.io import atomic_write_json
from engine.recipes.evaluate import EvalSpec, evaluate, load_result
from engine.recipes.train import TrainSpec, train

SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class SweepSpec:
    """The τ sweep: one adapter per τ, each scored on a holdout, the best one kept (paper §6.1)."""

    taus: tuple[str, ...] = ("1.2", "1.4", "1.6", "1.8")
    """Thresholds to try, in nats or as quantiles (q0.97)."""
    holdout: int = 50
    """Holdout problems each adapter is scored on (greedy pass@1)."""
    holdout_dataset: str = "math_train_pool_500"
    """Where the holdout comes from."""
    holdout_offset: int = 450
    """First holdout problem: rows 450+ of math_train_pool_500 are disjoint from math_train_pool_150."""
    max_new_tokens: int = 4096
    template: str | None = "auto"
    devices: tuple[str, ...] = ()
    """Devices to spread the runs over, one run per device at a time (cuda:0,cuda:1). Empty: every visible
    GPU when the model's device is auto or cuda and there are several, else the model's own device."""

    def __post_init__(self) -> None:
        from engine.core.config import Tau

        taus = self.taus.split(",") if isinstance(self.taus, str) else list(self.taus)
        taus = tuple(str(t).strip() for t in taus if str(t).strip())
        if not taus:
            raise RmxError("--taus is empty: give thresholds such as 1.2,1.4,1.6,1.8")
        for tau in taus:
            Tau.parse(tau)
        if len(set(taus)) != len(taus):
            raise RmxError(f"--taus names a τ twice: {','.join(taus)}")
        object.__setattr__(self, "taus", taus)
        if not isinstance(self.holdout, int) or self.holdout < 1:
            raise RmxError(f"--holdout must be a positive integer, got {self.holdout}")
        if not isinstance(self.holdout_offset, int) or self.holdout_offset < 0:
            raise RmxError(f"--holdout-offset must be ≥ 0, got {self.holdout_offset}")
        devices = self.devices.split(",") if isinstance(self.devices, str) else list(self.devices)
        devices = tuple(str(d).strip() for d in devices if str(d).strip())
        for device in devices:
            ModelSpec("demo", device=device)  # the same check and message as --device
        object.__setattr__(self, "devices", devices)

    def eval_spec(self) -> EvalSpec:
        return EvalSpec(benchmarks=(self.holdout_dataset,), limit=self.holdout, offset=self.holdout_offset,
                        max_new_tokens=self.max_new_tokens, template=self.template, avg_benchmarks=())


@dataclass(frozen=True)
class SweepRow:
    tau: str
    tau_nats: float
    decision_frac: float
    state: str
    """The training run's end state: done, diverged or stopped."""
    adapter: str | None
    score: float | None
    """Holdout pass@1 (math-verify); None when training did not finish."""


@dataclass(frozen=True)
class SweepResult:
    rows: list[SweepRow]
    best_tau: str | None
    best_adapter: str | None
    holdout: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sweep_devices(base: ModelSpec, sweep_spec: SweepSpec) -> tuple[str, ...]:
    """Where the runs go: the devices asked for, else every GPU when several are visible, else the model's device."""
    if sweep_spec.devices:
        return sweep_spec.devices
    if base.device in ("auto", "cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count > 1:
            return tuple(f"cuda:{index}" for index in range(count))
    return (base.device,)


def _run_tau(base: ModelSpec, spec: TrainSpec, sweep_spec: SweepSpec, tau: str, out: Path, base_pass: Path,
             resume: bool, emit: Callable[[dict], None], should_stop: Callable[[], bool] | None) -> SweepRow:
    """Train at one τ into out/tau-<τ>/ and score the adapter on the holdout."""
    folder = out / f"tau-{tau}"
    emit({"sweep/tau": tau})
    # Every training event names its τ: lanes interleave, and the TUI's grid files each loss under its τ.
    result = train(base, replace(spec, tau=tau, tau_correct=None, tau_wrong=None), folder, resume=resume,
                   emit=lambda event: emit({**event, "sweep/tau": tau}), should_stop=should_stop,
                   base_pass=base_pass)
    score = None
    if result.state == "done":
        scored = folder / "holdout"
        if resume and (scored / "eval.json").exists():
            evaluation = load_result(scored)
        else:
            evaluation = evaluate(replace(base, adapter=result.adapter), sweep_spec.eval_spec(), scored,
                                  resume=resume, should_stop=should_stop)
        score = evaluation.scores[0].score
    # pass@1 by name: the TUI's τ grid files it under its "pass@1 (held out)" column.
    emit({"sweep/tau": tau, "sweep/pass@1": score, "sweep/decision_frac": result.decision_frac})
    return SweepRow(tau, result.tau_correct, result.decision_frac, result.state, result.adapter, score)


def _lane(base: ModelSpec, spec: TrainSpec, sweep_spec: SweepSpec, taus: tuple[str, ...], out: str, base_pass: str,
          resume: bool, threads: int, messages, stop) -> None:
    """One device's share of the sweep, in its own process: events and rows go back through `messages`."""
    import torch

    torch.set_num_threads(threads)
    for tau in taus:
        if stop.is_set():
            return
        try:
            row = _run_tau(base, spec, sweep_spec, tau, Path(out), Path(base_pass), resume,
                           lambda event: messages.put(("event", event)), stop.is_set)
        except RmxError as error:
            messages.put(("error", f"τ {tau} on {base.device}: {error}"))
            return
        except Exception as error:  # the parent reports it as one line; the lane's other τ are not run
            messages.put(("error", f"τ {tau} on {base.device}: {type(error).__name__}: {error}"))
            return
        messages.put(("row", asdict(row)))


def _parallel(base: ModelSpec, spec: TrainSpec, sweep_spec: SweepSpec, devices: tuple[str, ...], out: Path,
              resume: bool, emit: Callable[[dict], None], should_stop: Callable[[], bool] | None) -> list[SweepRow]:
    """One process per device, each working through its share of the τ values; rows come back in τ order."""
    import multiprocessing

    import torch

    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked, and a lane must not share RNG state
    messages, stop = context.Queue(), context.Event()
    lanes = [sweep_spec.taus[index::len(devices)] for index in range(len(devices))]
    threads = max(1, torch.get_num_threads() // len(devices))
    processes = [
        context.Process(target=_lane, args=(replace(base, device=device), spec, sweep_spec, lane, str(out),
                                            str(out / f"base_pass-{index}"), resume, threads, messages, stop))
        for index, (device, lane) in enumerate(zip(devices, lanes)) if lane
    ]
    for process in processes:
        process.start()
    rows: dict[str, SweepRow] = {}
    errors: list[str] = []
    try:
        while True:
            if should_stop is not None and should_stop():
                stop.set()
            try:
                kind, payload = messages.get(timeout=0.2)
            except queues.Empty:
                if not any(process.is_alive() for process in processes):
                    break
                continue
            if kind == "event":
                emit(payload)
            elif kind == "row":
                rows[payload["tau"]] = SweepRow(**payload)
            else:
                errors.append(payload)
                stop.set()
    finally:
        stop.set()
        for process in processes:
            process.join()
    crashed = [p for p in processes if p.exitcode not in (0, None)]
    if errors or crashed:
        raise RmxError(errors[0] if errors else f"a sweep lane died (exit code {crashed[0].exitcode})")
    if len(rows) < len(sweep_spec.taus):
        raise RmxError("sweep stopped before every τ was trained")
    return [rows[tau] for tau in sweep_spec.taus]


def sweep(base: ModelSpec, spec: TrainSpec, sweep_spec: SweepSpec, out: str | Path, *, resume: bool = False,
          emit: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None
          ) -> SweepResult:
    """Train one adapter per τ and keep the one with the best holdout score.

    On one device the runs go one after another and share one base pass; with several devices each
    gets a process and a share of the τ values.
    """
    emit = emit or (lambda event: None)
    out = Path(out)
    devices = sweep_devices(base, sweep_spec)
    if len(devices) > 1 and len(sweep_spec.taus) > 1:
        emit({"sweep/devices": ",".join(devices)})
        rows = _parallel(base, spec, sweep_spec, devices, out, resume, emit, should_stop)
    else:
        rows = []
        for tau in sweep_spec.taus:
            if should_stop is not None and should_stop():
                raise RmxError("sweep stopped before every τ was trained")
            rows.append(_run_tau(replace(base, device=devices[0]), spec, sweep_spec, tau, out, out / "base_pass",
                                 resume, emit, should_stop))
    scored_rows = [r for r in rows if r.score is not None]
    best = max(scored_rows, key=lambda r: r.score, default=None)  # ties keep the first τ given
    result = SweepResult(rows, best.tau if best else None, best.adapter if best else None,
                         f"{sweep_spec.holdout_dataset}[{sweep_spec.holdout_offset}:"
                         f"{sweep_spec.holdout_offset + sweep_spec.holdout}]")
    atomic_write_json(out / SWEEP_FILE, result.to_json())
    return result
