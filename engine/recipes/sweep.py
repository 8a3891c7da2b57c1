"""The τ sweep: one ReasonMaxxer adapter per τ, each scored on a holdout, the best kept; τ runs spread over lanes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from engine.core.config import ModelSpec
from engine.core.errors import RmxError, Stopped
from engine.core.io import atomic_write_json
from engine.recipes.evaluate import EvalSpec, evaluate, load_result
from engine.recipes.lanes import LocalLanes, Pool, RayLanes, RaySpec, Task
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
    """Longest holdout completion."""
    template: str | None = "auto"
    """Prompt template of the holdout: qwen, qwen3, mistral, r1-distill, chat, raw, or auto."""
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


def best_row(rows: list[SweepRow]) -> SweepRow | None:
    """The τ with the highest holdout score (ties keep the first τ given); None when none finished."""
    return max((r for r in rows if r.score is not None), key=lambda r: r.score, default=None)


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


def _tau_task(*, device: str, lane: str, emit: Callable[[dict], None], should_stop: Callable[[], bool] | None,
              base: ModelSpec, spec: TrainSpec, sweep_spec: SweepSpec, tau: str, out: str,
              resume: bool) -> dict[str, Any]:
    """One τ as a lane task, trained on `device`: the τ values of one lane share its base pass."""
    folder = Path(out)
    row = _run_tau(replace(base, device=device), spec, sweep_spec, tau, folder, folder / f"base_pass-{lane}",
                   resume, emit, should_stop)
    return asdict(row)


def _on_lanes(pool: Pool, base: ModelSpec, spec: TrainSpec, sweep_spec: SweepSpec, out: Path, resume: bool,
              emit: Callable[[dict], None],
              should_stop: Callable[[], bool] | None) -> list[SweepRow]:
    """Every τ as a task of `pool`; rows come back in τ order."""
    tasks = [Task(f"τ {tau}", _tau_task, {
        "base": base, "spec": spec, "sweep_spec": sweep_spec, "tau": tau, "out": str(out), "resume": resume})
        for tau in sweep_spec.taus]
    try:
        rows = pool.run(tasks, emit, should_stop)
    except Stopped:
        raise Stopped("sweep stopped before every τ was trained") from None
    return [SweepRow(**row) for row in rows]


def sweep(base: ModelSpec, spec: TrainSpec, sweep_spec: SweepSpec, out: str | Path, *, resume: bool = False,
          emit: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
          ray: RaySpec | None = None) -> SweepResult:
    """Train one adapter per τ and keep the one with the best holdout score.

    On one device the runs go one after another and share one base pass; with several devices each
    gets a process and a share of the τ values; with `ray`, each τ is a task on the cluster.
    """
    emit = emit or (lambda event: None)
    out = Path(out)
    devices = sweep_devices(base, sweep_spec)
    if ray is not None:
        # Resumable tasks: a retried τ (its worker died) goes on from its last checkpoint.
        rows = _on_lanes(RayLanes(ray), base, spec, sweep_spec, out, True, emit, should_stop)
    elif len(devices) > 1 and len(sweep_spec.taus) > 1:
        emit({"sweep/devices": ",".join(devices)})
        rows = _on_lanes(LocalLanes(devices), base, spec, sweep_spec, out, resume, emit, should_stop)
    else:
        rows = []
        for tau in sweep_spec.taus:
            if should_stop is not None and should_stop():
                raise Stopped("sweep stopped before every τ was trained")
            rows.append(_run_tau(replace(base, device=devices[0]), spec, sweep_spec, tau, out, out / "base_pass",
                                 resume, emit, should_stop))
    best = best_row(rows)
    result = SweepResult(rows, best.tau if best else None, best.adapter if best else None,
                         f"{sweep_spec.holdout_dataset}[{sweep_spec.holdout_offset}:"
                         f"{sweep_spec.holdout_offset + sweep_spec.holdout}]")
    atomic_write_json(out / SWEEP_FILE, result.to_json())
    return result
