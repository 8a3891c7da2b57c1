"""Training and sampling throughput, measured side by side in one run: ratios, not asserts.

1. One sequence end to end through ReasonMaxxer (the adapter-off base pass that gives the gate's entropies and
   the anchor's base rows, then the training step) ÷ a plain LoRA cross-entropy step on the same sequence, same
   adapter, same optimizer.
2. Rollout sampling (engine.core.backends.hf over engine.core.decode) ÷ HF `generate`, same prompt and settings.
3. A projection of the paper's setting (1,000 sequences, a 1.5B model) from the measured throughput.

Usage: python benchmarks/bench_train.py [--base demo] [--reps 6] [--threads 2] [--out benchmarks/results_train.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAPER_SEQUENCES = 1000
PAPER_PARAMS = 1.54e9
"""Qwen2.5-1.5B parameters."""
PAPER_TOKENS_PER_SEQUENCE = 700
"""Assumed prompt + completion length for the projection (a ~100-token prompt and ~600-token solution)."""


def _median_ratio(fast: list[float], slow: list[float]) -> float:
    return statistics.median(slow) / statistics.median(fast)


def _abba(sides: dict, reps: int) -> dict[str, list[float]]:
    """Seconds per call of each side: one warm-up call each, then `reps` rounds of A B, B A, A B, ..."""
    names = list(sides)
    for fn in sides.values():
        fn(0)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            sides[name](rep + 1)
            times[name].append(time.perf_counter() - t0)
            print(f"{name}: {times[name][-1]:.2f} s", flush=True)
    return times


def bench_steps(base: str, prompt_len: int, completion_len: int, reps: int) -> dict:
    """One sequence end to end (the base pass, then the ReasonMaxxer step) against a plain LoRA CE step."""
    import torch

    from engine.core.config import ModelSpec
    from engine.core.models import load_model
    from engine.core.scoring import hidden_states
    from engine.recipes.basepass import ChunkedHead
    from engine.recipes.train import Example, TrainSpec, _Sequence, _sequence_backward, lora_model

    loaded = load_model(ModelSpec(base))
    params_total = sum(p.numel() for p in loaded.core.parameters())
    rng = random.Random(0)
    vocab = loaded.vocab_size
    ids = tuple(rng.randrange(100, vocab) for _ in range(prompt_len + completion_len))
    tensor = torch.tensor([ids])
    spec = TrainSpec("unused.jsonl")
    model = lora_model(loaded.module, spec, base)
    model.eval()
    # As in a run: one ChunkedHead for the base pass over every sequence, one for the steps.
    base_head = ChunkedHead(model.get_base_model(), spec.chunk_elements)
    step_head = ChunkedHead(model.get_base_model(), spec.chunk_elements)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    # About 5% decision points, the paper's τ = 1.4 rate on Qwen2.5-1.5B.
    entropies = tuple(2.0 if rng.random() < 0.05 else 0.5 for _ in range(completion_len))
    seq = _Sequence(Example("p", 0, ids, prompt_len, 1.0, True, entropies), 1.0, "all", loaded.device)
    parts: dict[str, list[float]] = {"base pass": [], "step": []}

    def base_pass():
        with torch.inference_mode(), model.disable_adapter():
            h = hidden_states(model, tensor, torch.ones_like(tensor))[0, :-1]
            found = base_head.base_rows(h, tensor[0, 1:])
        return found

    def end_to_end(_rep: int) -> None:
        t0 = time.perf_counter()
        found = base_pass()
        t1 = time.perf_counter()
        _sequence_backward(model, step_head, seq, 1.0, spec, 1.0, found)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        parts["base pass"].append(t1 - t0)
        parts["step"].append(time.perf_counter() - t1)

    def plain_lora_ce(_rep: int) -> None:
        model(input_ids=seq.ids, labels=seq.ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = _abba({"reasonmaxxer end to end (base pass + step)": end_to_end,
                   "plain LoRA cross-entropy step": plain_lora_ce}, reps)
    parts = {name: values[1:] for name, values in parts.items()}  # drop the warm-up call
    return {"tokens": len(ids), "params": params_total, "times": times, "parts": parts,
            "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}


def bench_sampling(base: str, k: int, max_new_tokens: int, reps: int) -> dict:
    import torch

    from engine.core.backends import SampleRequest
    from engine.core.backends.hf import HFSampler
    from engine.core.config import ModelSpec
    from engine.core.prompts import prompt_ids

    sampler = HFSampler(ModelSpec(base), temperature=0.6, top_p=0.95, max_new_tokens=max_new_tokens)
    model = sampler.model
    prompt = prompt_ids(model.tokenizer, "Sam has 4 pencils and gets 3 more. How many pencils does Sam have now?",
                        "auto")
    eos = model.eos_ids
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else min(eos)

    def ours(seed: int) -> int:
        samples = sampler.sample([SampleRequest(tuple(prompt), k, seed)])[0]
        return sum(len(s.completion_ids) for s in samples)

    def generate(seed: int) -> int:
        torch.manual_seed(seed)
        ids = torch.tensor([prompt] * k)
        with torch.inference_mode():
            out = model.module.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.6,
                                        top_p=0.95, top_k=0, max_new_tokens=max_new_tokens, pad_token_id=pad)
        count = 0
        for row in out[:, len(prompt):].tolist():
            for token in row:
                count += 1
                if token in eos:
                    break
        return count

    rates: dict[str, list[float]] = {"rmx sampler (engine.core.decode)": [], "HF generate": []}
    ours(0), generate(0)  # warm-up
    sides = (("rmx sampler (engine.core.decode)", ours), ("HF generate", generate))
    for rep in range(reps):  # A B, B A, ...: drift in machine load hits both sides alike
        for name, fn in (sides if rep % 2 == 0 else sides[::-1]):
            t0 = time.perf_counter()
            count = fn(rep + 1)
            rates[name].append(count / (time.perf_counter() - t0))
            print(f"{name}: {rates[name][-1]:.1f} tok/s", flush=True)
    return {"k": k, "max_new_tokens": max_new_tokens, "rates": rates}


def _uptime() -> str:
    import subprocess

    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="demo")
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 keeps torch's default)")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--completion-len", type=int, default=384)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--skip-sampling", action="store_true", help="measure the training sides only")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_train.md"))
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    uptime_start = _uptime()
    steps = bench_steps(args.base, args.prompt_len, args.completion_len, args.reps)
    print({name: [round(t, 2) for t in times] for name, times in steps["times"].items()}, flush=True)
    sampling = None if args.skip_sampling else bench_sampling(args.base, args.k, args.max_new_tokens, args.reps)
    uptime_end = _uptime()

    med = {name: statistics.median(t) for name, t in steps["times"].items()}
    plain = med["plain LoRA cross-entropy step"]
    whole = med["reasonmaxxer end to end (base pass + step)"]
    part = {name: statistics.median(t) for name, t in steps["parts"].items()}
    tok_s = steps["tokens"] / whole
    # Per-token cost grows with parameters; this CPU's measured rate is scaled by the parameter ratio.
    scale = PAPER_PARAMS / steps["params"]
    paper_tokens = PAPER_SEQUENCES * PAPER_TOKENS_PER_SEQUENCE
    projected_h = paper_tokens / tok_s * scale / 3600

    lines = [
        "# Training and sampling throughput",
        "",
        f"Measured by `python benchmarks/bench_train.py --base {args.base} --reps {args.reps}"
        + (f" --threads {args.threads}" if args.threads else "") + "`, all numbers in one run.",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, model dtype {steps['dtype']}.",
        f"`uptime` at the start: {uptime_start}",
        f"`uptime` at the end: {uptime_end}",
        f"Each side had one warm-up call, then {args.reps} calls interleaved A B, B A, A B, ... so that drift in "
        "machine load hits both sides alike; every figure is the median. Ratios are the result; absolute times "
        "depend on the machine's load.",
        "",
        f"## Training, one sequence end to end ({steps['tokens']} tokens: {args.prompt_len} prompt + "
        f"{args.completion_len} completion, LoRA r=32 on q/k/v/o, ~5% decision points)",
        "",
        "| side | seconds | tok/s | ÷ plain LoRA CE step (tok/s ratio) | runs (s) |",
        "|---|---:|---:|---:|---|",
    ]
    for name, seconds in med.items():
        runs = ", ".join(f"{t:.2f}" for t in steps["times"][name])
        lines.append(f"| {name} | {seconds:.2f} | {steps['tokens'] / seconds:.0f} | {plain / seconds:.2f} | {runs} |")
    lines += [
        "",
        f"Inside the end-to-end side: the base pass (adapter off, no grad: the gate's entropies and the anchor's "
        f"base rows in one forward) took {part['base pass']:.2f} s and the training step {part['step']:.2f} s "
        f"(medians; the step alone is {plain / part['step']:.2f}× the plain CE step's rate). In a one-epoch run "
        "every sequence pays both once, so the end-to-end ratio is the one to read.",
        "",
    ]
    if sampling is not None:
        rates = {name: statistics.median(r) for name, r in sampling["rates"].items()}
        lines += [
            f"## Rollout sampling (K={sampling['k']} samples of one prompt, temperature 0.6, top-p 0.95, "
            f"up to {sampling['max_new_tokens']} new tokens)",
            "",
            "| sampler | tok/s | ÷ HF generate | runs (tok/s) |",
            "|---|---:|---:|---|",
        ]
        for name, rate in rates.items():
            runs = ", ".join(f"{r:.1f}" for r in sampling["rates"][name])
            lines.append(f"| {name} | {rate:.1f} | {rate / rates['HF generate']:.2f} | {runs} |")
    lines += [
        "",
        "## Projection of the paper's setting (a projection, not a measurement)",
        "",
        f"{PAPER_SEQUENCES} training sequences of ~{PAPER_TOKENS_PER_SEQUENCE} tokens on a 1.5B model "
        f"({PAPER_PARAMS / 1e9:.2f}B parameters), one epoch, scaled from the measured end-to-end rate on this "
        f"machine ({tok_s:.0f} tok/s on {steps['params'] / 1e6:.0f}M parameters) by the parameter ratio "
        f"({scale:.1f}×): {projected_h:.1f} h on this machine, base pass included. The cached base rows take "
        f"{paper_tokens * 1536 * 4 / 1e9:.1f} GB of disk (fp32, hidden size 1536).",
        "",
        "The paper reports minutes of single-GPU training for this setting; a CPU is not where it is meant to run.",
        "",
    ]
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
