"""A logits block's per-row log-normaliser and chosen logits in one autograd node that exponentiates once."""

from __future__ import annotations

import torch


class _Normalise(torch.autograd.Function):
    """lse(z) and z at the given ids per row. torch's logsumexp exponentiates the block again in its backward, and
    the gather's backward adds a dense zero block; here the forward's exponentials, kept in one fp32 block, become
    the gradient in place."""

    @staticmethod
    def forward(ctx, logits, targets):
        block = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
        block.copy_(logits)
        picked = block.gather(1, targets)
        top = block.amax(dim=-1, keepdim=True)
        block.sub_(top).exp_()
        total = block.sum(dim=-1)
        ctx.save_for_backward(block, total, targets)
        ctx.dtype = logits.dtype
        return total.log() + top[:, 0], picked

    @staticmethod
    def backward(ctx, grad_lse, grad_picked):
        block, total, targets = ctx.saved_tensors
        # One backward per graph (the trainer's chunks never retain it), so the saved block can become the gradient.
        grad = block.mul_((grad_lse / total)[:, None])
        grad.scatter_add_(1, targets, grad_picked)
        return grad.to(ctx.dtype), None


def normalise(logits, ids):
    """(lse, the logits at `ids`) of a (rows, vocab) block: (rows,) and (rows, k) fp32 for (rows, k) `ids`,
    differentiable once in `logits`."""
    return _Normalise.apply(logits, ids)
