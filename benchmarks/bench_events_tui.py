"""Run-view benchmark: the event rate a live RunScreen keeps up with while a writer process appends events.

Run: python benchmarks/bench_events_tui.py [--seconds 4] [--small 2000,10000,30000,60000,0] [--train 1000,5000,15000,0]
A writer process plays a live job (status `running`, heartbeats, events through engine.jobs.store.EventWriter) and
appends events at a target rate (0: as fast as it can) for `--seconds`; a Pilot-driven RunScreen follows the run
through LocalJobs, as the TUI does, from the moment the writer starts. Two event shapes: `small` (two numeric keys)
and `train` (the thirteen keys rmx train emits every step). Every 50 ms the benchmark samples how many events
the run view has folded into its series and how many its plot has drawn; afterwards, from the log's write times,
each sample's lag is the age of the oldest event written but not yet folded (or drawn), 0 when it was caught up,
so a writer that the machine descheduled does not count as screen lag. The screen keeps up when that lag stays
bounded: under 0.5 s at p95 over the second half of the run, and the whole log folded within 1 s of the writer's end.
The longest UI stall is the longest gap between two samples, less the 50 ms asked for: how long a key press could
have waited for the app. Then the run view is opened on finished runs of `--replay` events: how long the whole
history takes to arrive. Nothing is asserted: the numbers are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.jobs.store import (
    EventWriter, JobSpec, LocalJobs, create_run, read_status, tail_events, write_json_atomic,
)
from textual.app import App

from rmx_tui.screens.run import RunScreen
from themes.workbench import workbench_themes

SAMPLE_S = 0.05
KEPT_UP_LAG_S = 0.5
KEPT_UP_DRAIN_S = 1.0


def event(shape: str, index: int, now: float) -> dict:
    """One event of `shape`; `bench/t` is the write time, folded like any numeric key."""
    if shape == "small":
        return {"t": now, "step": index, "bench/value": index, "bench/t": now}
    return {"t": now, "step": index, "bench/t": now, "train/step": index, "train/total": 10 ** 9,
            "train/loss": 1 / (1 + index), "train/loss_dec": 0.5 / (1 + index), "train/loss_anchor": 0.01,
            "train/decision_frac": 0.02, "train/dlogp_pos": 0.1, "train/dlogp_neg": -0.1, "train/lr": 1e-4,
            "train/tok_s": 5000.0, "train/grad_norm": 1.0}


def write(run_dir: Path, shape: str, rate: float, seconds: float) -> None:
    """The writer process: a live job for `seconds`, appending events at `rate` a second (0: flat out)."""
    status = read_status(run_dir)
    now = time.time()
    status = replace(status, state="running", pid=os.getpid(), host=socket.gethostname(), started=now, heartbeat=now,
                     heartbeat_s=0.5)
    write_json_atomic(run_dir / "status.json", status.to_json())
    writer = EventWriter(run_dir / "events.jsonl")
    written = 0
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(0.5):
            write_json_atomic(run_dir / "status.json", replace(status, heartbeat=time.time(), step=written).to_json())

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(rate * elapsed) if rate else written + 256
        if written >= due:
            time.sleep(0.0005)
            continue
        for _ in range(min(due - written, 256)):  # a writer behind schedule still stops on time
            writer.write(event(shape, written, time.time()))
            written += 1
    done.set()
    beat.join()
    writer.write({"t": time.time(), "step": written, "job/state": "done"})
    writer.close()
    now = time.time()
    write_json_atomic(run_dir / "status.json", replace(status, state="done", heartbeat=now, ended=now, step=written,
                                                       total=written).to_json())


class Host(App[None]):
    """A bare app in the workbench's theme, showing one run once `job_id` is given."""

    def __init__(self, job_id: str | None) -> None:
        super().__init__()
        for theme in workbench_themes():
            self.register_theme(theme)
        self.theme = "rmx-dark"
        self.job_id = job_id

    def on_mount(self) -> None:
        if self.job_id is not None:
            self.push_screen(RunScreen(LocalJobs(), self.job_id))


def percentile(values: list[float], q: float) -> float:
    return sorted(values)[round(q * (len(values) - 1))] if values else float("nan")


def lags(samples: list[tuple[float, int]], written: list[float], since: float, until: float) -> list[float]:
    """Per sample taken in [since, until]: how long the oldest event not yet shown had been written (0 if none)."""
    return [max(0.0, at - written[shown]) if shown < len(written) and written[shown] <= at else 0.0
            for at, shown in samples if since <= at <= until]


async def phase(shape: str, rate: float, seconds: float) -> dict:
    run_dir = create_run(JobSpec(kind="bench", entry="engine.jobs.selftest:selftest", config={}, rmx_version="bench",
                                 created=time.time()))
    app = Host(run_dir.name)
    folded: list[tuple[float, int]] = []
    drawn: list[tuple[float, int]] = []
    async with app.run_test(size=(120, 36)):
        run = app.screen
        cpu0, wall0 = time.process_time(), time.perf_counter()
        wall_start = time.time()
        writer = subprocess.Popen([sys.executable, __file__, "--write", str(run_dir), shape, str(rate), str(seconds)])
        caught = None
        while caught is None:
            await asyncio.sleep(SAMPLE_S)  # not pilot.pause: that waits for an idle app, which a flood never is
            now = time.time()
            folded.append((now, len(run.series.get("bench/t", ()))))
            plot = next(iter(run.plots.values()), None)
            drawn.append((now, max(plot.drawn, 0) if plot is not None else 0))
            if run.ended:  # the stream ends after the job's final status: every event has been folded
                caught = now
            elif now - wall_start > seconds + 120:
                raise SystemExit("the run view never caught up")
        writer.wait()
        final = read_status(run_dir)
        drain = caught - final.ended
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    written = [e["t"] for e in tail_events(run_dir, follow=False) if "bench/t" in e]
    ticks = [at for at, _ in folded if final.started <= at <= final.ended]
    half = final.started + seconds / 2
    every = lags(folded, written, 0.0, final.ended)
    late, late_plot = lags(folded, written, half, final.ended), lags(drawn, written, half, final.ended)
    return {
        "shape": shape, "target": rate, "written": final.step, "write_rate": final.step / (final.ended - final.started),
        "shown": len(run.series.get("bench/t", ())), "lag_p50": percentile(late, 0.5),
        "lag_p95": percentile(late, 0.95), "lag_max": max(every, default=float("nan")),
        "plot_p95": percentile(late_plot, 0.95), "stall": max(b - a for a, b in zip(ticks, ticks[1:])) - SAMPLE_S,
        "drain": drain, "cpu": cpu / wall,
        "kept_up": bool(late) and percentile(late, 0.95) < KEPT_UP_LAG_S and drain < KEPT_UP_DRAIN_S,
    }


async def replay(shape: str, count: int) -> tuple[float, float]:
    """Seconds from opening the run view on a finished run of `count` events to holding all of them, and the
    longest UI stall meanwhile."""
    run_dir = create_run(JobSpec(kind="bench", entry="engine.jobs.selftest:selftest", config={}, rmx_version="bench",
                                 created=time.time()))
    writer = EventWriter(run_dir / "events.jsonl")
    for index in range(count):
        writer.write(event(shape, index, time.time()))
    writer.close()
    write_json_atomic(run_dir / "status.json", replace(read_status(run_dir), state="done", ended=time.time()).to_json())
    app = Host(None)
    async with app.run_test(size=(120, 36)):
        run = RunScreen(LocalJobs(), run_dir.name)
        started = ticked = time.perf_counter()
        app.push_screen(run)
        stall = 0.0
        while not run.ended:
            await asyncio.sleep(SAMPLE_S)
            now = time.perf_counter()
            stall, ticked = max(stall, now - ticked - SAMPLE_S), now
        assert len(run.series["bench/t"]) == count
        return time.perf_counter() - started, stall


def report(args: argparse.Namespace) -> None:
    """Every phase, then the replays, as markdown tables on stdout."""
    plans = [(shape, float(rate)) for shape, rates in (("small", args.small), ("train", args.train))
             for rate in rates.split(",") if rate]
    print(f"# Run view under a live event stream\n\n`python benchmarks/bench_events_tui.py` on "
          f"{time.strftime('%Y-%m-%d')}: {platform.platform()}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.seconds:g} s of writing a phase.\n")
    print("| events | target ev/s | written ev/s | folded | lag p50 s | lag p95 s | lag max s | plot lag p95 s "
          "| longest UI stall s | drain s | UI CPU | keeps up |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for shape, rate in plans:
        r = asyncio.run(phase(shape, rate, args.seconds))
        target = f"{r['target']:,.0f}" if r["target"] else "flat out"
        print(f"| {r['shape']} | {target} | {r['write_rate']:,.0f} | {r['shown']:,}/{r['written']:,} "
              f"| {r['lag_p50']:.3f} | {r['lag_p95']:.3f} | {r['lag_max']:.3f} | {r['plot_p95']:.3f} "
              f"| {r['stall']:.3f} | {r['drain']:.2f} | {r['cpu']:.0%} | {'yes' if r['kept_up'] else 'no'} |",
              flush=True)
    print("\n| replay on attach | events | seconds | events/s | longest UI stall s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for shape in ("small", "train"):
        seconds, stall = asyncio.run(replay(shape, args.replay))
        print(f"| {shape} | {args.replay:,} | {seconds:.2f} | {args.replay / seconds:,.0f} | {stall:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--small", default="2000,10000,30000,60000,0")
    parser.add_argument("--train", default="1000,5000,15000,0")
    parser.add_argument("--replay", type=int, default=200_000, help="events in the finished runs replayed on attach")
    parser.add_argument("--write", nargs=4, metavar=("RUN_DIR", "SHAPE", "RATE", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write(Path(args.write[0]), args.write[1], float(args.write[2]), float(args.write[3]))
        return
    with tempfile.TemporaryDirectory(prefix="rmx-bench-events-") as data:
        os.environ["RMX_DATA_DIR"] = data
        os.environ["RMX_HEARTBEAT_S"] = "0.5"
        report(args)


if __name__ == "__main__":
    main()
