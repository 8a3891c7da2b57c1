"""Rollout sampling on the CPU: the paged backend vs the step decoder vs HF generate, interleaved in one run.

Usage (repository root): python benchmarks/bench_paged.py [--base demo] [--prompts 4] [--k 8] [--max-new-tokens 64]
    [--reps 3] [--threads 2] [--dtype float32] [--out benchmarks/results_paged.md]

The workload is a small rollout run: K samples (temperature 0.6, top-p 0.95) of each of a few
smoke-set prompts. The step decoder (--backend hf) and HF generate take one prompt's K samples per
batch, as rollouts run them; the paged backend takes every prompt in one continuously batched call.
Tokens are counted to each sample's EOS. The three run in turn each repetition, so load on a shared
machine hits them alike; the table gives medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="demo")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", help="model dtype (bf16 matmuls are slow on many CPUs)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_paged.md"))
    args = parser.parse_args()
    import torch

    from engine.core.backends import SampleRequest
    from engine.core.backends.hf import HFSampler
    from engine.core.backends.paged import PagedSampler
    from engine.core.config import ModelSpec
    from engine.core.data import load_problems
    from engine.core.models import load_model
    from engine.core.prompts import prompt_ids

    torch.set_num_threads(args.threads)
    load_at_start = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    model = load_model(ModelSpec(args.base, dtype=args.dtype))
    settings = dict(temperature=0.6, top_p=0.95, max_new_tokens=args.max_new_tokens)
    step = HFSampler(None, loaded=model, **settings)
    paged = PagedSampler(None, loaded=model, **settings)
    problems = load_problems("smoke", limit=args.prompts)
    requests = [SampleRequest(tuple(prompt_ids(model.tokenizer, p.problem, "auto")), args.k, seed=i)
                for i, p in enumerate(problems)]
    eos = model.eos_ids
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else min(eos)

    def step_decoder() -> int:
        return sum(len(s.completion_ids) for r in requests for s in step.sample([r])[0])

    def paged_backend() -> int:
        return sum(len(s.completion_ids) for group in paged.sample(requests) for s in group)

    def generate() -> int:
        total = 0
        for request in requests:
            torch.manual_seed(request.seed)
            ids = torch.tensor([list(request.prompt_ids)])
            with torch.inference_mode():
                out = model.module.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.6,
                                            top_p=0.95, top_k=0, max_new_tokens=args.max_new_tokens,
                                            num_return_sequences=args.k, pad_token_id=pad)
            for row in out[:, ids.shape[1]:].tolist():
                total += next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        return total

    runs = {"paged backend (--backend paged)": paged_backend, "step decoder (--backend hf)": step_decoder,
            "HF generate": generate}
    for name, fn in runs.items():
        t0 = time.perf_counter()
        fn()  # warm-up
        print(f"warm-up {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.reps):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            tokens = fn()
            rates[name].append(tokens / (time.perf_counter() - t0))
        print({name: [round(r, 1) for r in values] for name, values in rates.items()}, flush=True)
    load_at_end = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    med = {name: statistics.median(values) for name, values in rates.items()}
    base = med["HF generate"]
    lines = [
        "# Rollout sampling on the CPU: paged backend vs step decoder vs HF generate",
        "",
        f"Measured by `python benchmarks/bench_paged.py --base {args.base} --prompts {args.prompts} --k {args.k} "
        f"--max-new-tokens {args.max_new_tokens} --reps {args.reps} --threads {args.threads} --dtype {args.dtype}`, "
        "one run.",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other work "
        f"(load average {load_at_start} at start, {load_at_end} at end), torch {torch.__version__}, "
        f"{args.threads} threads, model {model.info().architecture} "
        f"{str(next(model.core.parameters()).dtype).replace('torch.', '')}.",
        f"Workload: {args.prompts} smoke prompts × K = {args.k} samples, temperature 0.6, top-p 0.95, up to "
        f"{args.max_new_tokens} new tokens. Step decoder and HF generate: one prompt's K samples per batch; "
        "paged: all prompts in one call. The three alternate each repetition; medians of "
        f"{args.reps}.",
        "",
        "| sampler | tok/s (median) | runs | ÷ HF generate |",
        "|---|---:|---|---:|",
    ]
    for name, rate in med.items():
        lines.append(f"| {name} | {rate:.1f} | {', '.join(f'{r:.1f}' for r in rates[name])} | {rate / base:.2f} |")
    lines += ["", "GPU figures pending: no GPU was lent to this session (see benchmarks/gpu_suite.py).", ""]
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
