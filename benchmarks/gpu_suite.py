"""The GPU suite: paper-scale throughput and memory of rmx's engine on random-weight models with real shapes, one run.

Usage (repository root): python benchmarks/gpu_suite.py --out DIR [--tiny] [--budget-s 420]

Models are built from configs (Qwen2.5-1.5B as base and as a second, independently drawn "teacher";
Qwen2.5-7B for the memory rows) in bf16 with SDPA, straight on the device: nothing comes from a hub,
and throughput and memory depend on shape, not on weights. Token ids stand in for text (an id
tokenizer), so no tokenizer files are needed either. Every ratio is measured side by side in this
one process, its two sides interleaved. `--tiny` runs the same code on small shapes on the CPU in
seconds (a CPU test runs it). Writes DIR/results_gpu.md and DIR/results_gpu.json.

The import path is torch, transformers, peft and numpy, plus rmx's engine modules that import
nothing else (checked at the end of the run and written to the JSON as `foreign_modules`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FORBIDDEN = ("gguf", "platformdirs", "typer", "rich", "textual", "textual_plotext", "math_verify",
             "latex2sympy2_extended", "fastapi", "uvicorn", "rmx_tui", "vllm")
"""rmx dependencies the GPU image lacks (it has torch, transformers, peft, numpy and what they pull in)."""

QWEN_1_5B = dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768)
QWEN_7B = dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
               intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False, max_position_embeddings=32768)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=512, tie_word_embeddings=True, max_position_embeddings=4096)


@dataclass(frozen=True)
class Sizes:
    """The workload of one run: the paper's shapes on a GPU, small ones for `--tiny`."""

    score_lengths: tuple[int, ...]
    fork_length: int
    greedy_tokens: int
    lockstep_tokens: int
    lockstep_batch: int
    rollout_prompts: int
    rollout_serial_prompts: int
    """Prompts the per-prompt samplers (step decoder, HF generate) run: their tok/s does not depend on the count."""
    rollout_k: int
    rollout_tokens: int
    train_tokens: int
    prompt: int
    reps: int


GPU_SIZES = Sizes((4096, 32000), 8192, 256, 128, 64, 32, 2, 20, 1000, 2048, 256, 3)
TINY_SIZES = Sizes((128, 512), 256, 12, 8, 8, 4, 1, 4, 12, 64, 16, 1)

# The paper's workloads for the projection table.
ROLLOUT_TOKENS = 150 * 20 * 3000
"""Rollouts for the training pool: 150 problems × K=20 × ~3k tokens."""
TRAIN_SEQUENCES, TRAIN_SEQUENCE_TOKENS = 1000, 3000
FIGURE2_PROBLEMS, FIGURE2_TOKENS = 500, 3000
"""MATH-500, five modes, ≤ 4k tokens (3k assumed on average)."""
EVAL_SAMPLES = 500 + 1319 + 272 + 675 + 30 * 8 + 40 * 8
"""Table 3: MATH-500, GSM8K, Minerva, OlympiadBench pass@1, AIME24 and AMC23 avg@8."""
EVAL_TOKENS = 3000


class IdTokenizer:
    """Token ids as text (`<17>`): enough for the engine's per-token texts without tokenizer files."""

    def __init__(self, vocab: int, eos: int):
        self.vocab = vocab
        self.eos_token_id = eos
        self.pad_token_id = eos
        self.bos_token_id = None
        self.model_max_length = 1 << 20

    def __len__(self) -> int:
        return self.vocab

    def decode(self, ids, **_) -> str:
        return "".join(f"<{int(i)}>" for i in ids)

    def get_vocab(self) -> dict[str, int]:
        return {f"<{i}>": i for i in range(self.vocab)}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str) -> tuple[float, object]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def build(shape: dict, device: str, dtype, seed: int, label: str):
    """A random-weight Qwen2 causal LM of `shape`, built on `device` in `dtype`, wrapped as the engine loads models."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from engine.core.config import ModelSpec
    from engine.core.models import LoadedModel

    eos = shape["vocab_size"] - 1
    config = Qwen2Config(**shape, eos_token_id=eos, pad_token_id=eos, bos_token_id=None, use_cache=True,
                         attn_implementation="sdpa")
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            module = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    finally:
        torch.set_default_dtype(previous)
    module.eval()
    module.generation_config.eos_token_id = eos
    module.generation_config.pad_token_id = eos
    return LoadedModel(spec=ModelSpec(label, device="cuda" if device.startswith("cuda") else "cpu"),
                       module=module, tokenizer=IdTokenizer(shape["vocab_size"], eos), device=device)


def _ids(count: int, vocab: int, seed: int) -> list[int]:
    import random

    rng = random.Random(seed)
    return [rng.randrange(0, vocab - 1) for _ in range(count)]  # never the EOS id (the last one)


def _interleaved(runs: dict, reps: int, device: str) -> dict[str, list[float]]:
    """Seconds of each run, `reps` times, the runs alternating so that drift hits all alike (after one warm-up)."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, fn in runs.items():
            times[name].append(_timed(fn, device)[0])
    return times


def _median(values: list[float]) -> float:
    return statistics.median(values)


def bench_scoring(model, sizes: Sizes, device: str, label: str) -> list[dict]:
    """P1: exact full-vocabulary scoring of a completion ÷ a bare forward of the same ids, and peak memory."""
    import torch

    from engine.core.scoring import score

    rows = []
    vocab = model.vocab_size
    for total in sizes.score_lengths:
        prompt = _ids(sizes.prompt, vocab, 1)
        completion = _ids(total - sizes.prompt, vocab, 2)
        ids = torch.tensor([prompt + completion], device=device)

        def bare():
            with torch.inference_mode():
                model.module(input_ids=ids, logits_to_keep=1, use_cache=False)

        def scored():
            score(model, [(prompt, completion)])

        times = _interleaved({"score": scored, "bare": bare}, max(1, sizes.reps - 1), device)
        _peak_reset(device)
        _timed(scored, device)
        score_peak = _peak_gib(device)
        _peak_reset(device)
        _timed(bare, device)
        bare_peak = _peak_gib(device)
        rows.append({"model": label, "tokens": total, "score_s": _median(times["score"]),
                     "bare_forward_s": _median(times["bare"]),
                     "ratio": _median(times["score"]) / _median(times["bare"]),
                     "score_peak_gib": score_peak, "bare_peak_gib": bare_peak})
    return rows


def bench_fork(model, sizes: Sizes, device: str) -> dict:
    """P2: time to the first token of a fork at the end of a cached T-token sequence ÷ that of a fresh prefill."""
    from engine.core.decode import DecodeSession, SamplingSpec

    vocab = model.vocab_size
    prompt = _ids(sizes.prompt, vocab, 3)
    completion = _ids(sizes.fork_length - sizes.prompt, vocab, 4)
    one = SamplingSpec(greedy=True, max_new_tokens=1)
    warm = DecodeSession(model)
    warm.prefill(prompt + completion)
    token = [0]

    def fork():
        # A different forced token each time: the cache keeps the sequence and crops only the fork's tail.
        token[0] = (token[0] + 1) % (vocab - 1)
        next(iter(warm.decode(prompt, one, rollout=completion, force=[(len(completion) - 1, token[0])])))

    def reprefill():
        next(iter(DecodeSession(model).decode(prompt, one, rollout=completion,
                                              force=[(len(completion) - 1, 1)])))

    times = _interleaved({"fork": fork, "reprefill": reprefill}, sizes.reps, device)
    return {"tokens": sizes.fork_length, "fork_ttft_s": _median(times["fork"]),
            "reprefill_ttft_s": _median(times["reprefill"]),
            "ratio": _median(times["reprefill"]) / _median(times["fork"])}


def bench_greedy(model, sizes: Sizes, device: str) -> dict:
    """Greedy decode at batch 1 with exact entropy and top-5 per step ÷ HF generate (no statistics)."""
    import torch

    from engine.core.decode import DecodeSession, SamplingSpec

    prompt = _ids(sizes.prompt, model.vocab_size, 5)
    n = sizes.greedy_tokens
    counts: dict[str, int] = {}

    def ours():
        steps = list(DecodeSession(model).decode(prompt, SamplingSpec(greedy=True, max_new_tokens=n), top=5))
        counts["ours"] = len(steps)

    def generate():
        ids = torch.tensor([prompt], device=device)
        with torch.inference_mode():
            out = model.module.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                        max_new_tokens=n, pad_token_id=model.tokenizer.pad_token_id)
        counts["generate"] = out.shape[1] - len(prompt)

    times = _interleaved({"ours": ours, "generate": generate}, max(1, sizes.reps - 1), device)
    ours_rate = counts["ours"] / _median(times["ours"])
    generate_rate = counts["generate"] / _median(times["generate"])
    return {"tokens": n, "ours_tok_s": ours_rate, "generate_tok_s": generate_rate, "ratio": ours_rate / generate_rate}


def bench_lockstep(base, teacher, sizes: Sizes, device: str) -> dict:
    """P3: oracle lockstep (base and teacher fed every token) at B=1 and B=lockstep_batch ÷ plain decode at the same B."""
    from engine.core.decode import SamplingSpec

    try:
        from engine.core.batched import oracle_lockstep
        from engine.core.lockstep import RowRequest, decode_rows
    except ImportError as error:
        return {"skipped": f"batched lockstep is not in this engine ({error})"}
    sampling = SamplingSpec(greedy=True, max_new_tokens=sizes.lockstep_tokens)
    result: dict = {"tokens_per_row": sizes.lockstep_tokens, "rows": {}}
    for batch in (1, sizes.lockstep_batch):
        prompts = [_ids(sizes.prompt, base.vocab_size, 100 + i) for i in range(batch)]
        counts: dict[str, int] = {}

        def oracle():
            results = oracle_lockstep(base, teacher, prompts, sampling, batch_size=batch)
            counts["oracle"] = sum(len(r.steps) for r in results)

        def plain():
            counts["plain"] = sum(1 for _ in decode_rows(base, [RowRequest(tuple(p)) for p in prompts], sampling,
                                                         batch_size=batch))

        times = _interleaved({"oracle": oracle, "plain": plain}, 1, device)
        oracle_rate = counts["oracle"] / _median(times["oracle"])
        plain_rate = counts["plain"] / _median(times["plain"])
        result["rows"][batch] = {"oracle_tok_s": oracle_rate, "plain_tok_s": plain_rate,
                                 "ratio": oracle_rate / plain_rate}
    rows = result["rows"]
    result["oracle_scaling"] = rows[sizes.lockstep_batch]["oracle_tok_s"] / rows[1]["oracle_tok_s"]
    return result


def bench_rollouts(model, sizes: Sizes, device: str) -> dict:
    """P6: rollout sampling tok/s, K samples per prompt: step decoder vs paged backend vs HF generate."""
    import torch

    from engine.core.backends import SampleRequest
    from engine.core.backends.hf import HFSampler
    from engine.core.errors import RmxError

    settings = dict(temperature=0.6, top_p=0.95, max_new_tokens=sizes.rollout_tokens)
    prompts = [tuple(_ids(sizes.prompt, model.vocab_size, 200 + i)) for i in range(sizes.rollout_prompts)]
    requests = [SampleRequest(p, sizes.rollout_k, seed=i) for i, p in enumerate(prompts)]
    serial = requests[: sizes.rollout_serial_prompts]
    eos = model.eos_ids
    result: dict = {"k": sizes.rollout_k, "new_tokens": sizes.rollout_tokens, "prompts": sizes.rollout_prompts,
                    "serial_prompts": len(serial)}

    def rate(fn) -> dict:
        fn(serial[:1], 8)  # a short warm-up
        seconds, tokens = _timed(lambda: fn(serial, sizes.rollout_tokens), device)
        return {"tok_s": tokens / seconds, "tokens": tokens, "seconds": seconds}

    def step_decoder(batch, new_tokens: int):
        step = HFSampler(None, loaded=model, **{**settings, "max_new_tokens": new_tokens})
        return sum(len(s.completion_ids) for r in batch for s in step.sample([r])[0])

    def generate(batch, new_tokens: int):
        total = 0
        for request in batch:
            torch.manual_seed(request.seed)
            ids = torch.tensor([list(request.prompt_ids)], device=device)
            with torch.inference_mode():
                out = model.module.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.6,
                                            top_p=0.95, top_k=0, max_new_tokens=new_tokens,
                                            num_return_sequences=sizes.rollout_k,
                                            pad_token_id=model.tokenizer.pad_token_id)
            for row in out[:, len(request.prompt_ids):].tolist():
                total += next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        return total

    result["step_decoder"] = rate(step_decoder)
    result["hf_generate"] = rate(generate)
    try:
        from engine.core.backends.paged import PagedSampler

        PagedSampler(None, loaded=model, **{**settings, "max_new_tokens": 8}).sample(requests[:1])  # warm-up
        paged = PagedSampler(None, loaded=model, **settings)
        seconds, tokens = _timed(lambda: sum(len(s.completion_ids) for g in paged.sample(requests) for s in g), device)
        result["paged"] = {"tok_s": tokens / seconds, "tokens": tokens, "seconds": seconds}
        result["paged_vs_generate"] = result["paged"]["tok_s"] / result["hf_generate"]["tok_s"]
        result["paged_vs_step_decoder"] = result["paged"]["tok_s"] / result["step_decoder"]["tok_s"]
    except RmxError as error:
        result["paged"] = {"skipped": str(error)}
    result["step_decoder_vs_generate"] = result["step_decoder"]["tok_s"] / result["hf_generate"]["tok_s"]
    return result


def bench_train(model, sizes: Sizes, device: str) -> dict:
    """P4: a ReasonMaxxer step (base pass recomputed, end to end) ÷ a plain LoRA cross-entropy step, same tokens."""
    import random

    import torch

    from engine.recipes.basepass import ChunkedHead
    from engine.recipes.train import Example, TrainSpec, _Sequence, _sequence_backward, lora_model

    rng = random.Random(0)
    total = sizes.train_tokens
    ids = tuple(_ids(total, model.vocab_size, 6))
    spec = TrainSpec("unused.jsonl")
    peft_model = lora_model(model.module, spec, model.spec.source)
    peft_model.eval()
    core = peft_model.get_base_model()
    head = ChunkedHead(core, spec.chunk_elements)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    # About 5% decision points, the paper's τ = 1.4 rate on Qwen2.5-1.5B.
    completion = total - sizes.prompt
    entropies = tuple(2.0 if rng.random() < 0.05 else 0.5 for _ in range(completion))
    seq = _Sequence(Example("p", 0, ids, sizes.prompt, 1.0, True, entropies), 1.0, "all", device)

    def reasonmaxxer():
        _sequence_backward(peft_model, head, seq, 1.0, spec, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def plain():
        peft_model(input_ids=seq.ids, labels=seq.ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = _interleaved({"reasonmaxxer": reasonmaxxer, "plain": plain}, sizes.reps, device)
    _peak_reset(device)
    _timed(reasonmaxxer, device)
    peak = _peak_gib(device)
    rm, ce = _median(times["reasonmaxxer"]), _median(times["plain"])
    result = {"tokens": total, "reasonmaxxer_tok_s": total / rm, "plain_lora_ce_tok_s": total / ce, "ratio": ce / rm,
              "reasonmaxxer_peak_gib": peak}
    peft_model.unload()  # the base model goes back to later sections without LoRA layers
    return result


def projection(results: dict, dollars_per_hour: float) -> list[dict]:
    """The paper's workloads at the measured rates: a projection, not a measurement."""
    rows = []

    def add(name: str, how: str, seconds: float | None):
        hours = seconds / 3600 if seconds is not None else None
        rows.append({"workload": name, "how": how, "gpu_hours": hours,
                     "dollars": hours * dollars_per_hour if hours is not None else None})

    rollouts = results.get("rollouts", {})
    for key, label in (("paged", "paged backend"), ("step_decoder", "step decoder"), ("hf_generate", "HF generate")):
        rate = rollouts.get(key, {}).get("tok_s")
        add("rollouts 150 × 20 × 3k tokens", label, ROLLOUT_TOKENS / rate if rate else None)
    train = results.get("train", {})
    rate = train.get("reasonmaxxer_tok_s")
    add("training 1,000 sequences × 3k tokens", "ReasonMaxxer step at the measured tok/s",
        TRAIN_SEQUENCES * TRAIN_SEQUENCE_TOKENS / rate if rate else None)
    lockstep = results.get("lockstep", {}).get("rows", {})
    batched = lockstep.get(max(lockstep)) if lockstep else None
    single = lockstep.get(1) if lockstep else None
    for row, label in ((batched, "batched"), (single, "batch 1")):
        seconds = None
        if row:
            tokens = FIGURE2_PROBLEMS * FIGURE2_TOKENS
            # base and teacher decode alone (plain rate); oracle, random and gated run both models (oracle rate);
            # random first needs its oracle budget, which the oracle run gives.
            seconds = 2 * tokens / row["plain_tok_s"] + 3 * tokens / row["oracle_tok_s"]
        add("Figure 2 on MATH-500 (5 modes × 3k tokens)", f"lockstep {label}", seconds)
    for key, label in (("paged", "paged backend"), ("step_decoder", "step decoder")):
        rate = rollouts.get(key, {}).get("tok_s")
        add("Table 3 eval (6 benchmarks, avg@8 on AIME/AMC)", label, EVAL_SAMPLES * EVAL_TOKENS / rate if rate else None)
    return rows


def _foreign_modules() -> list[str]:
    return sorted({name.split(".")[0] for name in sys.modules} & set(FORBIDDEN))


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [f"# GPU suite — {env['when']}", "",
             f"{env['device_name']} · torch {env['torch']} · transformers {env['transformers']} · "
             f"{env['dtype']} · SDPA · {'tiny shapes (CPU check)' if env['tiny'] else 'Qwen2.5-1.5B / 7B shapes'} · "
             f"random weights · {env['seconds']:.0f} s in all", ""]
    for row in results.get("scoring", []):
        lines.append(f"- P1 scoring {row['model']} {row['tokens']:,} tokens: {_fmt(row['score_s'], 3)} s, "
                     f"{_fmt(row['ratio'])}× a bare forward ({_fmt(row['bare_forward_s'], 3)} s); peak "
                     f"{_fmt(row['score_peak_gib'])} GiB (bare {_fmt(row['bare_peak_gib'])} GiB)")
    fork = results.get("fork")
    if fork:
        lines.append(f"- P2 fork at T = {fork['tokens']:,}: first token {_fmt(fork['fork_ttft_s'], 4)} s vs re-prefill "
                     f"{_fmt(fork['reprefill_ttft_s'], 4)} s: {_fmt(fork['ratio'], 1)}× faster")
    greedy = results.get("greedy")
    if greedy:
        lines.append(f"- Greedy decode B=1 with exact entropy + top-5: {_fmt(greedy['ours_tok_s'], 1)} tok/s; HF generate "
                     f"{_fmt(greedy['generate_tok_s'], 1)} tok/s ({_fmt(greedy['ratio'])}×)")
    lockstep = results.get("lockstep")
    if lockstep and "rows" in lockstep:
        for batch, row in lockstep["rows"].items():
            lines.append(f"- P3 oracle lockstep B={batch}: {_fmt(row['oracle_tok_s'], 1)} tok/s, plain decode "
                         f"{_fmt(row['plain_tok_s'], 1)} tok/s ({_fmt(row['ratio'])}×)")
        lines.append(f"- P3 oracle B={max(lockstep['rows'])} ÷ B=1: {_fmt(lockstep['oracle_scaling'], 1)}×")
    elif lockstep:
        lines.append(f"- P3: {lockstep['skipped']}")
    rollouts = results.get("rollouts")
    if rollouts:
        paged = rollouts["paged"]
        lines.append(f"- P6 rollouts K={rollouts['k']}, {rollouts['new_tokens']} new tokens: step decoder "
                     f"{_fmt(rollouts['step_decoder']['tok_s'], 1)} tok/s, HF generate "
                     f"{_fmt(rollouts['hf_generate']['tok_s'], 1)} tok/s ({rollouts['serial_prompts']} prompt(s), one "
                     f"at a time), paged {_fmt(paged.get('tok_s'), 1)} tok/s ({rollouts['prompts']} prompts in one "
                     f"call); paged ÷ generate {_fmt(rollouts.get('paged_vs_generate'))}×, paged ÷ step decoder "
                     f"{_fmt(rollouts.get('paged_vs_step_decoder'))}×" + (f" — paged: {paged['skipped']}"
                                                                           if "skipped" in paged else ""))
    train = results.get("train")
    if train:
        lines.append(f"- P4 ReasonMaxxer step at {train['tokens']:,} tokens (base pass included): "
                     f"{_fmt(train['reasonmaxxer_tok_s'], 0)} tok/s vs plain LoRA CE {_fmt(train['plain_lora_ce_tok_s'], 0)}"
                     f" tok/s ({_fmt(train['ratio'])}×); peak {_fmt(train['reasonmaxxer_peak_gib'])} GiB")
    for name in results.get("skipped", []):
        lines.append(f"- {name}: skipped (time budget)")
    for name, error in results.get("failed", {}).items():
        lines.append(f"- {name}: failed: {error}")
    lines += ["", f"## Projection (not a measurement): the paper's workloads at the rates above, "
                  f"${results['dollars_per_hour']:.2f}/GPU-hour", "",
              "| workload | how | GPU-hours | dollars |", "|---|---|---:|---:|"]
    for row in results.get("projection", []):
        lines.append(f"| {row['workload']} | {row['how']} | {_fmt(row['gpu_hours'])} | {_fmt(row['dollars'])} |")
    lines += ["", f"rmx dependencies missing on the GPU image that this run imported: "
                  f"{', '.join(results['foreign_modules']) or 'none'}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for results_gpu.md and results_gpu.json")
    parser.add_argument("--tiny", action="store_true", help="small shapes on the CPU (seconds): checks the suite runs")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip the sections left once this much has run")
    parser.add_argument("--dollars-per-hour", type=float, default=3.5, help="GPU price for the projection")
    args = parser.parse_args(argv)
    if args.budget_s <= 0 or args.dollars_per_hour < 0:
        print("gpu_suite: --budget-s must be > 0 and --dollars-per-hour ≥ 0", file=sys.stderr)
        return 2

    import torch
    import transformers

    started = time.perf_counter()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not args.tiny:
        print("gpu_suite: no CUDA device here; run with --tiny for the CPU check", file=sys.stderr)
        return 2
    dtype = torch.float32 if args.tiny else torch.bfloat16
    sizes = TINY_SIZES if args.tiny else GPU_SIZES
    shape = TINY if args.tiny else QWEN_1_5B
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"skipped": [], "dollars_per_hour": args.dollars_per_hour}

    def section(name: str, fn):
        if time.perf_counter() - started > args.budget_s:
            results["skipped"].append(name)
            return
        t0 = time.perf_counter()
        try:
            results[name] = fn()
        except Exception as error:  # one failing section must not cost the others' numbers on a rare GPU
            if args.tiny:
                raise
            results.setdefault("failed", {})[name] = f"{type(error).__name__}: {error}"[:500]
        print(f"gpu_suite: {name} done in {time.perf_counter() - t0:.1f} s", flush=True)
        # Kept after every section, so a run cut short by its time limit still leaves what it measured.
        (out / "results_gpu.partial.json").write_text(json.dumps(results, indent=2, default=str))

    base = build(shape, device, dtype, seed=0, label="qwen2.5-1.5b-shape")
    section("fork", lambda: bench_fork(base, sizes, device))
    section("greedy", lambda: bench_greedy(base, sizes, device))
    section("scoring", lambda: bench_scoring(base, sizes, device, "tiny" if args.tiny else "1.5B"))
    teacher = build(shape, device, dtype, seed=1, label="qwen2.5-1.5b-shape-teacher")
    section("lockstep", lambda: bench_lockstep(base, teacher, sizes, device))
    teacher = None  # frees its weights before the next sections
    section("rollouts", lambda: bench_rollouts(base, sizes, device))
    section("train", lambda: bench_train(base, sizes, device))  # last on this model: it adds and removes LoRA
    base = None
    if device == "cuda":
        torch.cuda.empty_cache()
        section("scoring_7b", lambda: bench_scoring(build(QWEN_7B, device, dtype, seed=2, label="qwen2.5-7b-shape"),
                                                    sizes, device, "7B"))
        results["scoring"] = results.get("scoring", []) + results.pop("scoring_7b", [])
    results["projection"] = projection(results, args.dollars_per_hour)
    results["foreign_modules"] = _foreign_modules()
    results["environment"] = {
        "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device_name": torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or 'cpu'})",
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "dtype": str(dtype).replace("torch.", ""), "tiny": args.tiny, "seconds": time.perf_counter() - started,
    }
    (out / "results_gpu.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results_gpu.partial.json").unlink(missing_ok=True)
    (out / "results_gpu.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
