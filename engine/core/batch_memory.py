"""How many lockstep rows fit in memory: CUDA free memory on a GPU, available RAM on a CPU.

The formula (README, "Batch size"): a row holds, for each model that decodes it (the base, and
the teacher when it follows), its KV cache over the longest row of the batch, since rows are
left-padded to one width, plus a few fp32 vocabulary-wide buffers for its logits:

    row bytes = Σ_models 2 · layers · kv_heads · head_dim · dtype bytes · (longest prompt + max_new_tokens)
              + Σ_models LOGIT_BYTES · vocabulary
    rows that fit = ⌊HEADROOM · free bytes / row bytes⌋

The default batch is the smaller of that, DEFAULT_CAP and the number of rows to decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from engine.core.errors import RmxError
from engine.core.models import LoadedModel

HEADROOM = 0.8
"""The share of free memory rows may take; the rest absorbs prefill activations and allocator slack."""
LOGIT_BYTES = 32
"""Bytes per vocabulary entry a row needs at each step: fp32 logits, the exp pass, top-k and sampling sorts."""
DEFAULT_CAP = 64
"""The largest default batch: past it a GPU step is no longer bound by reading the weights, so rows gain little."""


@dataclass(frozen=True)
class BatchFit:
    """What one row costs and how many fit in the memory free on the models' device."""

    row_bytes: int
    """Bytes one row needs (formula in the module docstring)."""
    free_bytes: int
    """Free memory seen: CUDA free plus cached-but-unused on a GPU, MemAvailable on a CPU."""
    where: str
    """Which memory was measured, for messages: 'free CUDA memory' or 'available RAM'."""
    tokens: int
    """The row length the estimate is for: longest prompt + max_new_tokens, at most the context."""

    @property
    def fits(self) -> int:
        """The largest batch size that fits."""
        return int(HEADROOM * self.free_bytes // max(1, self.row_bytes))

    def describe(self) -> str:
        return (f"{self.fits} rows of {self.tokens} tokens fit in {_gib(self.free_bytes)} of {self.where} "
                f"({_gib(self.row_bytes)} per row, {HEADROOM:.0%} of it used)")


def _gib(count: int) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**27 else f"{count / 2**20:.1f} MiB"


def kv_bytes_per_token(view: LoadedModel) -> int:
    """Bytes one token adds to this model's KV cache: keys and values over every layer and KV head."""
    config = view.core.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = int(config.num_hidden_layers)
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    element = next(view.core.parameters()).element_size()
    return 2 * layers * kv_heads * head_dim * element


def row_bytes(models: Sequence[LoadedModel], tokens: int) -> int:
    """What one row of `tokens` tokens costs across the models that decode it."""
    return sum(kv_bytes_per_token(view) * tokens + LOGIT_BYTES * view.vocab_size for view in models)


def free_bytes(device: str) -> tuple[int, str]:
    """(bytes free, what was measured) on `device`."""
    if str(device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        # Blocks torch's allocator holds but no tensor uses are free to rows too.
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached), "free CUDA memory"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "available RAM"
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "available RAM"


def measure_fit(models: Sequence[LoadedModel], longest_prompt: int, max_new_tokens: int) -> BatchFit:
    """How many rows of this length fit now, on the first model's device."""
    tokens = min(longest_prompt + max_new_tokens, min(view.context_length for view in models))
    free, where = free_bytes(models[0].device)
    return BatchFit(row_bytes=row_bytes(models, tokens), free_bytes=free, where=where, tokens=tokens)


def choose_batch_size(requested: int | None, fit: BatchFit, rows: int) -> int:
    """The batch to run: the one asked for if it fits, else a one-line error naming the largest that does.

    None picks the default: as many as fit, at most DEFAULT_CAP and at most `rows`.
    """
    if fit.fits < 1:
        raise RmxError(f"not even one row fits: {fit.describe()}; free memory or lower --max-new-tokens")
    if requested is None:
        return max(1, min(fit.fits, DEFAULT_CAP, rows))
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
        raise RmxError(f"--batch-size must be ≥ 1, got {requested}: the largest that fits is {fit.fits} ({fit.describe()})")
    if requested > fit.fits:
        raise RmxError(f"--batch-size {requested} does not fit: the largest that fits is {fit.fits} ({fit.describe()})")
    return requested
