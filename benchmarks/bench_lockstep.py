"""Batched lockstep benchmarks: oracle lockstep tok/s at B = 8 vs B = 1, and `rmx intervene` at batch 8 vs 1.

Run from the repository root: `python benchmarks/bench_lockstep.py [--threads N] [--tiny] [--limit N]`.
Both ratios are measured side by side in one run, the two sides alternated (A B B A), so that a busy
machine slows both alike; medians are reported. The `rmx intervene` part runs the real CLI in
subprocesses (model load included in each wall time) and checks that every problem's results are
the same at both batch sizes. Results go to benchmarks/results_lockstep.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from bench_decode import PROBLEMS, cpu_name  # noqa: E402
from engine.core.batched import oracle_lockstep  # noqa: E402
from engine.core.config import ModelSpec  # noqa: E402
from engine.core.decode import SamplingSpec  # noqa: E402
from engine.core.errors import RmxError  # noqa: E402
from engine.core.lockstep import RowRequest, decode_rows  # noqa: E402
from engine.core.models import demo_teacher_path, load_pair  # noqa: E402
from engine.core.prompts import prompt_ids  # noqa: E402

ABBA = (0, 1, 1, 0)
"""The order of the two sides: A B B A, so that a drift in load weighs on both alike."""


def models(tiny: bool, work: Path):
    """(base, teacher, base source, adapter folder, label): the demo model and its shipped teacher adapter."""
    if not tiny:
        try:
            adapter = demo_teacher_path()
            base, teacher = load_pair(ModelSpec("demo"), ModelSpec("demo", adapter=str(adapter)))
            return base, teacher, "demo", adapter, "demo (SmolLM2-135M-Instruct), teacher = the shipped demo teacher"
        except RmxError as error:
            print(f"demo model unavailable ({error}); falling back to tiny models", file=sys.stderr)
    from tests.tiny import build_adapter, build_model

    folder = build_model(work / "tiny", "llama", seed=0, context=4096)
    adapter = build_adapter(work / "tiny-adapter", folder)
    base, teacher = load_pair(ModelSpec(str(folder)), ModelSpec(str(folder), adapter=str(adapter)))
    return base, teacher, str(folder), adapter, "tiny random Llama (tests/tiny.py) + a random LoRA teacher"


def bench_lockstep(base, teacher, prompts, gen: int) -> dict:
    """Oracle lockstep and plain greedy decode over the same prompts at B = 1 and B = len(prompts), tok/s."""
    spec = SamplingSpec(max_new_tokens=gen)
    size = len(prompts)

    def oracle(batch: int) -> float:
        start = time.perf_counter()
        results = oracle_lockstep(base, teacher, prompts, spec, batch_size=batch)
        return sum(len(r.steps) for r in results) / (time.perf_counter() - start)

    def plain(batch: int) -> float:
        start = time.perf_counter()
        tokens = sum(1 for _ in decode_rows(base, [RowRequest(prompt=p) for p in prompts], spec, batch_size=batch))
        return tokens / (time.perf_counter() - start)

    same = [r.completion_ids for r in oracle_lockstep(base, teacher, prompts, spec, batch_size=1)] == [
        r.completion_ids for r in oracle_lockstep(base, teacher, prompts, spec, batch_size=size)]
    rates: dict[str, list[float]] = {"oracle B=1": [], f"oracle B={size}": [], "plain B=1": [], f"plain B={size}": []}
    for side in ABBA:
        batch = 1 if side == 0 else size
        rates[f"oracle B={batch}"].append(oracle(batch))
        rates[f"plain B={batch}"].append(plain(batch))
    median = {name: statistics.median(values) for name, values in rates.items()}
    return {"gen": gen, "rows": size, "same_tokens": same, "tok_s": median, "runs": rates,
            "oracle_ratio": median[f"oracle B={size}"] / median["oracle B=1"],
            "plain_ratio": median[f"plain B={size}"] / median["plain B=1"]}


def run_intervene(source: str, adapter: Path, batch: int, limit: int, gen: int, out: Path, threads: int,
                  dtype: str) -> float:
    """Wall seconds of one `rmx intervene` process (model load included), results to `out`."""
    out.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "rmx_tui", "intervene", "--base", source, "--teacher-adapter", str(adapter),
            "--dataset", "smoke", "--limit", str(limit), "--max-new-tokens", str(gen), "--batch-size", str(batch),
            "--dtype", dtype, "--out", str(out), "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"rmx intervene --batch-size {batch} failed: {done.stderr.strip()[-500:]}")
    return wall


def same_results(first: Path, second: Path) -> tuple[bool, float]:
    """Whether every problem's every mode matches (text, tokens, touched, answer, verdict, end), and the largest τ gap."""
    from engine.recipes.experiments import read_results

    a, b = read_results(first), read_results(second)
    keys = ("text", "tokens", "touched", "answer", "correct", "end")
    same = a.keys() == b.keys()
    tau_gap = 0.0
    for pid in a:
        for mode, record in a[pid]["modes"].items():
            other = b.get(pid, {}).get("modes", {}).get(mode)
            same = same and other is not None and all(record[k] == other[k] for k in keys)
            if other is not None and record.get("tau") is not None:
                tau_gap = max(tau_gap, abs(record["tau"] - other["tau"]))
    return same, tau_gap


def bench_intervene(source: str, adapter: Path, limit: int, gen: int, work: Path, threads: int, dtype: str) -> dict:
    walls: dict[int, list[float]] = {1: [], 8: []}
    outs = {1: work / "b1.jsonl", 8: work / "b8.jsonl"}
    checks = []
    for side in ABBA:
        batch = 1 if side == 0 else 8
        walls[batch].append(run_intervene(source, adapter, batch, limit, gen, outs[batch], threads, dtype))
        if len(walls[1]) == len(walls[8]):
            checks.append(same_results(outs[1], outs[8]))
    median = {batch: statistics.median(values) for batch, values in walls.items()}
    return {"limit": limit, "gen": gen, "dtype": dtype, "walls": walls, "median": median, "ratio": median[1] / median[8],
            "same": all(same for same, _ in checks), "tau_gap": max(gap for _, gap in checks)}


def write_markdown(path: Path, header: dict, lock: dict | None, cli: dict) -> None:
    if lock is None:
        lock = {"rows": 8, "gen": "-", "same_tokens": "not run", "tok_s": {}, "runs": {},
                "oracle_ratio": float("nan"), "plain_ratio": float("nan")}
    size = lock["rows"]
    rows = "\n".join(f"| {name} | {rate:.1f} | {', '.join(f'{r:.1f}' for r in lock['runs'][name])} |"
                     for name, rate in lock["tok_s"].items())
    text = f"""# Batched lockstep results

Measured {header['date']} on {header['machine']}. Model: {header['model']}, dtype auto.
Sides alternated A B B A in one run; medians. Load average at the start: {header['load']} (1/5/15 min), and
{header['end_load']} at the end; on a shared machine absolute rates are noisy: read the ratios.

## Oracle lockstep over {size} prompts, {lock['gen']} new tokens each (greedy)

B = 1 decodes the prompts one after another; B = {size} decodes them as one lockstep batch (base and teacher
fed every row). Plain greedy decode (base alone) at the same batch sizes for reference.
Tokens identical at both batch sizes: {lock['same_tokens']}.

| side | tok/s (median) | runs |
|---|---:|---|
{rows}

**Oracle lockstep B = {size} ÷ B = 1: {lock['oracle_ratio']:.2f}×** (target ≥ 3× on the 2-core CPU);
plain decode B = {size} ÷ B = 1: {lock['plain_ratio']:.2f}×.

## `rmx intervene --dataset smoke --limit {cli['limit']} --max-new-tokens {cli['gen']} --dtype {cli['dtype']}`, batch 8 vs 1

Five modes (base, teacher, oracle, random, gated at τ = 1.2), wall time of the whole command (process start and
model load included), A B B A.

| batch | wall s (median) | runs |
|---:|---:|---|
| 1 | {cli['median'][1]:.1f} | {', '.join(f'{w:.1f}' for w in cli['walls'][1])} |
| 8 | {cli['median'][8]:.1f} | {', '.join(f'{w:.1f}' for w in cli['walls'][8])} |

**Batch 8 is {cli['ratio']:.2f}× faster than batch 1.** Every problem's every mode identical at both batch sizes
(text, token count, touched positions, answer, verdict, end): {cli['same']}; largest gap between resolved τ values:
{cli['tau_gap']:.2g} nats (the gate's τ is a float; batch shapes change the last bits of entropies).
"""
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--tiny", action="store_true", help="tiny random models (seconds)")
    parser.add_argument("--gen", type=int, default=48, help="new tokens per row in the lockstep part")
    parser.add_argument("--limit", type=int, default=8, help="smoke problems in the intervene part")
    parser.add_argument("--intervene-gen", type=int, default=48, help="--max-new-tokens in the intervene part")
    parser.add_argument("--dtype", default="float32", help="--dtype of the rmx intervene runs")
    parser.add_argument("--skip-lockstep", action="store_true", help="only the rmx intervene part")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_lockstep.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        os.environ.setdefault("RMX_DATA_DIR", str(work / "data"))
        os.environ.setdefault("RMX_RUNTIME_DIR", str(work / "rt"))
        base, teacher, source, adapter, label = models(args.tiny, work)
        # The model's own template (Appendix C's rule: the demo is an Instruct model, so its chat template), as
        # `rmx intervene` uses: on a raw prompt half the demo's rows end at once on EOS, and the
        # prompts' prefill, which batching cannot speed, would be most of what is timed.
        prompts = [prompt_ids(base.tokenizer, text, "auto", base.template_facts) for text in PROBLEMS[:8]]
        header = {"date": datetime.date.today().isoformat(),
                  "machine": f"{cpu_name()}, {os.cpu_count()} cores, torch threads {args.threads}",
                  "model": label, "load": " / ".join(f"{x:.1f}" for x in os.getloadavg())}
        lock = None if args.skip_lockstep else bench_lockstep(base, teacher, prompts, args.gen)
        print(json.dumps(lock, indent=1), flush=True)
        cli = bench_intervene(source, adapter, args.limit, args.intervene_gen, work, args.threads, args.dtype)
        print(json.dumps(cli, indent=1), flush=True)
        header["end_load"] = " / ".join(f"{x:.1f}" for x in os.getloadavg())
        write_markdown(args.out, header, lock, cli)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
