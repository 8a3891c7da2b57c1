"""KL-LoRA distillation (paper §4, App. B): fit a LoRA on the base to a teacher's top-64 next-token distribution."""

from __future__ import annotations

import gc
import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from engine.core.config import ModelSpec
from engine.core.errors import RmxError, Stopped
from engine.core.io import atomic_open
from engine.core.models import LoadedModel
from engine.recipes.loop import Loop, StepMetrics, WindowLoss, finished_run, latest_checkpoint, write_summary

TEACHER_FILE = "teacher_topk.npz"
SUMMARY_FILE = "distill_summary.json"


@dataclass(frozen=True)
class DistillSpec:
    """A KL-LoRA run (App. B defaults: 3 epochs, batch 2 × accumulation 8, lr 1e-4, wd 1e-2, 10% warmup)."""

    rollouts: str
    """Completions to distill on: a rollouts.jsonl sampled from the teacher (`rmx rollouts --base TEACHER`)."""
    top_k: int = 64
    """Teacher logits kept per position; the teacher's distribution is renormalised over them."""
    epochs: int = 3
    """Passes over the completions."""
    batch_size: int = 2
    """Sequences per micro-batch (processed one by one, the loss averaged over them)."""
    grad_accum: int = 8
    """Micro-batches per optimizer step."""
    lr: float = 1e-4
    """Peak AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_ratio: float = 0.1
    """Fraction of optimizer steps of linear warmup, then linear decay to 0."""
    lora_r: int = 32
    """LoRA rank."""
    lora_alpha: int = 64
    """LoRA α (scale α/r)."""
    lora_dropout: float = 0.0
    """LoRA dropout."""
    lora_targets: str | None = None
    """Regex over full module paths; None: every linear layer inside attention (the paper's QKVO)."""
    max_tokens: int | None = None
    """Truncate prompt+completion to this many tokens."""
    seed: int = 0
    """Seeds the data order, the LoRA init and every RNG."""
    chunk_elements: int = 1 << 24
    """Most positions × vocab fp32 logits alive at once."""
    checkpoint_every: int = 0
    """Optimizer steps between checkpoints; 0 checkpoints every 15% of the run, as training does."""

    def __post_init__(self) -> None:
        for name in ("top_k", "epochs", "batch_size", "grad_accum", "lora_r", "lora_alpha", "chunk_elements"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise RmxError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise RmxError(f"--checkpoint-every must be an integer ≥ 0, got {self.checkpoint_every}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.warmup_ratio < 1:
            raise RmxError("--lr must be > 0, --weight-decay ≥ 0 and --warmup-ratio in [0, 1)")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise RmxError(f"--max-tokens must be ≥ 2, got {self.max_tokens}")


@dataclass(frozen=True)
class DistillResult:
    adapter: str
    steps: int
    sequences: int
    positions: int
    """Completion positions the teacher distribution covers."""
    final_kl: float
    """Mean KL(teacher top-k ‖ student) over the last optimizer step."""
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)


def topk_kl(student_logits, teacher_ids, teacher_logits):
    """Per-row KL(p_T ‖ p_S) with p_T the teacher renormalised over its top-k ids and p_S the student's
    full-vocabulary distribution read at those ids."""
    import torch

    from engine.recipes.normalise import normalise

    teacher_logp = torch.log_softmax(teacher_logits.float(), dim=-1)
    lse, picked = normalise(student_logits, teacher_ids)
    return (teacher_logp.exp() * (teacher_logp - (picked - lse[:, None]))).sum(-1)


def _fingerprint(base: ModelSpec, teacher: ModelSpec, spec: DistillSpec) -> str:
    """What a checkpoint or teacher cache must match to be reused: both models, the config and the rollouts file."""
    digest = hashlib.sha256()
    settings = {k: v for k, v in asdict(spec).items() if k != "checkpoint_every"}
    digest.update(json.dumps([base.source, base.dtype, base.revision, asdict(teacher), settings], sort_keys=True,
                             default=str).encode())
    with open(spec.rollouts, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached_teacher(path: Path, fingerprint: str) -> bool:
    """Whether `path` holds the teacher pass of this very run (a resume then skips the teacher)."""
    import numpy as np

    if not path.exists():
        return False
    try:
        with np.load(path) as stored:
            return str(stored["fingerprint"]) == fingerprint
    except (OSError, KeyError, ValueError):  # cut short, or written by another version
        return False


def _teacher_pass(teacher: ModelSpec, student: LoadedModel, sequences: list[tuple[list[int], int]], top_k: int,
                  chunk_elements: int, path: Path, fingerprint: str, emit: Callable[[dict], None]) -> None:
    """The teacher's top-k ids and logits at every completion position, saved once (then the teacher is freed)."""
    import numpy as np
    import torch

    from engine.core.models import align_teacher_vocabulary, load_model
    from engine.core.scoring import hidden_states, logit_transform

    model = load_model(teacher)
    note = align_teacher_vocabulary(student, model)
    if note:
        emit({"distill/warning": note})
    if top_k > model.vocab_size:
        raise RmxError(f"--top-k {top_k} is larger than the teacher's vocabulary ({model.vocab_size})")
    head, transform = model.core.get_output_embeddings(), logit_transform(model.core.config)
    step = max(1, chunk_elements // model.vocab_size)
    ids_out, logits_out = [], []
    with torch.inference_mode(), model.active() as module:
        for ids, prompt_len in sequences:
            tensor = torch.tensor([ids], device=model.device)
            h = hidden_states(module, tensor, torch.ones_like(tensor))[0, prompt_len - 1:-1]
            for a in range(0, h.shape[0], step):
                values, top = torch.topk(transform(head(h[a:a + step])).float(), top_k, dim=-1)
                ids_out.append(top.cpu().numpy().astype(np.int32))
                logits_out.append(values.cpu().numpy())
    with atomic_open(path, "wb") as handle:
        np.savez(handle, ids=np.concatenate(ids_out), logits=np.concatenate(logits_out),
                 fingerprint=np.array(fingerprint))
    del model
    gc.collect()


def distill(base: ModelSpec, teacher: ModelSpec, spec: DistillSpec, out: str | Path, *, resume: bool = False,
            emit: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
            progress: Callable[[int, int], None] | None = None) -> DistillResult:
    """Train a LoRA on `base` so that its next-token distribution matches the teacher's on `spec.rollouts`.

    Checkpoints land in `out/checkpoints/`; `resume` continues from the newest one (the teacher pass is
    kept too), and the final adapter is then bit-identical to an uninterrupted run's.
    """
    import numpy as np
    import torch

    from engine.core.models import load_model
    from engine.core.records import read_rollouts
    from engine.core.scoring import logit_transform, hidden_states
    from engine.recipes.train import lora_model

    emit = emit or (lambda event: None)
    out = Path(out)
    if base.adapter:
        raise RmxError("distillation trains a fresh adapter on the bare base: drop --adapter")
    if not Path(spec.rollouts).is_file():
        raise RmxError(f"no rollouts file at {spec.rollouts}")
    fingerprint = _fingerprint(base, teacher, spec)
    summary_file = out / SUMMARY_FILE
    existing = latest_checkpoint(out)
    finished = finished_run(out, summary_file, fingerprint, resume, "a distillation")
    if finished is not None:
        return DistillResult(**finished)
    rollouts = [r for r in read_rollouts(spec.rollouts) if r.prompt_ids and r.completion_ids]
    if not rollouts:
        raise RmxError(f"{spec.rollouts} has no rollout with both a prompt and a completion")
    student = load_model(base)
    limit = min(spec.max_tokens or student.context_length, student.context_length)
    sequences = [(list(r.prompt_ids + r.completion_ids)[:limit], len(r.prompt_ids)) for r in rollouts
                 if len(r.prompt_ids) < limit]
    if not sequences:
        raise RmxError(f"every prompt is longer than {limit} tokens: raise --max-tokens")
    out.mkdir(parents=True, exist_ok=True)
    cache = out / TEACHER_FILE
    if resume and _cached_teacher(cache, fingerprint):
        emit({"distill/phase": "teacher", "distill/teacher_cache": "reused"})
    else:
        emit({"distill/phase": "teacher"})
        _teacher_pass(teacher, student, sequences, spec.top_k, spec.chunk_elements, cache, fingerprint, emit)
    stored = np.load(cache)
    teacher_ids, teacher_logits = torch.from_numpy(stored["ids"]).long(), torch.from_numpy(stored["logits"])
    offsets = [0]
    for ids, prompt_len in sequences:
        offsets.append(offsets[-1] + len(ids) - prompt_len)

    model = lora_model(student.module, spec, base.source)
    model.eval()
    core = model.get_base_model()
    head, transform = core.get_output_embeddings(), logit_transform(core.config)
    step_rows = max(1, spec.chunk_elements // int(head.weight.shape[0]))
    rng = random.Random(spec.seed)
    order: list[int] = []
    for _ in range(spec.epochs):
        epoch = list(range(len(sequences)))
        rng.shuffle(epoch)
        order += epoch
    per_step = spec.batch_size * spec.grad_accum
    windows = [order[i:i + per_step] for i in range(0, len(order), per_step)]
    loop: Loop[WindowLoss] = Loop(
        model, windows, out, lr=spec.lr, weight_decay=spec.weight_decay, warmup_ratio=spec.warmup_ratio,
        seed=spec.seed, fingerprint=fingerprint, checkpoint_every=spec.checkpoint_every, prefix="distill", emit=emit)
    loop.restore(existing if resume else None)

    def backward(window: list[int]) -> WindowLoss:
        kl_sum = 0.0
        for index in window:
            ids, prompt_len = sequences[index]
            tensor = torch.tensor([ids], device=student.device)
            policy_h = hidden_states(model, tensor, torch.ones_like(tensor))[0, prompt_len - 1:-1]
            leaf = policy_h.detach().requires_grad_()
            a0, rows = offsets[index], policy_h.shape[0]
            for a in range(0, rows, step_rows):
                b = min(a + step_rows, rows)
                kl = topk_kl(transform(head(leaf[a:b])), teacher_ids[a0 + a:a0 + b].to(student.device),
                             teacher_logits[a0 + a:a0 + b].to(student.device)).sum() / rows
                (kl / len(window)).backward()
                kl_sum += float(kl.detach())
            policy_h.backward(leaf.grad)
        return WindowLoss(kl_sum / len(window))

    def on_step(m: StepMetrics[WindowLoss]) -> None:
        emit({"step": m.step, "distill/step": m.step, "distill/total": m.total, "distill/kl": m.loss,
              "distill/lr": m.lr})

    emit({"distill/phase": "training", "distill/sequences": len(sequences), "distill/positions": offsets[-1]})
    ran = loop.run(backward, on_step, should_stop, progress)
    if ran.state == "diverged":
        raise RmxError(f"distillation went numerically wrong at step {ran.step + 1}: {ran.reason}; "
                       "the last checkpoint is intact")
    if ran.state == "stopped":
        raise Stopped(f"distillation stopped at step {ran.step} of {ran.total}: resume it to go on")
    final = loop.save_adapter(out / "adapter")
    last_kl = ran.history[-1] if ran.history else math.nan
    result = DistillResult(str(final), ran.step, len(sequences), offsets[-1], last_kl, ran.seconds)
    write_summary(summary_file, fingerprint, result.to_json())
    return result
