"""Scoring cost: time ÷ one bare forward pass (T=512, 4096), and peak extra memory vs the naive softmax path."""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def _load(dtype: str):
    from engine.core.config import ModelSpec
    from engine.core.models import load_model

    return load_model(ModelSpec("demo", dtype=dtype))


def _ids(model, length: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    return torch.randint(100, model.vocab_size, (1, length), generator=generator)


def time_ratio(length: int, repeats: int, dtype: str) -> dict:
    import torch

    from engine.core.scoring import score

    model = _load(dtype)
    ids = _ids(model, length)
    prompt, completion = ids[0, :1].tolist(), ids[0, 1:].tolist()

    def bare():
        with torch.inference_mode():
            model.core(ids).logits

    def scored():
        score(model, [(prompt, completion)])

    bare(), scored()  # warm-up
    bare_times, score_times = [], []
    for _ in range(repeats):  # interleaved so drift hits both alike
        start = time.perf_counter(); bare(); bare_times.append(time.perf_counter() - start)
        start = time.perf_counter(); scored(); score_times.append(time.perf_counter() - start)
    bare_s, score_s = statistics.median(bare_times), statistics.median(score_times)
    return {"T": length, "bare_forward_s": bare_s, "scoring_s": score_s, "ratio": score_s / bare_s}


def peak_memory(mode: str, length: int, dtype: str) -> dict:
    """Run in a child process: peak RSS growth of one scoring call over a body-only forward."""
    import torch

    from engine.core.scoring import hidden_states, score

    model = _load(dtype)
    ids = _ids(model, length)
    with torch.inference_mode():
        hidden_states(model.core, ids, torch.ones_like(ids))  # the body's own peak is common to both paths
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        if mode == "naive":
            probs = model.core(ids).logits.float().softmax(-1)
            entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
            torch.topk(probs, 5, -1)
            del entropy, probs
        else:
            score(model, [(ids[0, :1].tolist(), ids[0, 1:].tolist())])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "T": length, "extra_peak_mb": (after - before) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "T"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(peak_memory(args.child[0], int(args.child[1]), args.dtype)))
        return
    import torch

    print(f"# scoring benchmark — demo model (SmolLM2-135M, V=49152), dtype={args.dtype}, "
          f"threads={torch.get_num_threads()}")
    for length in (512, 4096):
        result = time_ratio(length, args.repeats, args.dtype)
        print(f"T={length:5d}  bare forward {result['bare_forward_s']:.3f}s  scoring {result['scoring_s']:.3f}s  "
              f"ratio {result['ratio']:.3f}x")
    memory = {}
    for mode in ("naive", "rmx"):
        out = subprocess.run([sys.executable, __file__, "--dtype", args.dtype, "--child", mode, "4096"],
                             check=True, capture_output=True, text=True).stdout
        memory[mode] = json.loads(out.strip().splitlines()[-1])["extra_peak_mb"]
    print(f"T= 4096  peak extra memory: naive logits.float().softmax(-1) {memory['naive']:.0f} MB, "
          f"rmx chunked scoring {memory['rmx']:.0f} MB  ({memory['naive'] / max(memory['rmx'], 1):.1f}x less)")


if __name__ == "__main__":
    main()
