"""Engine server benchmark: request round trips over the socket (p50/p99) and job-event follower throughput.

Run: python benchmarks/bench_server.py [--requests 500] [--events 200000] [--out benchmarks/results_server.md]
It measures and reports; it asserts nothing. Everything runs in temporary dirs with a private daemon.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return statistics.median(ordered) * 1e3, pick(0.99) * 1e3, statistics.fmean(ordered) * 1e3


def time_calls(call, n: int) -> list[float]:
    for _ in range(min(20, n)):  # warm the connection pool and the tokenizer
        call()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def produce(run_dir: Path, count: int) -> None:
    """Write `count` training-like events as fast as possible, heartbeating like a job, then end `done`."""
    from dataclasses import replace

    from engine.jobs.store import EventWriter, read_status, write_json_atomic

    status = replace(read_status(run_dir), state="running", pid=os.getpid(), started=time.time(), heartbeat=time.time())
    write_json_atomic(run_dir / "status.json", status.to_json())
    writer = EventWriter(run_dir / "events.jsonl")
    beat = time.monotonic()
    for step in range(count):
        writer.write({"t": time.time(), "step": step, "train/loss": 2.0 / (1 + step), "train/lr": 1e-5})
        if time.monotonic() - beat > 0.5:
            beat = time.monotonic()
            write_json_atomic(run_dir / "status.json", replace(status, heartbeat=time.time(), step=step).to_json())
    writer.close()
    write_json_atomic(run_dir / "status.json", replace(status, state="done", ended=time.time(), step=count).to_json())


def new_run(count: int) -> Path:
    from engine.jobs.store import JobSpec, create_run

    return create_run(JobSpec("selftest", "engine.jobs.selftest:selftest", {"count": count}, "bench", time.time()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--live-events", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results_server.md"))
    parser.add_argument("--produce", nargs=2, metavar=("RUN_DIR", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        produce(Path(args.produce[0]), int(args.produce[1]))
        return 0

    root = Path(tempfile.mkdtemp(prefix="rmxb-", dir="/tmp"))
    os.environ.update(RMX_RUNTIME_DIR=str(root / "run"), RMX_DATA_DIR=str(root / "data"),
                      RMX_CACHE_DIR=str(root / "cache"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    import httpx

    from engine.core.config import ModelSpec
    from engine.service.daemon import client_for, start_daemon, stop_daemon
    from tests.tiny import build_model

    try:
        model = build_model(root / "tiny-llama", "llama")
        card = start_daemon()
        client = client_for(card)
        client.load(ModelSpec(str(model), device="cpu", dtype="float32"))
        text = "Let x be a number such that 2x + 3 = 11. Then 2x = 8 and x = 4."
        latency = {
            "GET /health (unix socket)": time_calls(client.health, args.requests),
            "POST /tokenize, 20 tokens (unix socket)": time_calls(lambda: client.tokenize(text), args.requests),
        }
        stop_daemon()
        client.close()

        tcp = start_daemon(port=0)
        tcp_client = client_for(tcp)
        latency["GET /health (loopback TCP + token)"] = time_calls(tcp_client.health, args.requests)
        tcp_client.close()
        stop_daemon()

        card = start_daemon()
        client = client_for(card)
        finished_run = new_run(args.events)
        produce(finished_run, args.events)
        job_id = finished_run.name
        start = time.perf_counter()
        replayed = sum(1 for _ in client.job_events(job_id))
        replay_s = time.perf_counter() - start
        with httpx.Client(transport=httpx.HTTPTransport(uds=card.socket), base_url="http://rmx") as raw:
            start = time.perf_counter()
            with raw.stream("GET", f"/jobs/{job_id}/events") as response:
                raw_bytes = sum(len(chunk) for chunk in response.iter_raw())
            raw_s = time.perf_counter() - start

        live = new_run(args.live_events)
        producer = subprocess.Popen([sys.executable, __file__, "--produce", str(live), str(args.live_events)])
        start = time.perf_counter()
        followed = sum(1 for _ in client.job_events(live.name, follow=True))
        live_s = time.perf_counter() - start
        producer.wait()
        client.close()
    finally:
        stop_daemon()
        shutil.rmtree(root, ignore_errors=True)

    lines = [
        "# Engine server benchmark",
        "",
        f"`python benchmarks/bench_server.py` on {time.strftime('%Y-%m-%d')}: {platform.platform()}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
        "(a shared machine: other work ran at the same time). Client: engine.service.remote.RemoteClient (httpx).",
        "",
        f"## Round trips ({args.requests} sequential requests each, after 20 warm-up)",
        "",
        "| request | p50 ms | p99 ms | mean ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, samples in latency.items():
        p50, p99, mean = percentiles(samples)
        lines.append(f"| {name} | {p50:.2f} | {p99:.2f} | {mean:.2f} |")
    lines += [
        "",
        "## Job events through GET /jobs/{id}/events",
        "",
        "| what | events | seconds | events/s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for what, events, seconds in (
        ("replay of a finished run, parsed by RemoteClient.job_events", replayed, replay_s),
        (f"same stream, raw bytes only ({raw_bytes / 1e6:.1f} MB)", args.events, raw_s),
        ("live follow (?follow=1) while another process writes them as fast as it can", followed, live_s),
    ):
        lines.append(f"| {what} | {events} | {seconds:.2f} | {events / seconds:,.0f} |")
    lines.append("")
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
