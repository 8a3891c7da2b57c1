"""ReasonMaxxer: the entropy-gated, advantage-weighted loss with a KL anchor, its loop, checkpoints and resume."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from engine.core.config import ModelSpec, Tau
from engine.core.errors import RmxError
from engine.recipes.pool import group_by_problem, is_mixed, require_signal
from engine.core.records import Rollout, read_rollouts
from engine.recipes.basepass import BASE_PASS, BaseRows, ChunkedHead, run_base_pass
from engine.recipes.loop import Loop, StepMetrics, WindowLoss, latest_checkpoint, finished_run, write_summary

OBJECTIVES = ("contrastive", "positive-only")
NEGATIVES = ("signed", "bounded")
ORDERS = ("shuffle", "clarity")
ANCHORS = ("all", "completion")
ADV_EPS = 1e-6
"""ε in A = (r − mean)/(std + ε). Mixed problems always have std > 0, so ε only guards the arithmetic."""
UNLIKELIHOOD_FLOOR = 1e-6
"""Smallest 1 − p inside the bounded term's log, so a token the model is sure of still has a finite gradient."""
SUMMARY_FILE = "train_summary.json"


@dataclass(frozen=True)
class TrainSpec:
    """A ReasonMaxxer run: data, gate, loss, LoRA, optimiser and safety settings (paper App. B defaults)."""

    rollouts: str
    """A rollouts.jsonl or pool.jsonl; problems without mixed success are left out."""
    tau: str = "1.4"
    """Decision gate τ: nats (1.4, the authors' recipe) or a quantile of the pool's base entropies (q0.97)."""
    tau_correct: str | None = None
    """τ for correct rollouts; None uses `tau`."""
    tau_wrong: str | None = None
    """τ for wrong rollouts; None uses `tau`."""
    kl_weight: float = 0.2
    """λ in L = L_dec + λ·L_anchor."""
    adv_clip: float = 2.5
    """Advantages are clipped per rollout to [−clip, clip] before token weighting."""
    objective: str = "contrastive"
    """contrastive (the paper's loss) or positive-only (the paper's ablation: correct rollouts only)."""
    negative: str = "signed"
    """signed: −A·log p everywhere (the paper; unbounded below for A < 0). bounded: for A < 0 use the
    unlikelihood term |A|·(−log(1 − p)), which is ≥ 0, so pushing p → 0 cannot run the loss to −∞."""
    anchor: str = "all"
    """all: the KL anchor covers every non-decision prediction, prompt included (paper, authors' default);
    completion: only generated tokens."""
    order: str = "shuffle"
    """shuffle (seeded) or clarity: the authors' curriculum, |advantage| × decision fraction, descending."""
    lr: float = 1e-4
    """Peak learning rate of AdamW (betas 0.9/0.999, eps 1e-8)."""
    weight_decay: float = 0.01
    """AdamW weight decay (torch's default, which the authors' plain torch loop inherits)."""
    warmup_ratio: float = 0.4
    """Fraction of optimizer steps with linear warmup before the linear decay to 0 (the authors' recipe
    warms up for 50 of the ~125 steps that 1,000 sequences give)."""
    grad_accum: int = 8
    """Sequences per optimizer step (batch size 1, accumulated)."""
    epochs: int = 1
    """Passes over the training sequences."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (the authors cap at 149); None runs all epochs."""
    seed: int = 0
    """Seeds the data order, the LoRA init and every RNG."""
    lora_r: int = 32
    """LoRA rank."""
    lora_alpha: int = 64
    """LoRA α (scale α/r)."""
    lora_dropout: float = 0.0
    """LoRA dropout."""
    lora_targets: str | None = None
    """A regex matched against full module paths; None targets every linear layer inside an attention block
    (q/k/v/o_proj on Llama, Qwen, Mistral; attn.c_attn and attn.c_proj on GPT-2, not mlp.c_proj)."""
    max_tokens: int | None = None
    """Truncate prompt+completion to this many tokens (and always to the model's context)."""
    checkpoint_every: int = 0
    """Optimizer steps between checkpoints; 0 checkpoints every 15% of the run, as the authors do."""
    chunk_elements: int = 1 << 24
    """Upper bound on positions × vocab fp32 logits alive at once in the loss."""
    cache_base: bool = True
    """Keep what the KL anchor needs from the base pass on disk: per prediction row the base's expected head row
    Σ p_b·W in fp32 (tokens × hidden size × 4 bytes, about 6 GB for 1,000 sequences of 1,000 tokens on a 1.5B
    model; a soft-capping head keeps the hidden states instead), so that no step runs the base again; off
    recomputes the base forward every step."""
    alarm_abs: float = 100.0
    """Divergence alarm: stop when |step loss| exceeds this (0 turns the test off)."""
    alarm_ratio: float = 20.0
    """Divergence alarm: stop when |step loss| exceeds this × the running median of |loss| (floored at 1);
    0 turns the test off. NaN or inf always stops the run."""

    def __post_init__(self) -> None:
        for name in ("tau", "tau_correct", "tau_wrong"):
            value = getattr(self, name)
            if value is not None:
                Tau.parse(value)
        choices = {"objective": OBJECTIVES, "negative": NEGATIVES, "order": ORDERS, "anchor": ANCHORS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise RmxError(f"--{name} must be one of {', '.join(allowed)}, got '{getattr(self, name)}'")
        positive = {"lr": self.lr, "adv_clip": self.adv_clip, "grad_accum": self.grad_accum, "epochs": self.epochs,
                    "lora_r": self.lora_r, "lora_alpha": self.lora_alpha, "chunk_elements": self.chunk_elements}
        for name, value in positive.items():
            if not value > 0:
                raise RmxError(f"--{name.replace('_', '-')} must be positive, got {value}")
        for name in ("grad_accum", "epochs", "lora_r", "seed", "checkpoint_every", "chunk_elements"):
            if not isinstance(getattr(self, name), int):
                raise RmxError(f"--{name.replace('_', '-')} must be an integer, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise RmxError(f"--max-steps must be ≥ 1, got {self.max_steps}")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise RmxError(f"--max-tokens must be ≥ 2, got {self.max_tokens}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise RmxError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        nonneg = {"kl_weight": self.kl_weight, "weight_decay": self.weight_decay, "lora_dropout": self.lora_dropout,
                  "checkpoint_every": self.checkpoint_every, "alarm_abs": self.alarm_abs,
                  "alarm_ratio": self.alarm_ratio}
        for name, value in nonneg.items():
            if not value >= 0:
                raise RmxError(f"--{name.replace('_', '-')} must be ≥ 0, got {value}")
        if self.lora_targets is not None:
            try:
                re.compile(self.lora_targets)
            except re.error as error:
                raise RmxError(f"--lora-targets is not a valid regex: {error}") from None

    def gates(self) -> tuple[Tau, Tau]:
        """τ for correct rollouts and τ for wrong rollouts."""
        return Tau.parse(self.tau_correct or self.tau), Tau.parse(self.tau_wrong or self.tau)


@dataclass(frozen=True)
class TrainResult:
    """How a training run ended and where its adapter is."""

    state: str
    """done, diverged (the alarm fired) or stopped (asked to stop; resumable)."""
    adapter: str | None
    """The final adapter folder (done only)."""
    last_checkpoint: str | None
    """The newest checkpoint on disk: after `diverged`, the last one written before the alarm."""
    step: int
    total: int
    problems: int
    sequences: int
    tau_correct: float
    """τ for correct rollouts, resolved to nats."""
    tau_wrong: float
    decision_frac: float
    """Fraction of completion tokens that are decision points over the training sequences."""
    tokens: int
    """Tokens (prompt + completion) trained on in this process."""
    seconds: float
    tok_s: float
    reason: str | None = None
    """Why the alarm fired, when it did."""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainWindow(WindowLoss):
    """One optimizer step's loss terms, averaged over its window."""

    dec: float = 0.0
    """The decision-point term."""
    anchor: float = 0.0
    """The KL anchor term (before --kl-weight)."""
    decision_frac: float = 0.0
    """Fraction of the window's completion tokens that are decision points."""
    dlogp_pos: float | None = None
    """Mean change of log p(target) at decision points of positive-advantage sequences."""
    dlogp_neg: float | None = None


@dataclass(frozen=True)
class Example:
    """One training sequence: a rollout's token ids (truncated), its advantage and its decision rows."""

    problem_id: str
    sample: int
    ids: tuple[int, ...]
    prompt_len: int
    advantage: float
    correct: bool
    entropies: tuple[float, ...]
    """Base entropy at each kept completion token."""

    @property
    def completion_len(self) -> int:
        return len(self.ids) - self.prompt_len

    def decision(self, tau_nats: float) -> list[bool]:
        return [h > tau_nats for h in self.entropies]


# --- the loss ---------------------------------------------------------------------------------------------


def advantages(correct: Sequence[bool], clip: float = 2.5) -> list[float]:
    """A_i = (r_i − mean)/(std + ε) within one problem (population std), clipped to [−clip, clip]."""
    rewards = [1.0 if c else 0.0 for c in correct]
    mean = sum(rewards) / len(rewards)
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))
    return [max(-clip, min(clip, (r - mean) / (std + ADV_EPS))) for r in rewards]


def decision_terms(target_logp, advantage: float, negative: str = "signed"):
    """Per-token decision loss: −A·log p; with `bounded` and A < 0, |A|·(−log(1 − p)) ≥ 0 instead."""
    import torch

    if advantage < 0 and negative == "bounded":
        return advantage * torch.log((-torch.expm1(target_logp)).clamp_min(UNLIKELIHOOD_FLOOR))
    return -advantage * target_logp


def _row_terms(logits, base_logits, targets, decision, anchor, advantage: float, negative: str):
    """Sums of the decision and anchor terms over one block of prediction rows, plus Δlog p at decision rows."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    target_logp = logp.gather(1, targets[:, None])[:, 0]
    with torch.no_grad():
        base_logp = torch.log_softmax(base_logits.float(), dim=-1)
    dec_sum = decision_terms(target_logp[decision], advantage, negative).sum()
    anchor_rows = base_logp[anchor]
    kl = (anchor_rows.exp() * (anchor_rows - logp[anchor])).sum()
    delta = (target_logp[decision] - base_logp[decision].gather(1, targets[decision][:, None])[:, 0]).detach()
    return dec_sum, kl, delta


@dataclass(frozen=True)
class LossTerms:
    """One sequence's loss and its parts."""

    loss: object
    dec: object
    anchor: object
    n_dec: int
    n_anchor: int


def loss_terms(logits, base_logits, targets, decision, anchor, advantage: float, kl_weight: float = 0.2,
               negative: str = "signed") -> LossTerms:
    """The ReasonMaxxer loss of one sequence from full logits (the unchunked reference the trainer matches).

    Row t of `logits` predicts `targets[t]`; `decision` and `anchor` are disjoint boolean row masks.
    L_dec is averaged over decision rows, L_anchor = KL(p_base ‖ p_θ) over anchor rows.
    """
    dec_sum, kl_sum, _ = _row_terms(logits, base_logits, targets, decision, anchor, advantage, negative)
    n_dec, n_anchor = int(decision.sum()), int(anchor.sum())
    dec = dec_sum / max(n_dec, 1)
    kl = kl_sum / max(n_anchor, 1)
    return LossTerms(dec + kl_weight * kl, dec, kl, n_dec, n_anchor)


# --- LoRA --------------------------------------------------------------------------------------------------


def attention_targets(model) -> str:
    """A regex over full module paths matching every linear layer directly inside an attention block."""
    import torch
    from transformers.pytorch_utils import Conv1D

    grouped: dict[str, set[str]] = {}
    for name, module in model.named_modules():
        if "." not in name or not isinstance(module, (torch.nn.Linear, Conv1D)):
            continue
        parent_name, leaf = name.rsplit(".", 1)
        if "Attention" not in type(model.get_submodule(parent_name)).__name__:
            continue
        parent = r"\.".join(r"\d+" if part.isdigit() else re.escape(part) for part in parent_name.split("."))
        grouped.setdefault(parent, set()).add(re.escape(leaf))
    if not grouped:
        raise RmxError(f"found no attention projections in {type(model).__name__}: name them with --lora-targets REGEX")
    return "|".join(f"{parent}\\.(?:{'|'.join(sorted(leaves))})" for parent, leaves in sorted(grouped.items()))


def lora_model(core, spec: TrainSpec, source: str):
    """Wrap `core` in a trainable LoRA (base frozen); the adapter records `source` as its base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    targets = spec.lora_targets or attention_targets(core)
    matched = [m for n, m in core.named_modules() if re.fullmatch(targets, n)]
    if not matched:
        raise RmxError(f"--lora-targets '{targets}' matches no module of {type(core).__name__}")
    unsupported = [type(m).__name__ for m in matched if not isinstance(m, (torch.nn.Linear, Conv1D))]
    if unsupported:
        raise RmxError(f"--lora-targets matches modules LoRA cannot adapt here ({', '.join(sorted(set(unsupported)))})")
    config = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                        target_modules=targets, bias="none", task_type="CAUSAL_LM",
                        fan_in_fan_out=isinstance(matched[0], Conv1D))
    torch.manual_seed(spec.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = get_peft_model(core, config)
        except ValueError as error:
            raise RmxError(f"LoRA does not fit {type(core).__name__}: {str(error).splitlines()[0]}") from None
    model.peft_config["default"].base_model_name_or_path = source
    return model


# --- data --------------------------------------------------------------------------------------------------


def _prepare(rollouts: list[Rollout], spec: TrainSpec, context: int) -> tuple[list[tuple[Rollout, float]], dict]:
    """Mixed-success rollouts with their advantages (positive-only keeps A > 0), and counts for the log."""
    groups = group_by_problem(rollouts)
    mixed = {pid: g for pid, g in groups.items() if is_mixed(g)}
    limit = min(spec.max_tokens or context, context)
    chosen: list[tuple[Rollout, float]] = []
    too_long = 0
    for group in mixed.values():
        for rollout, adv in zip(group, advantages([r.correct for r in group], spec.adv_clip)):
            if spec.objective == "positive-only" and adv <= 0:
                continue
            if not rollout.completion_ids or len(rollout.prompt_ids) >= limit or not rollout.prompt_ids:
                too_long += 1
                continue
            chosen.append((rollout, adv))
    counts = {"problems": len(groups), "mixed": len(mixed), "skipped": too_long, "limit": limit}
    return chosen, counts


def _sequence_ids(rollout: Rollout, limit: int) -> tuple[int, ...]:
    return (tuple(rollout.prompt_ids) + tuple(rollout.completion_ids))[:limit]


def _order(examples: list[Example], spec: TrainSpec, taus: tuple[float, float]) -> list[int]:
    """Indices of the training sequences for all epochs, in training order."""
    if spec.order == "clarity":
        def clarity(i: int) -> float:
            ex = examples[i]
            gate = taus[0] if ex.correct else taus[1]
            return abs(ex.advantage) * sum(ex.decision(gate)) / max(ex.completion_len, 1)

        one = sorted(range(len(examples)), key=lambda i: -clarity(i))  # stable: ties keep file order
        return one * spec.epochs
    rng = random.Random(spec.seed)
    order: list[int] = []
    for _ in range(spec.epochs):
        epoch = list(range(len(examples)))
        rng.shuffle(epoch)
        order += epoch
    return order


def _quantiles(values: Sequence[float]) -> str:
    ordered = sorted(values)
    if not ordered:
        return "no tokens"
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))]  # noqa: E731
    return f"p50 {pick(0.5):.2f}, p90 {pick(0.9):.2f}, p97 {pick(0.97):.2f}, p99 {pick(0.99):.2f}, max {ordered[-1]:.2f}"


def _fingerprint(base: ModelSpec, spec: TrainSpec) -> str:
    """What a checkpoint must match to be resumed: base, config and the exact rollouts file."""
    digest = hashlib.sha256()
    digest.update(json.dumps([base.source, base.dtype, base.revision, asdict(spec)], sort_keys=True).encode())
    with open(spec.rollouts, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()




# --- the loop ----------------------------------------------------------------------------------------------


class _Sequence:
    """A training example as tensors: ids, targets, and the rows the two loss terms use."""

    def __init__(self, ex: Example, tau_nats: float, anchor: str, device: str):
        import torch

        self.ids = torch.tensor([ex.ids], device=device)
        length, start = len(ex.ids), ex.prompt_len - 1
        decision = torch.zeros(length - 1, dtype=torch.bool)
        decision[start:] = torch.tensor(ex.decision(tau_nats), dtype=torch.bool)
        anchor_rows = ~decision
        if anchor == "completion":
            anchor_rows[:start] = False
        used = decision | anchor_rows
        self.rows = used.nonzero()[:, 0].to(device)
        self.decision = decision[used].to(device)
        self.anchor = anchor_rows[used].to(device)
        self.targets = self.ids[0, 1:][self.rows]
        self.n_dec = int(decision.sum())
        self.n_anchor = int(anchor_rows.sum())
        self.tokens = length
        self.completion = ex.completion_len


def _anchored_row_terms(logits, policy_h, base: BaseRows, transform, targets, decision, anchor, advantage: float,
                        negative: str):
    """`_row_terms` with the base reduced to `BaseRows`: KL = lse(z_θ) − transform(h_θ·e_b + c_b) − H_b per row,
    so no base logits exist and the policy's logits are only normalised, as in a cross-entropy step."""
    import torch

    from engine.recipes.normalise import normalise

    lse, picked = normalise(logits, targets[:, None])
    rows = decision.nonzero()[:, 0]
    target_logp = picked[rows, 0] - lse[rows]
    dec_sum = decision_terms(target_logp, advantage, negative).sum()
    expected_logit = transform(torch.einsum("nh,nh->n", policy_h[anchor].float(), base.expected[anchor])
                               + base.bias[anchor])
    kl = (lse[anchor] - expected_logit - base.entropy[anchor]).sum()
    delta = (target_logp - base.target_logp[rows]).detach()
    return dec_sum, kl, delta


def _sequence_backward(model, head: ChunkedHead, seq: _Sequence, advantage: float, spec: TrainSpec, scale: float,
                       base: BaseRows | None = None) -> dict:
    """Forward the policy once, then the loss chunk by chunk, each chunk's backward into the hidden states.

    No positions × vocab tensor larger than one chunk is ever alive: each chunk's logits are freed by its
    own backward, whose gradient accumulates on a detached copy of the hidden states; one backward through
    the transformer body follows. `base` is the base at every prediction row (from the base pass); without it
    the base forward runs here, adapter disabled, and is reduced the same way.
    """
    import torch

    from engine.core.scoring import hidden_states

    mask = torch.ones_like(seq.ids)
    if base is None:
        with torch.no_grad(), model.disable_adapter():
            base = head.base_rows(hidden_states(model, seq.ids, mask)[0, :-1], seq.ids[0, 1:])
    base = base.select(seq.rows)
    policy_h = hidden_states(model, seq.ids, mask)[0, seq.rows]
    leaf = policy_h.detach().requires_grad_()
    dec_total = anchor_total = 0.0
    deltas = []
    for a in range(0, leaf.shape[0], head.rows):
        b = a + head.rows
        logits = head.logits(leaf[a:b])
        if base.expected is not None:
            dec_sum, kl_sum, delta = _anchored_row_terms(
                logits, leaf[a:b], base.select(slice(a, b)), head.transform, seq.targets[a:b],
                seq.decision[a:b], seq.anchor[a:b], advantage, spec.negative)
        else:
            with torch.no_grad():
                base_logits = head.logits(base.hidden[a:b])
            dec_sum, kl_sum, delta = _row_terms(logits, base_logits, seq.targets[a:b], seq.decision[a:b],
                                                seq.anchor[a:b], advantage, spec.negative)
        dec = dec_sum / max(seq.n_dec, 1)
        kl = kl_sum / max(seq.n_anchor, 1)
        chunk_loss = (dec + spec.kl_weight * kl) * scale
        if chunk_loss.requires_grad:
            chunk_loss.backward()
        dec_total += float(dec.detach())
        anchor_total += float(kl.detach())
        deltas.append(delta)
    if leaf.grad is not None:
        policy_h.backward(leaf.grad)
    delta_all = torch.cat(deltas) if deltas else torch.zeros(0)
    return {"dec": dec_total, "anchor": anchor_total, "delta_sum": float(delta_all.sum()),
            "delta_n": int(delta_all.numel())}


def train(base: ModelSpec, spec: TrainSpec, out: str | Path, *, resume: bool = False,
          emit: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
          progress: Callable[[int, int], None] | None = None, base_pass: str | Path | None = None) -> TrainResult:
    """Train a ReasonMaxxer adapter on `spec.rollouts` into `out` (checkpoints/, adapter/, train_summary.json).

    `resume` continues from the newest checkpoint in `out`; the final adapter is then bit-identical to an
    uninterrupted run's. `emit` receives one event dict per optimizer step (slash keys), `should_stop`
    is polled between steps, and `progress(step, total)` tracks the run. `base_pass` is where the base
    pass is kept (default `out/base_pass`); runs on the same base and pool can share one.
    """

    from engine.core.models import load_model

    emit = emit or (lambda event: None)
    out = Path(out)
    if base.adapter:
        raise RmxError("training starts from the bare base model: drop --adapter")
    rollouts = read_rollouts(spec.rollouts)
    require_signal(rollouts)
    fingerprint = _fingerprint(base, spec)
    summary_file = out / SUMMARY_FILE
    existing = latest_checkpoint(out)
    finished = finished_run(out, summary_file, fingerprint, resume, "a training run")
    if finished is not None:
        return TrainResult(**finished)

    loaded = load_model(base)
    chosen, counts = _prepare(rollouts, spec, loaded.context_length)
    if not chosen:
        raise RmxError(f"no usable training sequence: all {counts['skipped']} rollouts are empty or longer than "
                       f"{counts['limit']} tokens (raise --max-tokens)")
    out.mkdir(parents=True, exist_ok=True)
    emit({"train/phase": "scoring", "train/sequences": len(chosen)})
    sequences = [(_sequence_ids(r, counts["limit"]), len(r.prompt_ids)) for r, _ in chosen]
    store = run_base_pass(loaded, sequences, Path(base_pass) if base_pass else out / BASE_PASS, spec.cache_base,
                       spec.chunk_elements)
    examples = [Example(r.problem_id, r.sample, ids, prompt_len, adv, r.correct, tuple(store.entropies(i)))
                for i, ((r, adv), (ids, prompt_len)) in enumerate(zip(chosen, sequences))]
    pooled = [h for ex in examples for h in ex.entropies]
    tau_correct, tau_wrong = (gate.resolve(pooled) for gate in spec.gates())
    n_dec = sum(sum(ex.decision(tau_correct if ex.correct else tau_wrong)) for ex in examples)
    n_completion = sum(ex.completion_len for ex in examples)
    decision_frac = n_dec / max(n_completion, 1)
    if n_dec == 0:
        emit({"train/warning": f"τ (correct {tau_correct:.3g}, wrong {tau_wrong:.3g} nats) marks no decision point in "
                         f"{n_completion} completion tokens (base entropy {_quantiles(pooled)}): only the KL "
                         "anchor trains, which leaves the base unchanged; lower τ or give a quantile such as q0.97"})
    if counts["skipped"]:
        emit({"train/warning": f"{counts['skipped']} rollouts skipped: empty, or prompt longer than {counts['limit']} tokens"})
    emit({"train/phase": "training", "train/problems": counts["mixed"], "train/sequences": len(examples),
          "train/tau_correct": tau_correct, "train/tau_wrong": tau_wrong, "train/decision_frac_pool": decision_frac})

    order = _order(examples, spec, (tau_correct, tau_wrong))
    windows = [order[i:i + spec.grad_accum] for i in range(0, len(order), spec.grad_accum)]
    if spec.max_steps is not None:
        windows = windows[: spec.max_steps]
    model = lora_model(loaded.module, spec, base.source)
    model.eval()  # the base's own dropout stays off: policy = base + adapter, and KL starts at exactly 0
    head = ChunkedHead(model.get_base_model(), spec.chunk_elements)
    loop: Loop[TrainWindow] = Loop(
        model, windows, out, lr=spec.lr, weight_decay=spec.weight_decay, warmup_ratio=spec.warmup_ratio,
        seed=spec.seed, fingerprint=fingerprint, checkpoint_every=spec.checkpoint_every, prefix="train", emit=emit,
        alarm_abs=spec.alarm_abs, alarm_ratio=spec.alarm_ratio)
    loop.restore(existing if resume else None)

    tensors: list[_Sequence | None] = [None] * len(examples)

    def backward(window: list[int]) -> TrainWindow:
        dec = anchor = pos = neg = 0.0
        n_pos = n_neg = n_dec = n_completion = tokens = 0
        for index in window:
            ex = examples[index]
            if tensors[index] is None:
                gate = tau_correct if ex.correct else tau_wrong
                tensors[index] = _Sequence(ex, gate, spec.anchor, loaded.device)
            seq = tensors[index]
            stats = _sequence_backward(model, head, seq, ex.advantage, spec, 1.0 / len(window),
                                       store.base_rows(index, loaded.device))
            dec += stats["dec"] / len(window)
            anchor += stats["anchor"] / len(window)
            if ex.advantage > 0:
                pos, n_pos = pos + stats["delta_sum"], n_pos + stats["delta_n"]
            else:
                neg, n_neg = neg + stats["delta_sum"], n_neg + stats["delta_n"]
            n_dec += seq.n_dec
            n_completion += seq.completion
            tokens += seq.tokens
        return TrainWindow(loss=dec + spec.kl_weight * anchor, tokens=tokens, dec=dec, anchor=anchor,
                           decision_frac=n_dec / max(n_completion, 1),
                           dlogp_pos=pos / n_pos if n_pos else None, dlogp_neg=neg / n_neg if n_neg else None)

    def on_step(m: StepMetrics[TrainWindow]) -> None:
        emit({
            "step": m.step, "train/step": m.step, "train/total": m.total, "train/loss": m.loss,
            "train/loss_dec": m.window.dec, "train/loss_anchor": m.window.anchor,
            "train/decision_frac": m.window.decision_frac,
            "train/dlogp_pos": m.window.dlogp_pos, "train/dlogp_neg": m.window.dlogp_neg,
            "train/lr": m.lr, "train/tok_s": m.tok_s, "train/grad_norm": m.grad_norm,
        })

    ran = loop.run(backward, on_step, should_stop, progress)
    adapter = str(loop.save_adapter(out / "adapter")) if ran.state == "done" else None
    last = latest_checkpoint(out)
    result = TrainResult(
        state=ran.state, adapter=adapter, last_checkpoint=str(last) if last else None, step=ran.step,
        total=ran.total, problems=counts["mixed"], sequences=len(examples), tau_correct=tau_correct,
        tau_wrong=tau_wrong, decision_frac=decision_frac, tokens=ran.tokens, seconds=ran.seconds,
        tok_s=ran.tokens / ran.seconds if ran.seconds > 0 else 0.0, reason=ran.reason,
    )
    if ran.state == "done":
        write_summary(summary_file, fingerprint, result.to_json())
    return result
