"""Faults the engine must survive without losing data: dropped clients, killed daemons and jobs, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
import pytest

import engine.jobs.selftest  # noqa: F401  (registers selftest here, so clients send its entry)
from engine.core.config import ModelSpec
from engine.service.daemon import client_for, daemon_status, ensure_daemon, start_daemon, stop_daemon
from engine.jobs.store import EventTail, find_run, pid_alive, read_status
from engine.service.remote import EngineLost, RemoteClient
from engine.service.server import bind_unix, create_app
from engine.service.workbench import Workbench
from tests.test_jobs import kill_jobs, wait_for


def selftest_values(events) -> list[int]:
    return [e["selftest/value"] for e in events if "selftest/value" in e]


@pytest.fixture
def runtime(monkeypatch):
    """A private runtime dir (short: socket paths are limited) and fast heartbeats; every process killed after."""
    root = Path(tempfile.mkdtemp(prefix="rmx-", dir="/tmp"))
    monkeypatch.setenv("RMX_RUNTIME_DIR", str(root))
    monkeypatch.setenv("RMX_HEARTBEAT_S", "0.2")
    started: list[int] = []
    yield started
    stop_daemon()
    for pid in started:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    kill_jobs()
    shutil.rmtree(root, ignore_errors=True)


def new_daemon(started: list[int]):
    card = start_daemon()
    started.append(card.pid)
    return card, client_for(card)


def test_a_client_reconnects_to_a_restarted_daemon_and_says_when_it_cannot(runtime):
    client = ensure_daemon()  # none runs: this starts one, detached
    first = client.health()["pid"]
    runtime.append(first)
    job = client.submit_job("selftest", {"count": 40, "sleep": 0.03})
    follower = RemoteClient(uds=client.target, reconnect_s=30)
    seen: list[dict] = []
    thread = threading.Thread(target=lambda: seen.extend(follower.job_events(job.id, follow=True)))
    thread.start()
    wait_for(lambda: len(seen) >= 5, what="the follower to get going")
    began = time.monotonic()
    stop_daemon()  # an open follow stream must not hold the stop up
    assert time.monotonic() - began < 8
    with pytest.raises(EngineLost, match="rmx engine status"):
        RemoteClient(uds=client.target, reconnect_s=0.3).health()
    second = ensure_daemon()
    runtime.append(second.health()["pid"])
    assert client.health()["pid"] != first  # the old client reconnects by itself
    thread.join(30)
    assert selftest_values(seen) == list(range(40))  # resumed after the last event seen: no gap, no repeat
    assert seen[-1]["job/state"] == "done"


def test_a_killed_client_loses_nothing(runtime):
    card, client = new_daemon(runtime)
    follower = textwrap.dedent("""
        import sys
        import engine.jobs.selftest
        from engine.service.daemon import connect
        client = connect(sys.argv[1])
        status = client.submit_job("selftest", {"count": 40, "sleep": 0.03})
        print(status.id, flush=True)
        for event in client.job_events(status.id, follow=True):
            print(event.get("selftest/value"), flush=True)
    """)
    process = subprocess.Popen([sys.executable, "-c", follower, card.socket], stdout=subprocess.PIPE, text=True)
    try:
        job_id = process.stdout.readline().strip()
        for _ in range(5):
            assert process.stdout.readline()  # it is following the job
    finally:
        process.kill()  # the SSH connection drops
        process.wait()
    assert read_status(find_run(job_id)).active
    events = list(client.job_events(job_id, follow=True))  # a new client, later
    assert selftest_values(events) == list(range(40))
    assert client.job(job_id).status.state == "done"
    assert client.health()["pid"] == card.pid


def test_jobs_outlive_a_killed_daemon_and_dead_jobs_end_failed(runtime):
    card, client = new_daemon(runtime)
    survivor = client.submit_job("selftest", {"count": 60, "sleep": 0.03})
    victim = client.submit_job("selftest", {"count": 10_000, "sleep": 0.03})
    frozen = client.submit_job("selftest", {"count": 10_000, "sleep": 0.03})
    runs = {job.id: find_run(job.id) for job in (survivor, victim, frozen)}
    for run_dir in runs.values():
        wait_for(lambda: len(selftest_values(EventTail(run_dir).read())) >= 3, what="jobs to run")

    os.kill(card.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(card.pid), what="the daemon to die")
    seen = len(EventTail(runs[survivor.id]).read())
    wait_for(lambda: len(EventTail(runs[survivor.id]).read()) > seen + 3, what="jobs to go on without the daemon")

    victim_pid = read_status(runs[victim.id]).pid
    os.killpg(victim_pid, signal.SIGKILL)  # the job process dies, maybe mid-write
    frozen_pid = read_status(runs[frozen.id]).pid
    os.kill(frozen_pid, signal.SIGSTOP)  # alive, but its heartbeat stops
    assert daemon_status() is None

    card2, client2 = new_daemon(runtime)
    assert card2.pid != card.pid
    assert set(runs) <= {s.id for s in client2.list_jobs()}
    dead = wait_for(lambda: (s := client2.job(victim.id).status).state == "failed" and s, what="victim failed")
    assert "died" in dead.error
    last_value = selftest_values(EventTail(runs[victim.id]).read())[-1]
    assert dead.last_event["selftest/value"] == last_value
    stuck = wait_for(lambda: (s := client2.job(frozen.id).status).state == "failed" and s, what="frozen failed")
    assert "heartbeat" in stuck.error and "selftest/value" in stuck.last_event
    assert read_status(runs[frozen.id]).state == "failed"  # the verdict is on disk, not only in the answer

    events = list(client2.job_events(survivor.id, follow=True))
    assert selftest_values(events) == list(range(60))
    assert client2.job(survivor.id).status.state == "done"


def test_a_truncated_last_line_is_tolerated_and_repaired_on_resume(runtime):
    card, client = new_daemon(runtime)
    status = client.submit_job("selftest", {"count": 6, "fail_at": 3})
    before = list(client.job_events(status.id, follow=True))
    log = find_run(status.id) / "events.jsonl"
    with log.open("ab") as handle:
        handle.write(b'{"t": 1.0, "step": 3, "selftest/val')  # a writer killed mid-line
    assert list(client.job_events(status.id)) == before
    with httpx.Client(transport=httpx.HTTPTransport(uds=card.socket), base_url="http://rmx") as raw:
        lines = raw.get(f"/jobs/{status.id}/events").text.splitlines()
    assert lines[-1] == '{"done": true, "state": "failed", "events": %d}' % len(before)
    client.resume_job(status.id)
    after = list(client.job_events(status.id, follow=True))
    assert selftest_values(after) == list(range(6))
    tail = EventTail(find_run(status.id))
    assert len(tail.read()) == len(after) and tail.skipped == 1  # the cut line was closed, not glued to the next
    assert [e["log/dropped"] for e in after if "log/dropped" in e] == [1]
    assert log.read_bytes().endswith(b"\n")


@pytest.fixture(scope="module")
def workbench(tiny_llama) -> Workbench:
    """The tiny Llama loaded in this process: loading it in a fresh daemon costs a torch import per test."""
    bench = Workbench()
    bench.load(ModelSpec(str(tiny_llama), device="cpu", dtype="float32"))
    return bench


@pytest.fixture
def served(workbench, runtime):
    """The API over `workbench` on a real Unix socket, served by uvicorn in a thread of this process."""
    import uvicorn

    path = Path(os.environ["RMX_RUNTIME_DIR"]) / "t.sock"
    sock = bind_unix(path)
    server = uvicorn.Server(uvicorn.Config(create_app(workbench), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="the server to start")
    yield str(path)
    server.should_exit = True
    thread.join(10)


def test_two_clients_at_once_get_the_same_answers(served):
    first, second = RemoteClient(uds=served), RemoteClient(uds=served)
    job = first.submit_job("selftest", {"count": 30, "sleep": 0.03})
    prompt = first.prompt_ids("What is 12 + 30?", "mistral")
    completion = first.tokenize("12 + 30 = 42, so the answer is 42.")
    results: dict[str, list] = {}

    def work(name, client):
        scores = [client.score(prompt, completion) for _ in range(3)]
        active_while_scoring = client.job(job.id).status.active
        events = list(client.job_events(job.id, follow=True))
        results[name] = [scores, active_while_scoring, events, client.tokenize("x = 4"), client.list_jobs()]

    threads = [threading.Thread(target=work, args=(n, c)) for n, c in (("a", first), ("b", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    a, b = results["a"], results["b"]
    assert all(s == a[0][0] for s in a[0] + b[0])
    assert a[1] and b[1]  # interactive requests were answered while the job ran
    assert a[2] == b[2] and selftest_values(a[2]) == list(range(30))
    assert a[3] == b[3] and a[4] == b[4]


SELFTEST = "engine.jobs.selftest:selftest"
MALFORMED = [
    ("POST", "/tokenize", {"content": b"not json", "headers": {"content-type": "application/json"}}, 422),
    ("POST", "/tokenize", {"content": b'{"text": "\xff\xfe"}', "headers": {"content-type": "application/json"}}, 400),
    ("POST", "/tokenize", {"json": {"text": 5}}, 422),
    ("POST", "/tokenize", {"json": {}}, 422),
    ("POST", "/tokenize", {"content": b'{"text": "\\ud800"}', "headers": {"content-type": "application/json"}}, 422),
    ("POST", "/tokenize", {"json": {"text": "fine"}}, 400),  # no model loaded
    ("POST", "/score", {"json": {"prompt_ids": ["a"], "completion_ids": [1]}}, 422),
    ("POST", "/score", {"json": {"prompt_ids": [-1], "completion_ids": [1]}}, 422),
    ("POST", "/score", {"json": {"prompt_ids": [2**40], "completion_ids": [1]}}, 422),
    ("POST", "/score", {"json": {"prompt_ids": [1], "completion_ids": [1], "top_k": 0}}, 422),
    ("POST", "/detokenize", {"json": {"ids": "1,2"}}, 422),
    ("POST", "/decode", {"json": {"prompt_ids": [1], "sampling": {"seed": 2**70}}}, 422),
    ("POST", "/decode", {"json": {"prompt_ids": [1], "sampling": {"seed": -1}}}, 422),
    ("POST", "/decode", {"content": b'{"prompt_ids": [1], "sampling": {"temperature": 1e309}}',
                         "headers": {"content-type": "application/json"}}, 422),
    ("POST", "/decode", {"content": b'{"prompt_ids": [1], "sampling": {"temperature": NaN}}',
                         "headers": {"content-type": "application/json"}}, 422),
    ("POST", "/decode", {"json": {"prompt_ids": [1], "sampling": {"max_new_tokens": 2**40}}}, 422),
    ("POST", "/decode", {"json": {"prompt_ids": [1], "sampling": {"stop": ["x"] * 65}}}, 422),
    ("POST", "/decode", {"json": {"prompt_ids": [1], "force": [[-1, 5]]}}, 422),
    ("POST", "/decode", {"json": {"prompt_ids": [1], "n": 0}}, 422),
    ("POST", "/fork", {"json": {"prompt_ids": [1], "rollout": [1], "pos": 2**70, "token": 1}}, 422),
    ("POST", "/score_text", {"json": {"prompt": "x" * (2**20 + 1), "completion": "y"}}, 422),
    ("POST", "/load", {"json": {"base": {"source": "x", "dtype": "d" * 300}}}, 422),
    ("POST", "/pool_stats", {"content": b'{"rollouts": "r.jsonl", "keep_shortest": Infinity}',
                             "headers": {"content-type": "application/json"}}, 422),
    ("POST", "/problems", {"json": {"dataset": "smoke", "limit": -1}}, 422),
    ("POST", "/load", {"json": {"base": {"source": ""}}}, 400),
    ("POST", "/load", {"json": {"base": {"source": "x", "dtype": "int3"}}}, 400),
    ("POST", "/load", {"json": {"base": {"source": "/no/such/model"}}}, 400),
    ("POST", "/load", {"json": {"base": "demo"}}, 422),
    ("POST", "/jobs", {"json": {"kind": "selftest", "config": "x"}}, 422),
    ("POST", "/jobs", {"json": {"kind": "nope"}}, 400),
    ("POST", "/jobs", {"json": {"kind": "selftest", "config": {"count": 0}, "entry": SELFTEST}}, 400),
    ("POST", "/jobs", {"json": {"kind": "selftest", "entry": "subprocess:run"}}, 400),
    ("GET", "/jobs/..%2F..%2Fetc%2Fpasswd", {}, 404),
    ("GET", "/jobs/20990101-000000-selftest-0000/events?follow=1", {}, 404),
    ("GET", "/jobs/20990101-000000-selftest-0000/events?follow=maybe", {}, 422),
    ("GET", "/jobs/20990101-000000-selftest-0000/events?since=-1", {}, 422),
    ("POST", "/jobs/20990101-000000-selftest-0000/cancel", {}, 404),
    ("POST", "/health", {}, 405),
    ("GET", "/no/such/path", {}, 404),
]


def test_malformed_requests_get_4xx_with_a_reason_and_never_crash_the_daemon(runtime):
    card, client = new_daemon(runtime)
    with httpx.Client(transport=httpx.HTTPTransport(uds=card.socket), base_url="http://rmx") as raw:
        for method, path, kwargs, expected in MALFORMED:
            response = raw.request(method, path, **kwargs)
            assert response.status_code == expected, (method, path, kwargs, response.text)
            assert response.json()["detail"], (method, path)
    assert client.health()["pid"] == card.pid
    assert client.list_jobs() == []  # nothing was started by a refused submit


EXAMPLES_PER_ENDPOINT = 12
"""Random requests per endpoint and mode (valid-looking and invalid): bounded, so the fuzz takes about a minute."""
_EXCEPTION_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b")


def test_fuzzing_the_openapi_schema_finds_no_server_error(workbench):
    """Schemathesis over the in-process ASGI app (no sockets), endpoint by endpoint: every answer is < 500, and a
    4xx says why in words that name no exception class and no server folder."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error

    from engine.jobs.store import data_dir

    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(workbench))
    # Submitting and resuming start processes; they are covered by the tests above, not by random input.
    schema = schema.exclude(method="POST", path="/jobs").exclude(method="POST", path_regex=r"/resume$")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    server_folders = [str(data_dir()), str(Path.home())]

    def client_errors_say_why(ctx, response, case):
        if 400 <= response.status_code < 500:
            detail = response.json().get("detail")
            assert detail, f"{case.operation.label}: a {response.status_code} without a reason"
            text = json.dumps(detail) if not isinstance(detail, str) else detail
            assert not _EXCEPTION_NAME.search(text), f"{case.operation.label}: {text[:200]}"
            assert not any(folder in text for folder in server_folders), f"{case.operation.label}: {text[:200]}"

    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            @settings(max_examples=EXAMPLES_PER_ENDPOINT, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(mode))
            def fuzz(case):
                response = case.call()
                case.validate_response(response, checks=[not_a_server_error, client_errors_say_why])

            try:
                fuzz()
            except Unsatisfiable:  # nothing to get wrong (GET /health has no input): no invalid request exists
                assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label


def test_token_ids_past_the_vocabulary_and_oversized_counts_are_4xx(workbench):
    """Every id a request carries is checked against the loaded vocabulary; counts against their maxima."""
    vocab = workbench.base.vocab_size
    api = TestClient(create_app(workbench))
    cases = [
        ("/score", {"prompt_ids": [1], "completion_ids": [vocab]}),
        ("/score", {"prompt_ids": [vocab + 3], "completion_ids": [1]}),
        ("/detokenize", {"ids": [vocab]}),
        ("/token_texts", {"ids": [vocab]}),
        ("/decode", {"prompt_ids": [vocab], "sampling": {"max_new_tokens": 2}}),
        ("/decode", {"prompt_ids": [1], "rollout": [vocab], "sampling": {"max_new_tokens": 2}}),
        ("/decode", {"prompt_ids": [1], "force": [[0, vocab]], "sampling": {"max_new_tokens": 2}}),
        ("/decode", {"prompt_ids": [1], "n": 10**6}),
        ("/intervene", {"prompt_ids": [vocab], "mode": "oracle", "sampling": {"max_new_tokens": 2}}),
        ("/fork", {"prompt_ids": [1], "rollout": [1, 2], "pos": 0, "token": vocab, "gold": "1", "n": 1}),
        ("/fork", {"prompt_ids": [1], "rollout": [1, 2], "pos": 2**40, "token": 1, "gold": "1", "n": 1}),
        ("/problems", {"dataset": "smoke", "limit": -5}),
        ("/pool_stats", {"rollouts": "x.jsonl", "size": -1}),
    ]
    for path, body in cases:
        response = api.post(path, json=body)
        assert 400 <= response.status_code < 500, (path, body, response.status_code, response.text[:300])
        assert "Error" not in response.text, (path, response.text[:300])
