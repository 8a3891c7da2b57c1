"""Training and sampling throughput, measured side by side in one run: ratios, not asserts.

1. A ReasonMaxxer step (cached base pass, and recomputing the base) ÷ a plain LoRA cross-entropy step on
   the same sequence, same adapter, same optimizer.
2. Rollout sampling (engine.core.backends.hf over engine.core.decode) ÷ HF `generate`, same prompt and settings.
3. A projection of the paper's setting (1,000 sequences, a 1.5B model) from the measured throughput.

Usage: python benchmarks/bench_train.py [--base demo] [--reps 3] [--threads 2] [--out benchmarks/results_train.md]
"""

from __future__ import annotations

import argparse
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


def bench_steps(base: str, prompt_len: int, completion_len: int, reps: int) -> dict:
    import torch

    from engine.core.config import ModelSpec
    from engine.core.models import load_model
    from engine.core.scoring import logit_transform, hidden_states
    from engine.recipes.train import Example, TrainSpec, _Sequence, _sequence_backward, lora_model

    loaded = load_model(ModelSpec(base))
    params_total = sum(p.numel() for p in loaded.core.parameters())
    rng = random.Random(0)
    vocab = loaded.vocab_size
    ids = tuple(rng.randrange(100, vocab) for _ in range(prompt_len + completion_len))
    tensor = torch.tensor([ids])
    with torch.inference_mode():
        base_rows = hidden_states(loaded.module, tensor, torch.ones_like(tensor))[0, :-1].clone()
    spec = TrainSpec("unused.jsonl")
    model = lora_model(loaded.module, spec, base)
    model.eval()
    core = model.get_base_model()
    head, transform = core.get_output_embeddings(), logit_transform(core.config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    # About 5% decision points, the paper's τ = 1.4 rate on Qwen2.5-1.5B.
    entropies = tuple(2.0 if rng.random() < 0.05 else 0.5 for _ in range(completion_len))
    seq = _Sequence(Example("p", 0, ids, prompt_len, 1.0, True, entropies), 1.0, "all", loaded.device)
    step_rows = max(1, spec.chunk_elements // vocab)

    def reasonmaxxer_cached():
        _sequence_backward(model, head, transform, seq, 1.0, spec, 1.0, step_rows, base_rows)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def reasonmaxxer_recompute():
        _sequence_backward(model, head, transform, seq, 1.0, spec, 1.0, step_rows)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def plain_lora_ce():
        model(input_ids=seq.ids, labels=seq.ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def base_pass():
        with torch.inference_mode():
            hidden_states(model, tensor, torch.ones_like(tensor))

    runs = {"reasonmaxxer (cached base)": reasonmaxxer_cached, "reasonmaxxer (base recomputed)": reasonmaxxer_recompute,
            "plain LoRA cross-entropy": plain_lora_ce}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(reps):  # interleaved, so drift in machine load hits all three alike
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    with model.disable_adapter():
        base_pass()
        pass_times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            base_pass()
            pass_times.append(time.perf_counter() - t0)
    tokens = len(ids)
    return {"tokens": tokens, "params": params_total, "times": times, "base_pass": pass_times,
            "dtype": str(next(core.parameters()).dtype).replace("torch.", "")}


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
    for rep in range(reps):
        for name, fn in (("rmx sampler (engine.core.decode)", ours), ("HF generate", generate)):
            t0 = time.perf_counter()
            count = fn(rep + 1)
            rates[name].append(count / (time.perf_counter() - t0))
    return {"k": k, "max_new_tokens": max_new_tokens, "rates": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="demo")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 keeps torch's default)")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--completion-len", type=int, default=384)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_train.md"))
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import os

        load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    steps = bench_steps(args.base, args.prompt_len, args.completion_len, args.reps)
    print({name: [round(t, 2) for t in times] for name, times in steps["times"].items()}, flush=True)
    sampling = bench_sampling(args.base, args.k, args.max_new_tokens, args.reps)

    med = {name: statistics.median(t) for name, t in steps["times"].items()}
    plain = med["plain LoRA cross-entropy"]
    cached = med["reasonmaxxer (cached base)"]
    tok_s = steps["tokens"] / cached
    pass_s = statistics.median(steps["base_pass"])
    # Per-token cost grows with parameters; this CPU's measured rate is scaled by the parameter ratio.
    scale = PAPER_PARAMS / steps["params"]
    paper_tokens = PAPER_SEQUENCES * PAPER_TOKENS_PER_SEQUENCE
    projected_train_h = paper_tokens / tok_s * scale / 3600
    projected_pass_h = paper_tokens / (steps["tokens"] / pass_s) * scale / 3600
    rates = {name: statistics.median(r) for name, r in sampling["rates"].items()}

    lines = [
        "# Training and sampling throughput",
        "",
        f"Measured by `python benchmarks/bench_train.py --base {args.base} --reps {args.reps}"
        + (f" --threads {args.threads}" if args.threads else "") + "`, all numbers in one run.",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, model dtype {steps['dtype']}, load average at start {load}.",
        "Each row is the median of the repetitions; the steps were interleaved so that changes in machine load "
        "hit every variant alike. Ratios are the result; absolute times depend on the machine's load.",
        "",
        f"## Training step ({steps['tokens']} tokens: {args.prompt_len} prompt + {args.completion_len} completion, "
        f"LoRA r=32 on q/k/v/o, ~5% decision points)",
        "",
        "| step | seconds | tok/s | ÷ plain LoRA CE step (tok/s ratio) |",
        "|---|---:|---:|---:|",
    ]
    for name, seconds in med.items():
        lines.append(f"| {name} | {seconds:.2f} | {steps['tokens'] / seconds:.0f} | {plain / seconds:.2f} |")
    lines += [
        "",
        f"The cached-base step is the default (`cache_base`): the base pass that computes the gate entropies also "
        f"stores the base's final hidden states, {pass_s:.2f} s per sequence once, before training "
        f"(one forward, {steps['tokens'] / pass_s:.0f} tok/s).",
        "",
        f"## Rollout sampling (K={sampling['k']} samples of one prompt, temperature 0.6, top-p 0.95, "
        f"up to {sampling['max_new_tokens']} new tokens)",
        "",
        "| sampler | tok/s | ÷ HF generate |",
        "|---|---:|---:|",
    ]
    for name, rate in rates.items():
        lines.append(f"| {name} | {rate:.1f} | {rate / rates['HF generate']:.2f} |")
    lines += [
        "",
        "## Projection of the paper's setting (a projection, not a measurement)",
        "",
        f"{PAPER_SEQUENCES} training sequences of ~{PAPER_TOKENS_PER_SEQUENCE} tokens on a 1.5B model "
        f"({PAPER_PARAMS / 1e9:.2f}B parameters), one epoch, scaled from the measured cached-base rate on this "
        f"machine ({tok_s:.0f} tok/s on {steps['params'] / 1e6:.0f}M parameters) by the parameter ratio "
        f"({scale:.1f}×):",
        "",
        f"- training: {projected_train_h:.1f} h on this machine",
        f"- base pass (entropies + hidden states): {projected_pass_h:.1f} h on this machine",
        f"- disk for the cached base states: {paper_tokens * 1536 * 2 / 1e9:.1f} GB in bf16 (hidden size 1536)",
        "",
        "The paper reports minutes of single-GPU training for this setting; a CPU is not where it is meant to run.",
        "",
    ]
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
