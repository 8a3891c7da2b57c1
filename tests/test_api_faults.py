"""Hostile or careless callers: oversized bodies, remote code, escaping outputs, foreign pids, server errors, TLS, CLI edges."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import engine.jobs.selftest  # noqa: F401  (registers selftest here, so clients send its entry)
from engine.core.errors import RmxError
from engine.jobs.store import (
    JobConflict, JobSpec, cancel_job, create_run, data_dir, find_run, is_job_process, process_started, read_status,
    submit_job,
    write_json_atomic,
)
from engine.jobs.store import _read_raw_status as read_status_raw
from engine.service.daemon import DaemonOptions, client_for, start_daemon, stop_daemon
from engine.service.remote import EngineLost, RemoteClient
from engine.service.server import INTERNAL_ERROR, ServerPolicy, bind_unix, create_app
from engine.service.workbench import Workbench
from tests.test_jobs import kill_jobs, wait_for

SELFTEST = "engine.jobs.selftest:selftest"


def test_request_bodies_over_the_limit_get_413_before_they_are_read():
    api = TestClient(create_app(Workbench()))
    big = json.dumps({"text": "x" * (9 << 20)})
    response = api.post("/tokenize", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "8 MB limit" in response.json()["detail"]

    def chunks():  # no Content-Length: counted as it streams in
        for _ in range(10):
            yield b" " * (1 << 20)

    assert api.post("/tokenize", content=chunks(), headers={"content-type": "application/json"}).status_code == 413
    small = TestClient(create_app(Workbench(), policy=ServerPolicy(max_body_mb=0.001)))
    assert small.post("/tokenize", json={"text": "y" * 2000}).status_code == 413
    assert small.post("/tokenize", json={"text": "y"}).status_code == 400  # under the limit: on to the engine
    with pytest.raises(RmxError, match="--max-body-mb"):
        ServerPolicy(max_body_mb=0)


def test_trust_remote_code_over_the_api_needs_allow_remote_code():
    body = {"base": {"source": "/no/such/model", "trust_remote_code": True}}
    refused = TestClient(create_app(Workbench())).post("/load", json=body)
    assert refused.status_code == 400 and "--allow-remote-code" in refused.json()["detail"]
    teacher = {"base": {"source": "/no/such/model"}, "teacher": {"source": "/x", "trust_remote_code": True}}
    assert TestClient(create_app(Workbench())).post("/load", json=teacher).status_code == 400
    allowed = TestClient(create_app(Workbench(), policy=ServerPolicy(allow_remote_code=True))).post("/load", json=body)
    assert allowed.status_code == 400 and "--allow-remote-code" not in allowed.json()["detail"]


def test_job_outputs_over_the_api_stay_under_the_data_folder():
    api = TestClient(create_app(Workbench()))
    for out in ("../../../etc/rmx", "/etc/rmx-out", str(data_dir() / ".." / ".." / "x"), "", 5):
        response = api.post("/jobs", json={"kind": "selftest", "entry": SELFTEST, "config": {"count": 1, "out": out}})
        assert response.status_code == 400, out
        detail = response.json()["detail"]
        assert "\n" not in detail and ("outside the engine's data folder" in detail or "must be a path" in detail)
    nested = {"count": 1, "stage": {"out_dir": "/tmp/elsewhere"}}
    assert api.post("/jobs", json={"kind": "selftest", "entry": SELFTEST, "config": nested}).status_code == 400
    assert api.get("/jobs").json() == []  # nothing was started


def test_an_engine_bug_answers_500_without_paths_or_exception_names():
    bench = Workbench()
    secret = "/root/secret/path/model.safetensors"

    def broken(text):
        raise RuntimeError(f"could not open {secret}")

    bench.tokenize = broken
    response = TestClient(create_app(bench), raise_server_exceptions=False).post("/tokenize", json={"text": "x"})
    assert response.status_code == 500 and response.json() == {"detail": INTERNAL_ERROR}
    assert "RuntimeError" not in response.text and "/root" not in response.text
    missing = TestClient(create_app(bench)).get("/jobs/20990101-000000-selftest-0000")
    assert missing.status_code == 404 and str(data_dir()) not in missing.text


def test_cancel_signals_only_the_runs_own_job_process():
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        run_dir = create_run(JobSpec("selftest", SELFTEST, {"count": 1}, "test", time.time()))
        status = json.loads((run_dir / "status.json").read_text())
        # A status.json naming a live process that is not this run's job (a recycled pid, a hand edit).
        write_json_atomic(run_dir / "status.json", {**status, "state": "running", "pid": stranger.pid,
                                                    "heartbeat": time.time(), "heartbeat_s": 30.0})
        assert not is_job_process(read_status_raw(run_dir))
        with pytest.raises(JobConflict, match="already failed"):  # its process is not the job: the job is dead
            cancel_job(run_dir.name)
        time.sleep(0.3)
        assert stranger.poll() is None  # not signalled
        assert "died" in read_status(run_dir).error

        job = submit_job("selftest", {"count": 10_000, "sleep": 0.02})
        job_dir = find_run(job.id)
        wait_for(lambda: read_status(job_dir).state == "running", what="the job to run")
        real = read_status(job_dir)
        assert real.pid_started is not None and is_job_process(real)
        assert not is_job_process(replace(real, pid_started=real.pid_started - 5))  # same pid, other start: recycled
        assert not is_job_process(replace(real, pid_started=None, id="20990101-000000-selftest-0000"))  # not its runner
        assert is_job_process(replace(real, pid_started=None))  # an older run: its runner's command line vouches
        here = replace(real, pid=os.getpid(), pid_started=process_started(os.getpid()))
        assert is_job_process(here)  # a foreground run (rmx train in this process): pid and start time vouch
        cancel_job(job.id)
        assert wait_for(lambda: not (s := read_status(job_dir)).active and s).state == "cancelled"
    finally:
        stranger.kill()
        stranger.wait()
        kill_jobs()


@pytest.fixture
def failing_server(monkeypatch):
    """The API on a real Unix socket, served by uvicorn in a thread; /tokenize of 'boom' is an engine bug (500)."""
    import uvicorn

    root = Path(tempfile.mkdtemp(prefix="rmx-", dir="/tmp"))
    bench = Workbench()

    def tokenize(text):
        if text == "boom":
            raise RuntimeError("boom")
        raise RmxError("no model loaded")

    bench.tokenize = tokenize
    sock = bind_unix(root / "t.sock")
    server = uvicorn.Server(uvicorn.Config(create_app(bench), log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="the server to start")
    yield str(root / "t.sock")
    server.should_exit = True
    thread.join(10)


def test_the_client_survives_a_server_error_50_times_in_a_row(failing_server):
    client = RemoteClient(uds=failing_server, reconnect_s=0)  # no reconnect window: only the one retry helps
    for _ in range(50):
        with pytest.raises(RmxError) as caught:
            client.tokenize("boom")
        assert not isinstance(caught.value, EngineLost) and "internal error" in str(caught.value)
        assert client.health()["ok"]
        with pytest.raises(RmxError, match="no model loaded") as caught:
            client.tokenize("fine")
        assert not isinstance(caught.value, EngineLost)
        assert client.list_jobs() == []


def _self_signed(folder: Path) -> tuple[str, str]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def test_tls_serves_https_and_allow_remote_refuses_plain_http(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a test certificate")
    cert, key = _self_signed(tmp_path)
    with pytest.raises(RmxError, match="without --tls-cert and --tls-key"):
        DaemonOptions("0.0.0.0", 0, allow_remote=True)
    with pytest.raises(RmxError, match="go together"):
        DaemonOptions("127.0.0.1", 0, tls_cert=cert)
    with pytest.raises(RmxError, match="cannot read"):
        DaemonOptions("127.0.0.1", 0, tls_cert=cert, tls_key=str(tmp_path / "nope.pem"))
    DaemonOptions("0.0.0.0", 0, allow_remote=True, tls_cert=cert, tls_key=key)  # accepted with TLS
    card = start_daemon(options=DaemonOptions("127.0.0.1", 0, tls_cert=cert, tls_key=key))
    try:
        assert card.url.startswith("https://127.0.0.1:")
        with client_for(card) as client:
            assert client.health()["pid"] == card.pid
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port gets nothing
            httpx.get(card.url.replace("https", "http") + "/health", timeout=5)
    finally:
        stop_daemon()


# --- the CLI's last edges ---------------------------------------------------------------------------------


def rmx(*args: str, user: int | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from rmx_tui.cli import main; main()", *args], capture_output=True,
                          text=True, timeout=120, user=user, env={**os.environ, **(env or {})})


def test_usage_errors_are_one_line_and_point_at_help():
    for args, where in ((["jobs", "list", "--limit", "abc"], "rmx jobs list"), (["--bogus"], "rmx"),
                        (["rollouts", "--dataset", "smoke", "--limit", "abc"], "rmx rollouts"),
                        (["jobs", "show"], "rmx jobs show")):
        result = rmx(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("rmx: error: ") and lines[0].endswith(f"; try {where} --help"), lines


def test_an_unreadable_file_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from rmx_tui import cli

    secret = tmp_path / "rollouts.jsonl"
    secret.write_text('{"x": 1}\n')
    secret.chmod(0o000)
    if os.geteuid() == 0:  # root reads anything: the file system's refusal is replayed for this one file
        real_open = Path.open

        def refusing(path, *args, **kwargs):
            if Path(path) == secret:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(Path, "open", refusing)
    monkeypatch.setattr(sys, "argv", ["rmx", "pool", "show", "--rollouts", str(secret)])
    with pytest.raises(SystemExit) as code:
        cli.main()
    assert code.value.code == 2
    assert capsys.readouterr().err.strip() == f"rmx: error: cannot read {secret}: permission denied"


def test_ctrl_c_says_how_to_resume(tmp_path, monkeypatch, capsys):
    from rmx_tui import cli
    from engine.recipes import rollouts

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rollouts, "sample_rollouts", interrupted)
    out = tmp_path / "r.jsonl"
    monkeypatch.setattr(sys, "argv", ["rmx", "rollouts", "--dataset", "smoke", "--base", "demo", "--out", str(out)])
    with pytest.raises(SystemExit) as code:
        cli.main()
    assert code.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"rmx: interrupted; resume with rmx rollouts --dataset smoke --base demo --out {out} --resume")
    monkeypatch.setattr(sys, "argv", ["rmx", "jobs", "list"])
    monkeypatch.setattr("engine.jobs.store.LocalJobs.list_jobs", interrupted)
    with pytest.raises(SystemExit):
        cli.main()
    assert capsys.readouterr().err.strip() == "rmx: interrupted"


def test_a_full_disk_on_the_engine_is_507_with_what_to_free(monkeypatch):
    import errno

    real_mkdir = Path.mkdir

    def full(path, *args, **kwargs):
        if path.name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", full)
    response = TestClient(create_app(Workbench())).post("/jobs", json={"kind": "selftest", "entry": SELFTEST,
                                                                      "config": {"count": 1}})
    assert response.status_code == 507
    assert response.json()["detail"].startswith("no space left on ")
    assert response.json()["detail"].endswith("free space and submit the job again")
    monkeypatch.setattr(Path, "mkdir", real_mkdir)  # not undo(): that would also lift the isolated data dir
    assert TestClient(create_app(Workbench())).get("/jobs").json() == []  # no half-made run is left
