"""The `intervene` job kind: Figure 2 as a detached job that streams events, can be cancelled, and resumes."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

import engine.jobs.intervene  # noqa: F401  (registers the kind in this process)
from engine.core.config import ModelSpec
from engine.core.errors import RmxError
from engine.recipes.experiments import read_results
from engine.jobs.store import JobView, LocalJobs, cancel_job, find_run, job_outputs, list_runs, resume_job, submit_job, tail_events
from tests.test_cli_score import run_cli
from tests.test_jobs import finished, kill_jobs, wait_for

MODES = ["base", "teacher", "oracle", "random", "gated"]


@pytest.fixture(autouse=True)
def job_env(monkeypatch):
    """Job processes on one thread each (the CPU is shared), all killed after the test."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("RMX_HEARTBEAT_S", "0.5")
    yield
    kill_jobs()


def config(tiny_llama, tiny_llama_adapter, **changes) -> dict:
    base = ModelSpec(str(tiny_llama), dtype="float32", device="cpu")
    teacher = ModelSpec(str(tiny_llama), adapter=str(tiny_llama_adapter), dtype="float32", device="cpu")
    data = {"base": asdict(base), "teacher": asdict(teacher), "dataset": "smoke", "limit": 2, "modes": MODES,
            "tau": "q0.9", "template": "auto", "sampling": {"max_new_tokens": 6}}
    data.update(changes)
    return data


def intervene_events(run_dir) -> list[dict]:
    return [e for e in tail_events(run_dir, follow=False) if "intervene/done" in e]


def results(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "artifacts" / "figure2.jsonl").read_text().splitlines()]


def complete(run_dir) -> list[str]:
    """Problems with every mode on file (a cancelled run leaves the finished modes of others as partial lines)."""
    merged = read_results(run_dir / "artifacts" / "figure2.jsonl")
    return [i for i, record in merged.items() if set(record["modes"]) == set(MODES)]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(modes=["base", "best"]), "unknown mode 'best'"),
        (dict(modes=[]), "no modes"),
        (dict(teacher=None), "needs a teacher"),
        (dict(tau=None), "gated mode needs τ"),
        (dict(tau="warm"), "neither a number"),
        (dict(limit=0), "limit must be"),
        (dict(dataset="no-such-benchmark"), "no-such-benchmark"),
        (dict(sampling={"temperature": 0}), "--temperature must be a finite number > 0"),
        (dict(sampling={"temp": 1}), "unknown sampling fields"),
        (dict(base={"source": "/nonexistent/model"}), "not found"),
        (dict(base={"source": "demo", "dtype": "float8"}), "unknown dtype"),
        (dict(template="fancy"), "unknown template"),
        (dict(out="relative/figure2.jsonl"), "absolute path"),
        (dict(epochs=3), "unknown config keys"),
    ],
)
def test_bad_configs_are_refused_before_a_process_starts(tiny_llama, tiny_llama_adapter, changes, message):
    with pytest.raises(RmxError, match=message) as error:
        submit_job("intervene", config(tiny_llama, tiny_llama_adapter, **changes))
    assert "\n" not in str(error.value)
    assert list_runs() == []


def test_rmx_intervene_detach_streams_events_cancels_and_resumes_to_done(tiny_llama, tiny_llama_adapter, capsys,
                                                                       monkeypatch):
    """One job through its life (two process launches, as each costs seconds of imports on a busy CPU)."""
    total = 3
    argv = ["intervene", "--base", str(tiny_llama), "--teacher-adapter", str(tiny_llama_adapter), "--dtype", "float32",
            "--device", "cpu", "--dataset", "smoke", "--limit", str(total), "--max-new-tokens", "16", "--tau", "q0.9",
            "--batch-size", "1", "--detach", "--json"]
    code, out, err = run_cli(argv, capsys, monkeypatch)
    assert code == 0, err
    submitted = json.loads(out)
    run_dir = find_run(submitted["id"])
    assert submitted["state"] == "queued" and submitted["run_dir"] == str(run_dir)
    spec = LocalJobs().job(submitted["id"]).spec
    assert spec.kind == "intervene" and spec.config["sampling"]["max_new_tokens"] == 16
    assert spec.config["base"]["source"] == str(tiny_llama.resolve()) and spec.config["out"] is None
    assert spec.config["batch_size"] == 1  # one row at a time, so that a cancel lands mid-run

    # Cancelled after its first problem: it stops after the step in progress, keeping what finished.
    wait_for(lambda: any(e["intervene/done"] >= 1 for e in intervene_events(run_dir)), timeout=90,
             what="the first problem")
    cancel_job(submitted["id"])
    stopped = finished(submitted["id"], timeout=60)
    assert stopped.state == "cancelled"
    kept = complete(run_dir)
    assert 1 <= len(kept) <= total and stopped.step == len(kept) and stopped.total == total
    partial = json.loads((run_dir / "artifacts" / "summary.json").read_text())  # written on a cancel too
    assert partial["problems"] == len(kept) and partial["complete"] is (len(kept) == total)

    assert resume_job(submitted["id"]).attempt == 2
    done = finished(submitted["id"], timeout=90)
    assert done.state == "done", done.error
    assert (done.step, done.total) == (total, total)
    # None skipped, and no mode of any problem run twice (a partial line and its completion share no mode).
    assert sorted(complete(run_dir)) == [f"smoke_{i}" for i in range(total)]
    filed = [(r["id"], mode) for r in results(run_dir) for mode in r["modes"]]
    assert len(filed) == len(set(filed)) == total * len(MODES)
    events = list(tail_events(run_dir, follow=False))
    resumed_at = max(i for i, e in enumerate(events) if e.get("job/attempt") == 2)
    first = [e["intervene/done"] for e in events[:resumed_at] if "intervene/done" in e]
    second = [e["intervene/done"] for e in events[resumed_at:] if "intervene/done" in e]
    assert first == list(range(len(kept) + 1)) and second == list(range(len(kept), total + 1))
    last = [e for e in events if "intervene/done" in e][-1]
    assert last["intervene/total"] == total and "intervene/pass@1/gated" in last
    summary = json.loads((run_dir / "artifacts" / "summary.json").read_text())
    assert summary["problems"] == total and summary["total"] == total and summary["complete"] is True
    assert [m["mode"] for m in summary["modes"]] == MODES and summary["tau"] == "q0.9"
    # result.json lists the outputs as every job kind's does; the TUI and CLI read them from there.
    assert job_outputs(submitted["id"]) == {"figure2": str(run_dir / "artifacts" / "figure2.jsonl"),
                                            "summary": str(run_dir / "artifacts" / "summary.json")}
    view = LocalJobs().job(submitted["id"])  # what `rmx jobs show --json` and the daemon's GET /jobs/ID carry
    assert view.outputs == job_outputs(submitted["id"]) and JobView.from_json(view.to_json()) == view
    assert events[-1]["job/state"] == "done"
