"""The one training loop: optimizer, schedule, checkpoints, restore, stop and the divergence alarm.

`train` and `distill` each supply a backward pass over one window of sequences; everything around it (the
AdamW step, the warmup-then-linear schedule, atomic checkpoints with the RNG state, bit-identical resume,
stopping between steps, the divergence alarm, the final adapter) lives here once.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from engine.core.diskfull import check_space, disk_full, is_disk_full, tree_bytes
from engine.core.errors import RmxError
from engine.core.io import atomic_write_json, commit_folder

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"
ALARM_WARMUP = 10
"""Steps of loss history before the relative divergence test applies."""
ALARM_WINDOW = 50
"""Steps whose median |loss| is the divergence test's yardstick."""
RESUME_HINT = "free space and rerun with --resume"


@dataclass(frozen=True)
class WindowLoss:
    """What a recipe's backward pass over one window reports: the window's loss and the tokens it trained on.

    Recipes subclass it with their own terms (train: the decision and anchor losses; distill: the KL)."""

    loss: float
    tokens: int = 0


W = TypeVar("W", bound=WindowLoss)


@dataclass(frozen=True)
class StepMetrics(Generic[W]):
    """One optimizer step, as the loop saw it: the recipe turns it into its `prefix/…` events."""

    step: int
    total: int
    lr: float
    """The learning rate this step used (read before the scheduler moved it)."""
    grad_norm: float
    seconds: float
    window: W

    @property
    def loss(self) -> float:
        return self.window.loss

    @property
    def tok_s(self) -> float | None:
        return self.window.tokens / self.seconds if self.seconds > 0 else None


@dataclass(frozen=True)
class LoopResult:
    """How a run of the loop ended."""

    state: str
    """done, stopped (asked to stop between steps) or diverged (the alarm fired; no step was taken)."""
    step: int
    total: int
    reason: str | None
    """Why the alarm fired, when it did."""
    tokens: int
    seconds: float
    history: list[float]
    """Loss per step, the restored steps included."""


def divergence(loss: float, grad_norm: float, history: Sequence[float], alarm_abs: float = 0.0,
               alarm_ratio: float = 0.0) -> str | None:
    """Why this step counts as diverged, or None: a non-finite loss or gradient, |loss| over `alarm_abs`, or
    |loss| over `alarm_ratio` × the running median (0 turns a test off)."""
    if not math.isfinite(loss):
        return f"loss is {loss}"
    if not math.isfinite(grad_norm):
        return f"gradient norm is {grad_norm}"
    if alarm_abs and abs(loss) > alarm_abs:
        return f"|loss| {abs(loss):.3g} > --alarm-abs {alarm_abs:g}"
    if alarm_ratio and len(history) >= ALARM_WARMUP:
        typical = max(statistics.median(abs(h) for h in history[-ALARM_WINDOW:]), 1.0)
        if abs(loss) > alarm_ratio * typical:
            return f"|loss| {abs(loss):.3g} > {alarm_ratio:g} × running median {typical:.3g}"
    return None


def schedule(total: int, warmup: int) -> Callable[[int], float]:
    """Linear warmup from 0 over `warmup` steps, then linear decay to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


class Loop(Generic[W]):
    """AdamW over a PEFT model's trainable parameters, stepped once per window of sequence indices."""

    def __init__(self, model: Any, windows: list[list[int]], out: Path, *, lr: float, weight_decay: float,
                 warmup_ratio: float, seed: int, fingerprint: str, checkpoint_every: int | None, prefix: str,
                 emit: Callable[[dict], None], alarm_abs: float = 0.0, alarm_ratio: float = 0.0) -> None:
        import torch

        self.model, self.windows, self.out = model, windows, out
        self.total = len(windows)
        self.seed, self.fingerprint, self.prefix, self.emit = seed, fingerprint, prefix, emit
        self.alarm_abs, self.alarm_ratio = alarm_abs, alarm_ratio
        self.every = checkpoint_every or max(1, round(0.15 * self.total))
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, betas=(0.9, 0.999), eps=1e-8,
                                           weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, schedule(self.total, int(round(warmup_ratio * self.total))))
        self.step, self.history = 0, []

    def restore(self, checkpoint: Path | None) -> int:
        """Clear checkpoints a kill cut short, seed every RNG, then restore `checkpoint` if one is given.

        Returns the step to go on from (0 for a fresh run)."""
        (self.out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        for stale in (self.out / CHECKPOINTS).glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # a checkpoint a kill interrupted: never part of the run
        seed_all(self.seed)
        if checkpoint is not None:
            self.step, self.history, self.windows = load_checkpoint(
                self.model, self.optimizer, self.scheduler, checkpoint, self.fingerprint)
            self.emit({f"{self.prefix}/resumed_from": self.step})
        return self.step

    def checkpoint(self) -> Path:
        state = {"step": self.step, "total": self.total, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "windows": self.windows,
                 "history": self.history, "fingerprint": self.fingerprint}
        folder = save_checkpoint(self.model, state, self.out, self.step,
                                 warn=lambda text: self.emit({f"{self.prefix}/warning": text}))
        self.emit({f"{self.prefix}/checkpoint": str(folder), "step": self.step})
        return folder

    def run(self, backward: Callable[[list[int]], W], on_step: Callable[[StepMetrics[W]], None],
            should_stop: Callable[[], bool] | None = None,
            progress: Callable[[int, int], None] | None = None) -> LoopResult:
        """Step through the remaining windows: `backward(window)` accumulates gradients and reports the window's
        loss, the alarm checks it before the optimizer steps, `on_step` hears each step, and a checkpoint is
        written every `checkpoint_every` steps, at the end and when `should_stop` says so."""
        import torch

        started, tokens = time.perf_counter(), 0
        state, reason = "done", None
        while self.step < self.total:
            t0 = time.perf_counter()
            window = backward(self.windows[self.step])
            grads = [p.grad.norm() for p in self.params if p.grad is not None]
            grad_norm = float(torch.linalg.vector_norm(torch.stack(grads))) if grads else 0.0
            reason = divergence(window.loss, grad_norm, self.history, self.alarm_abs, self.alarm_ratio)
            if reason is not None:
                state = "diverged"
                self.emit({f"{self.prefix}/alarm": reason, "step": self.step + 1,
                           f"{self.prefix}/loss": window.loss if math.isfinite(window.loss) else None})
                break
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.history.append(window.loss)
            tokens += window.tokens
            on_step(StepMetrics(self.step, self.total, lr, grad_norm, time.perf_counter() - t0, window))
            if progress is not None:
                progress(self.step, self.total)
            stopping = should_stop is not None and should_stop()
            if self.step % self.every == 0 or self.step == self.total or stopping:
                self.checkpoint()
            if stopping and self.step < self.total:
                state = "stopped"
                break
        return LoopResult(state, self.step, self.total, reason, tokens, time.perf_counter() - started,
                          list(self.history))

    def save_adapter(self, final: Path) -> Path:
        """Write the trained adapter to `final` atomically; a full disk says which checkpoint is kept."""
        try:
            commit_folder(lambda tmp: write_adapter(self.model, tmp), final)
        except Exception as error:
            if is_disk_full(error):
                last = latest_checkpoint(self.out)
                raise disk_full(final, tree_bytes(last) if last else None, last.name if last else None,
                                RESUME_HINT) from None
            raise
        return final


# --- checkpoints -------------------------------------------------------------------------------------------


def _fsync_tree(folder: Path) -> None:
    for file in folder.iterdir():
        with file.open("rb") as handle:
            os.fsync(handle.fileno())


def write_adapter(model: Any, folder: Path) -> None:
    """Save a PEFT adapter folder (safetensors) and fsync it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(str(folder), safe_serialization=True)
    _fsync_tree(folder)


def _write_trainer_state(state: dict, path: Path) -> None:
    import torch

    torch.save(state, path)


def _write_checkpoint(model: Any, state: dict, folder: Path) -> None:
    """Write a PEFT adapter folder plus the trainer state into `folder` (a fresh temporary directory)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(str(folder), safe_serialization=True)
    _write_trainer_state(state, folder / STATE_FILE)
    _fsync_tree(folder)


def save_checkpoint(model: Any, state: dict, out: Path, at: int, warn: Callable[[str], None] | None = None) -> Path:
    """Write checkpoint `at` (adapter + trainer state) atomically under out/checkpoints/; a failed write
    leaves the previous one intact and says so.

    Free space is checked first against the previous checkpoint's size: a write that cannot fit is refused before
    it starts, and `warn` hears when the one after will not fit.
    """
    folder = out / CHECKPOINTS / f"step-{at:06d}"
    previous = latest_checkpoint(out)
    kept = previous.name if previous else None
    needed = tree_bytes(previous) if previous else None
    if needed:
        warning = check_space(out, needed, kept, RESUME_HINT)
        if warning and warn is not None:
            warn(warning)
    try:
        commit_folder(lambda tmp: _write_checkpoint(model, state, tmp), folder)
    except Exception as error:
        if is_disk_full(error):
            raise disk_full(folder, needed, kept, RESUME_HINT) from None
        if not isinstance(error, OSError):
            raise
        intact = f"the previous checkpoint {previous.name} is intact" if previous else "no earlier checkpoint exists"
        raise RmxError(f"could not write checkpoint step {at} ({error.strerror or error}): {intact}; "
                       f"{RESUME_HINT}") from None
    if previous is not None and previous != folder:
        # Only the newest checkpoint keeps optimizer state; older ones stay as adapters to pick from.
        (previous / STATE_FILE).unlink(missing_ok=True)
    return folder


def finished_run(out: Path, summary_file: Path, fingerprint: str, resume: bool, what: str) -> dict | None:
    """The recorded result when `out` already finished this very run and `resume` asks for it; refuses to
    overwrite an earlier run without `resume`, or to resume a run of other settings."""
    if not resume and (latest_checkpoint(out) is not None or summary_file.exists()):
        raise RmxError(f"{out} already holds {what}: pass --resume to continue it, or choose another --out")
    if resume and summary_file.exists():
        done = json.loads(summary_file.read_text())
        if done.get("fingerprint") == fingerprint:
            return done["result"]
        raise RmxError(f"{out} holds {what} finished with a different config or rollouts file: choose another --out")
    return None


def write_summary(summary_file: Path, fingerprint: str, result: dict) -> None:
    """Record a finished run, so that `--resume` on it returns this result instead of training again."""
    atomic_write_json(summary_file, {"fingerprint": fingerprint, "result": result})


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint that can be resumed from (it holds the trainer state)."""
    folder = Path(out) / CHECKPOINTS
    if not folder.is_dir():
        return None
    found = [p for p in folder.iterdir() if re.fullmatch(r"step-\d+", p.name) and (p / STATE_FILE).exists()]
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


def rng_state() -> dict:
    """Every RNG a step draws from (python, numpy, torch, CUDA), as a checkpoint keeps it."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(model: Any, optimizer: Any, scheduler: Any, folder: Path,
                    fingerprint: str) -> tuple[int, list, list]:
    """Restore adapter weights, optimizer, scheduler and RNG states; refuse a checkpoint of another run.

    Returns (step, loss history, windows) to go on from."""
    import torch
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = torch.load(folder / STATE_FILE, weights_only=True)
    if state.get("fingerprint") != fingerprint:
        raise RmxError(f"checkpoint {folder} belongs to a different base, config or rollouts file: "
                       "resume with the same settings, or choose another --out")
    try:
        weights = load_file(str(folder / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(model, weights)
    except Exception as error:
        raise RmxError(f"checkpoint {folder} does not fit this model: {str(error).splitlines()[0]}") from None
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing or getattr(result, "unexpected_keys", []):
        raise RmxError(f"checkpoint {folder} does not fit this model ({len(missing)} LoRA tensors missing)")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return state["step"], list(state["history"]), state["windows"]
