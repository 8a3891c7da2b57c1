"""Exact, memory-bounded token scoring: full-vocabulary entropy, top-k, ranks, teacher classes, Table 2."""

from __future__ import annotations

from dataclasses import dataclass, replace
from statistics import fmean
from typing import Callable, Sequence

from engine.core.config import ScoreSpec, Tau
from engine.core.errors import Interrupted, RmxError
from engine.core.models import LoadedModel
from engine.core.records import ScoredRollout, Table2, TeacherPick, TokenScore, TopToken

RERANK_WINDOW = 5
"""A teacher pick inside the base top-5 is a rerank; outside it, a shift (paper §3.1)."""


def logit_transform(config):
    """The post-head logit change some architectures apply (Gemma soft-capping, Cohere/Granite scaling)."""
    import torch

    softcap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)
    divisor = getattr(config, "logits_scaling", None)

    def transform(logits):
        if scale:
            logits = logits * scale
        if divisor:
            logits = logits / divisor
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    return transform


def logit_transform_is_linear(config) -> bool:
    """Whether `logit_transform` is a linear map (scaling only): soft-capping is not."""
    return not getattr(config, "final_logit_softcapping", None)


def hidden_states(model, input_ids, attention_mask):
    """Final hidden states of the transformer body, without materialising any logits."""
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(core, core.base_model_prefix)
    return body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state


def chunk_positions(vocab_size: int, spec: ScoreSpec) -> int:
    """Positions per chunk so that one fp32 positions×vocab block stays under `spec.chunk_elements`."""
    return max(1, spec.chunk_elements // vocab_size)


@dataclass(frozen=True)
class _Sequence:
    prompt: tuple[int, ...]
    completion: tuple[int, ...]


def validate_pair(model: LoadedModel, prompt: Sequence[int], completion: Sequence[int]) -> None:
    """Refuse inputs that cannot be scored, with a one-line reason."""
    if not completion:
        raise RmxError("empty completion: there is nothing to score")
    if not prompt:
        raise RmxError("empty prompt: scoring needs at least one prompt token to predict the first completion token")
    total = len(prompt) + len(completion)
    if total > model.context_length:
        raise RmxError(
            f"prompt+completion is {total} tokens, longer than the model's context ({model.context_length})"
        )
    vocab = model.vocab_size
    bad = next((t for t in (*prompt, *completion) if not 0 <= t < vocab), None)
    if bad is not None:
        raise RmxError(f"token id {bad} is outside the vocabulary (0..{vocab - 1})")


def score(
    base: LoadedModel,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    teacher: LoadedModel | None = None,
    spec: ScoreSpec = ScoreSpec(),
    batch_size: int = 1,
    should_stop: Callable[[], bool] | None = None,
) -> list[ScoredRollout]:
    """Score each (prompt ids, completion ids) pair under the base, and the teacher if given.

    `should_stop` is asked after each forward pass and between logit chunks: True raises Interrupted, so a
    caller quitting mid-score waits for one chunk, not the whole completion.
    """
    if spec.top_k > base.vocab_size:
        raise RmxError(f"--top-k {spec.top_k} is larger than the vocabulary ({base.vocab_size})")
    if batch_size < 1:
        raise RmxError(f"batch size must be ≥ 1, got {batch_size}")
    sequences = [_Sequence(tuple(int(t) for t in p), tuple(int(t) for t in c)) for p, c in pairs]
    for seq in sequences:
        validate_pair(base, seq.prompt, seq.completion)
    results: list[ScoredRollout] = []
    for start in range(0, len(sequences), batch_size):
        results.extend(_score_batch(base, teacher, sequences[start : start + batch_size], spec,
                                    should_stop or _never))
    return results


def _never() -> bool:
    return False


def _check(should_stop: Callable[[], bool]) -> None:
    if should_stop():
        raise Interrupted("scoring stopped")


def _score_batch(base, teacher, batch: list[_Sequence], spec: ScoreSpec,
                 should_stop: Callable[[], bool]) -> list[ScoredRollout]:
    import torch

    lengths = [len(s.prompt) + len(s.completion) for s in batch]
    width = max(lengths)
    pad = base.tokenizer.pad_token_id if base.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(batch):
        full = seq.prompt + seq.completion
        ids[row, : len(full)] = torch.tensor(full)
        mask[row, : len(full)] = 1
    # Logits at position i predict token i+1: completion token j is predicted from prompt_len+j-1.
    rows = torch.cat([torch.full((len(s.completion),), r) for r, s in enumerate(batch)])
    cols = torch.cat([torch.arange(len(s.completion)) + len(s.prompt) - 1 for s in batch])
    targets = torch.tensor([t for s in batch for t in s.completion])

    with torch.inference_mode():
        _check(should_stop)
        base_h = _gathered_hidden(base, ids, mask, rows, cols)
        _check(should_stop)
        teacher_h = _gathered_hidden(teacher, ids, mask, rows, cols) if teacher is not None else None
        columns = _chunked_stats(base, teacher, base_h, teacher_h, targets.to(base_h.device), spec, should_stop)

    scored: list[ScoredRollout] = []
    offset = 0
    for seq in batch:
        tokens = tuple(
            _token_score(base, pos, columns, offset + pos, seq.completion[pos], teacher is not None)
            for pos in range(len(seq.completion))
        )
        offset += len(seq.completion)
        rollout = ScoredRollout(prompt_ids=seq.prompt, tokens=tokens, base=base.label,
                                teacher=teacher.label if teacher else None)
        scored.append(replace(rollout, summary=summarize([rollout])))
    return scored


def _gathered_hidden(model: LoadedModel, ids, mask, rows, cols):
    with model.active() as module:
        h = hidden_states(module, ids.to(model.device), mask.to(model.device))
    return h[rows.to(h.device), cols.to(h.device)]


def _chunked_stats(base, teacher, base_h, teacher_h, targets, spec: ScoreSpec,
                   should_stop: Callable[[], bool] = _never) -> dict[str, list]:
    """Walk the positions in chunks; only one chunk of fp32 logits per model is alive at a time.

    The chunk's fp32 blocks are allocated once and reused: on a CPU a fresh 64 MB block costs more in page
    faults than the arithmetic done in it.
    """
    import torch

    head = base.core.get_output_embeddings()
    transform = logit_transform(base.core.config)
    if teacher is not None:
        teacher_head = teacher.core.get_output_embeddings()
        teacher_transform = logit_transform(teacher.core.config)
    step = min(chunk_positions(base.vocab_size, spec), max(1, base_h.shape[0]))
    blocks = [torch.empty((step, base.vocab_size), dtype=torch.float32, device=base_h.device)
              for _ in range(3 if teacher is not None else 2)]
    product = torch.empty((step, base.vocab_size), dtype=base_h.dtype, device=base_h.device)
    out: dict[str, list] = {k: [] for k in ("logprob", "entropy", "rank", "top_ids", "top_logprobs",
                                            "base_argmax", "t_id", "t_entropy", "t_rank")}
    for start in range(0, base_h.shape[0], step):
        _check(should_stop)
        stop = start + step
        with base.active():
            raw = _project(head, base_h[start:stop], product)
        rows = raw.shape[0]
        logits, scratch = transform(blocks[0][:rows].copy_(raw)), blocks[1][:rows]
        del raw
        target = targets[start:stop, None]
        lse, entropy = lse_entropy(logits, scratch)
        target_logit = logits.gather(1, target)
        top_values, top_ids = torch.topk(logits, spec.top_k, dim=-1)
        out["logprob"] += (target_logit[:, 0] - lse).tolist()
        out["entropy"] += entropy.tolist()
        out["rank"] += _ranks(logits, target_logit, top_values, scratch).tolist()
        out["top_ids"] += top_ids.tolist()
        out["top_logprobs"] += (top_values - lse[:, None]).tolist()
        out["base_argmax"] += top_ids[:, 0].tolist()
        if teacher is not None:
            with teacher.active():
                raw = _project(teacher_head, teacher_h[start:stop], product)
            teacher_logits = teacher_transform(blocks[2][:rows].copy_(raw))
            del raw
            teacher_id = teacher_logits.argmax(-1, keepdim=True)
            _, teacher_entropy = lse_entropy(teacher_logits, scratch)
            out["t_id"] += teacher_id[:, 0].tolist()
            out["t_entropy"] += teacher_entropy.tolist()
            out["t_rank"] += _ranks(logits, logits.gather(1, teacher_id), top_values, scratch).tolist()
    return out


def _project(head, hidden, product):
    """head(hidden), multiplied into the reused `product` block when the head is a plain bias-free Linear."""
    import torch

    weight = head.weight
    if type(head) is torch.nn.Linear and head.bias is None and hidden.dtype == weight.dtype == product.dtype \
            and weight.shape[0] == product.shape[1]:
        return torch.mm(hidden, weight.t(), out=product[:hidden.shape[0]])
    return head(hidden)


def _ranks(logits, reference, top_values, scratch):
    """1 + how many logits of each row beat `reference` (one value per row).

    A reference at or above the row's k-th largest logit is beaten only by top-k values, so its rank is counted
    among `top_values` (the rows' top-k logits, descending): the tokens a model decoded, and the teacher's picks,
    mostly sit there. The other rows are counted over the whole vocabulary in fp32 in `scratch`.
    """
    outside = (reference[:, 0] < top_values[:, -1]).nonzero()[:, 0]
    if 2 * outside.numel() > logits.shape[0]:  # gathering most rows costs more than counting them all
        return _full_counts(logits, reference, scratch) + 1
    counts = (top_values > reference).sum(-1)
    if outside.numel():
        counts[outside] = _full_counts(logits[outside], reference[outside], scratch[:outside.numel()])
    return counts + 1


def _full_counts(logits, reference, scratch):
    """How many logits of each row beat `reference`, over the whole row: the comparison is written into the fp32
    `scratch` and summed as floats, far faster on a CPU than summing a boolean mask (exact: rows are < 2²⁴ long)."""
    import torch

    return torch.gt(logits, reference, out=scratch).sum(-1).long()


def lse_entropy(logits, scratch=None):
    """log-sum-exp and exact entropy H = lse − Σ p·logit; centres `logits` in place (shift-invariant).

    `scratch`, a block shaped like `logits`, takes the exp pass instead of a fresh allocation; it holds no result
    afterwards (the expectation is summed in it, in place: a batched einsum is 3× slower on a CPU).
    """
    import torch

    # Centre on the row max first: lse and E[logit] are both large for real models, and their
    # difference in fp32 would cancel away ~1e-3 nats. Everything downstream is shift-invariant.
    # One exp pass serves both the normaliser and the expectation.
    logits.sub_(logits.amax(dim=-1, keepdim=True))
    weights = logits.exp() if scratch is None else torch.exp(logits, out=scratch)
    total = weights.sum(dim=-1)
    lse = total.log()
    expected_logit = weights.mul_(logits).sum(dim=-1) / total
    return lse, (lse - expected_logit).clamp_min(0.0)


def classify(teacher_id: int, base_argmax: int, rank_in_base: int) -> str:
    """unshifted (same argmax), reranked (inside the base top-5) or shifted (outside it)."""
    if teacher_id == base_argmax:
        return "unshifted"
    return "reranked" if rank_in_base <= RERANK_WINDOW else "shifted"


def _token_score(base: LoadedModel, pos: int, columns: dict, index: int, token: int, with_teacher: bool) -> TokenScore:
    top = tuple(
        TopToken(id=i, text=base.token_text(i), logprob=lp)
        for i, lp in zip(columns["top_ids"][index], columns["top_logprobs"][index])
    )
    teacher = cls = None
    if with_teacher:
        teacher = TeacherPick(
            id=columns["t_id"][index], rank_in_base=columns["t_rank"][index], entropy=columns["t_entropy"][index]
        )
        cls = classify(teacher.id, columns["base_argmax"][index], teacher.rank_in_base)
    return TokenScore(
        pos=pos, id=token, text=base.token_text(token), logprob=columns["logprob"][index],
        entropy=columns["entropy"][index], rank=columns["rank"][index], top=top, teacher=teacher, cls=cls,
    )


def _mean(values: list[float]) -> float | None:
    return fmean(values) if values else None


def summarize(rollouts: Sequence[ScoredRollout], tau: Tau | None = None) -> Table2:
    """The paper's Table 2 over `rollouts`; a quantile τ is resolved over their pooled entropies."""
    tokens = [t for r in rollouts for t in r.tokens]
    entropies = [t.entropy for t in tokens]
    tau_nats = tau.resolve(entropies) if tau is not None and entropies else None
    above = (100.0 * sum(e > tau_nats for e in entropies) / len(entropies)) if tau_nats is not None else None
    base_fields = dict(
        sequences=len(rollouts), tokens=len(tokens), tau=tau_nats, above_tau_pct=above,
        mean_entropy=_mean(entropies),
    )
    judged = [t for t in tokens if t.cls is not None]
    if not judged:
        return Table2(**base_fields)
    reranked = [t for t in judged if t.cls == "reranked"]
    shifted = [t for t in judged if t.cls == "shifted"]
    unshifted = [t for t in judged if t.cls == "unshifted"]
    mean_reranked = _mean([t.entropy for t in reranked])
    mean_unshifted = _mean([t.entropy for t in unshifted])
    return Table2(
        **base_fields,
        reranked_pct=100.0 * len(reranked) / len(judged),
        shifted_pct=100.0 * len(shifted) / len(judged),
        unshifted_pct=100.0 * len(unshifted) / len(judged),
        mean_teacher_rank_reranked=_mean([t.teacher.rank_in_base for t in reranked]),
        mean_entropy_reranked=mean_reranked,
        mean_entropy_unshifted=mean_unshifted,
        entropy_ratio=(mean_reranked / mean_unshifted) if mean_reranked is not None and mean_unshifted else None,
    )


@dataclass(frozen=True)
class GateQuality:
    """How well the entropy gate H > τ finds the teacher's disagreements."""

    tau: float
    gated: int
    disagreements: int
    hits: int
    precision: float | None
    recall: float | None


def gate_quality(tokens: Sequence[TokenScore], tau_nats: float) -> GateQuality:
    """Precision and recall of `entropy > τ` against `class != unshifted`."""
    gated = {t.pos for t in tokens if t.entropy > tau_nats}
    disagree = {t.pos for t in tokens if t.cls not in (None, "unshifted")}
    hits = len(gated & disagree)
    return GateQuality(
        tau=tau_nats, gated=len(gated), disagreements=len(disagree), hits=hits,
        precision=hits / len(gated) if gated else None,
        recall=hits / len(disagree) if disagree else None,
    )
