"""The adapter-off base pass: the frozen base at every prediction row, reduced through a chunked head and kept on disk."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from engine.core.io import commit_folder

BASE_PASS = "base_pass"
BASE_PASS_FORMAT = 4
"""Bumped when the base pass stores something else (or the same quantities in other bits), so an older folder is
recomputed rather than misread."""


@dataclass(frozen=True)
class BaseRows:
    """The frozen base at a sequence's prediction rows, reduced to what the loss needs from it.

    KL(p_b ‖ p_θ) = Σ p_b log p_b − Σ p_b z_θ + lse(z_θ), and when the head's logit transform is linear
    Σ_v p_b(v) z_θ(v) = transform(h_θ · Σ_v p_b(v) W_v + Σ_v p_b(v) b_v). So one row of the base is its entropy,
    its expected head row e = Σ p_b W (hidden-size floats) and its expected bias: the step never projects the
    base through the head again. A soft-capping head is not linear; for it the base's hidden states are kept
    and the step re-projects them (`hidden`), as before.
    """

    entropy: object
    """(rows,) fp32 base entropy H_b = −Σ p_b log p_b."""
    bias: object
    """(rows,) fp32 Σ_v p_b(v)·b_v, the head bias under the base (0 without a bias)."""
    target_logp: object
    """(rows,) fp32 base log p of the row's next token (for Δlog p)."""
    expected: object | None
    """(rows, hidden) fp32 Σ_v p_b(v)·W_v, or None with a non-linear logit transform."""
    hidden: object | None
    """(rows, hidden) base final hidden states, only with a non-linear logit transform."""

    def select(self, rows) -> "BaseRows":
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return BaseRows(self.entropy[rows], self.bias[rows], self.target_logp[rows], pick(self.expected),
                        pick(self.hidden))


class ChunkedHead:
    """A model's output head taken `rows` prediction rows at a time, so that no positions × vocab block larger than
    `chunk_elements` fp32 values is alive: the step projects the policy through it, and `base_rows` reduces the
    base to `BaseRows`.

    One instance serves a whole base pass or training run. It keeps the head's weight in fp32 (the expected head
    rows are summed in fp32) and two chunk-sized fp32 scratch blocks, reused by every chunk of every sequence: a
    fresh 50–200 MB block per chunk costs as much in page faults as the arithmetic done in it.
    """

    def __init__(self, core, chunk_elements: int):
        from engine.core.scoring import logit_transform, logit_transform_is_linear

        self.head = core.get_output_embeddings()
        self.transform = logit_transform(core.config)
        self.linear = logit_transform_is_linear(core.config)
        self.rows = max(1, chunk_elements // int(self.head.weight.shape[0]))
        self._weight = self._bias = None
        self._scratch = None

    def logits(self, hidden):
        """The head's logits for a block of at most `rows` hidden states, in the model's dtype."""
        return self.transform(self.head(hidden))

    def base_rows(self, hidden, targets) -> BaseRows:
        """The base's `BaseRows` from its final hidden states at prediction rows (row t predicts `targets[t]`).

        The chunk boundaries are part of the result's bits: the base pass and a recomputing step both reduce
        through a `ChunkedHead` of the same `chunk_elements`, so a cached run and a recomputing one train the same
        adapter bit for bit.
        """
        import torch

        if self.linear and self._weight is None:
            self._weight = self.head.weight.float()
            head_bias = getattr(self.head, "bias", None)
            self._bias = None if head_bias is None else head_bias.float()
        entropy, bias, target_logp, expected = [], [], [], []
        for a in range(0, hidden.shape[0], self.rows):
            raw = self.logits(hidden[a:a + self.rows])
            logits, weights = self._blocks(raw.shape[0], raw.shape[1], hidden.device)
            logits.copy_(raw)
            del raw
            # Centred on the row max (lse and E[z] are large for real models: their fp32 difference would cancel
            # ~1e-3 nats); one exp pass then serves the normaliser, the entropy and the expected head row.
            logits.sub_(logits.amax(dim=-1, keepdim=True))
            torch.exp(logits, out=weights)
            total = weights.sum(dim=-1)
            lse = total.log()
            target_logp.append(logits.gather(1, targets[a:a + self.rows, None])[:, 0] - lse)
            weighted = logits.mul_(weights).sum(dim=-1)  # Σ w·z; the centred logits are not needed after this
            entropy.append((lse - weighted / total).clamp_min(0.0))
            if self.linear:
                expected.append((weights @ self._weight) / total[:, None])
                bias.append((weights @ self._bias) / total if self._bias is not None else torch.zeros_like(lse))
            else:
                bias.append(torch.zeros_like(lse))
        cat = lambda parts: torch.cat(parts) if parts else torch.zeros(0, device=hidden.device)  # noqa: E731
        return BaseRows(cat(entropy), cat(bias), cat(target_logp), torch.cat(expected) if self.linear else None,
                        None if self.linear else hidden)

    def _blocks(self, rows: int, vocab: int, device):
        import torch

        stale = (self._scratch is None or self._scratch.shape[1] < rows * vocab or self._scratch.device != device
                 or self._scratch.is_inference() != torch.is_inference_mode_enabled())
        if stale:
            self._scratch = torch.empty((2, rows * vocab), dtype=torch.float32, device=device)
        return (self._scratch[0, :rows * vocab].view(rows, vocab), self._scratch[1, :rows * vocab].view(rows, vocab))


class BaseStore:
    """The base pass on disk: per sequence, the base's `BaseRows` at every prediction row (the expected head rows,
    or the hidden states for a soft-capping head, only when kept) and its entropy at every completion token.
    Memory-mapped, so RAM holds one sequence."""

    def __init__(self, folder: Path):
        import numpy as np
        import torch

        index = json.loads((folder / "index.json").read_text())
        self.rows = index["rows"]
        self.starts = index["starts"]
        self.dtype = getattr(torch, index["dtype"]) if index["dtype"] else None
        self.stats = np.load(folder / "stats.npy", mmap_mode="r")
        self.expected = np.load(folder / "expected.npy", mmap_mode="r") if index["kept"] == "expected" else None
        self.hidden = np.load(folder / "hidden.npy", mmap_mode="r") if index["kept"] == "hidden" else None

    def entropies(self, index: int) -> list[float]:
        """Base entropy at each completion token of sequence `index` (the gate)."""
        return self.stats[self.starts[index]:self.rows[index + 1], 0].tolist()

    def base_rows(self, index: int, device: str) -> BaseRows | None:
        """Sequence `index`'s `BaseRows`, exactly as the base pass computed them; None when nothing was kept."""
        import numpy as np
        import torch

        if self.expected is None and self.hidden is None:
            return None
        a, b = self.rows[index], self.rows[index + 1]
        stats = torch.from_numpy(np.array(self.stats[a:b])).to(device)
        expected = hidden = None
        if self.expected is not None:
            expected = torch.from_numpy(np.array(self.expected[a:b])).to(device)
        else:
            block = torch.from_numpy(np.array(self.hidden[a:b]))
            hidden = (block if self.dtype == torch.float32 else block.view(self.dtype)).to(device)
        return BaseRows(stats[:, 0], stats[:, 1], stats[:, 2], expected, hidden)


def run_base_pass(loaded, sequences: list[tuple[tuple[int, ...], int]], final: Path, keep: bool,
                  chunk_elements: int) -> BaseStore:
    """One forward of the frozen base per sequence: its `BaseRows`, whose completion entropies are the gate.

    With `keep` the rows the anchor needs are stored too, so that no step runs the base again. Written under a
    temporary name and renamed into place. A folder made from the same base and sequences is reused as is (a
    resumed run, or the next τ of a sweep), so the gate and the anchor target are the same bits as before.
    """
    import numpy as np
    import torch

    from engine.core.scoring import hidden_states

    spec = loaded.spec
    digest = hashlib.sha256(json.dumps([BASE_PASS_FORMAT, spec.source, spec.dtype, spec.revision, keep,
                                        chunk_elements, sequences]).encode())
    fingerprint = digest.hexdigest()
    if (final / "index.json").exists():
        if json.loads((final / "index.json").read_text()).get("fingerprint") == fingerprint:
            return BaseStore(final)
        shutil.rmtree(final)
    head = ChunkedHead(loaded.core, chunk_elements)
    width = int(head.head.weight.shape[1])
    rows = [0]
    starts = []
    for ids, prompt_len in sequences:
        starts.append(rows[-1] + prompt_len - 1)
        rows.append(rows[-1] + len(ids) - 1)
    dtype = next(loaded.core.parameters()).dtype
    kept = None if not keep else "expected" if head.linear else "hidden"

    def write(tmp: Path) -> None:
        stats = np.lib.format.open_memmap(tmp / "stats.npy", mode="w+", dtype=np.float32, shape=(rows[-1], 3))
        expected = hidden = None
        if kept == "expected":
            expected = np.lib.format.open_memmap(tmp / "expected.npy", mode="w+", dtype=np.float32,
                                                 shape=(rows[-1], width))
        elif kept == "hidden":
            stored = np.float32 if dtype == torch.float32 else np.uint16  # bf16/fp16 kept as raw bits
            hidden = np.lib.format.open_memmap(tmp / "hidden.npy", mode="w+", dtype=stored, shape=(rows[-1], width))
        for index, (ids, _) in enumerate(sequences):
            tensor = torch.tensor([ids], device=loaded.device)
            a, b = rows[index], rows[index + 1]
            with torch.inference_mode(), loaded.active() as module:
                h = hidden_states(module, tensor, torch.ones_like(tensor))[0, :-1]
                found = head.base_rows(h, tensor[0, 1:])
                stats[a:b] = torch.stack([found.entropy, found.bias, found.target_logp], 1).cpu().numpy()
                if expected is not None:
                    expected[a:b] = found.expected.cpu().numpy()
                if hidden is not None:
                    block = h.cpu() if dtype == torch.float32 else h.cpu().view(torch.int16)
                    hidden[a:b] = block.numpy().view(hidden.dtype)
        for array in (stats, expected, hidden):
            if array is not None:
                array.flush()
        index = {"fingerprint": fingerprint, "rows": rows, "starts": starts, "kept": kept,
                 "dtype": str(dtype).replace("torch.", "")}
        (tmp / "index.json").write_text(json.dumps(index))

    commit_folder(write, final)
    return BaseStore(final)
