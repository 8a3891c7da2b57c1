"""The daemon and its HTTP API: socket privacy, tokens, loopback-only TCP, parity with Workbench, NDJSON."""

from __future__ import annotations

import json
import shutil
import socket
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import engine.jobs.selftest  # noqa: F401  (registers selftest here, so the client sends its entry)

from engine.core.config import ModelSpec
from engine.service.daemon import client_for, connect, daemon_status, ensure_daemon, start_daemon, stop_daemon, token_path
from engine.core.errors import RmxError
from engine.jobs.store import JobConflict, JobNotFound, JobsClient, LocalJobs
from engine.core.records import ModelInfo
from engine.service.server import bind_tcp, bind_unix, check_host, create_app, ndjson_response
from engine.service.workbench import Workbench
from rmx_tui.cli import app as cli_app
from tests.test_jobs import kill_jobs

ENDPOINTS = {"/health", "/info", "/load", "/score", "/score_text", "/tokenize", "/detokenize", "/prompt_ids", "/template",
             "/token_texts", "/decode", "/intervene", "/fork", "/intervene/stream", "/fork/stream", "/grade",
             "/problems", "/pool_stats", "/generate", "/analyze", "/edit_overlap", "/jobs", "/jobs/{job_id}", "/jobs/{job_id}/events", "/jobs/{job_id}/cancel",
             "/jobs/{job_id}/resume"}


def short_tmp() -> Path:
    """Unix socket paths are limited to ~104 bytes; pytest's tmp paths can be longer."""
    return Path(tempfile.mkdtemp(prefix="rmx-", dir="/tmp"))


@pytest.fixture(scope="module")
def daemon(tiny_llama):
    """One daemon on a Unix socket, the tiny Llama loaded, with its own runtime and data dirs."""
    root = short_tmp()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RMX_RUNTIME_DIR", str(root / "run"))
        env.setenv("RMX_DATA_DIR", str(root / "data"))
        env.setenv("RMX_HEARTBEAT_S", "0.2")
        card = start_daemon()
        client = client_for(card)
        try:
            client.load(ModelSpec(str(tiny_llama), device="cpu", dtype="float32"))
            yield SimpleNamespace(card=card, client=client, root=root)
        finally:
            client.close()
            stop_daemon()
            kill_jobs()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def local(tiny_llama) -> Workbench:
    client = Workbench()
    client.load(ModelSpec(str(tiny_llama), device="cpu", dtype="float32"))
    return client


def test_the_socket_and_its_folder_are_private(daemon):
    mode = Path(daemon.card.socket).stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(Path(daemon.card.socket).parent.stat().st_mode) == 0o700
    assert daemon.card.url is None and daemon_status() == daemon.card


def test_bind_unix_makes_a_0600_socket_and_refuses_long_paths():
    root = short_tmp()
    try:
        sock = bind_unix(root / "s.sock")
        sock.close()
        assert stat.S_IMODE((root / "s.sock").stat().st_mode) == 0o600
        with pytest.raises(RmxError, match="RMX_RUNTIME_DIR"):
            bind_unix(root / ("x" * 120) / "engine.sock")
    finally:
        shutil.rmtree(root)


def test_remote_answers_match_the_local_client(daemon, local):
    remote = daemon.client
    assert isinstance(remote, JobsClient)
    assert remote.info() == local.info()
    assert isinstance(remote.info().base, ModelInfo)
    text = "Sam has 4 pencils and gets 3 more."
    ids = local.tokenize(text)
    assert remote.tokenize(text) == ids
    assert remote.detokenize(ids) == local.detokenize(ids) == text
    assert remote.token_texts(ids) == local.token_texts(ids)
    for template in ("raw", "mistral", "chat", "auto"):
        assert remote.prompt_ids("What is 12 + 30?", template) == local.prompt_ids("What is 12 + 30?", template)
        assert remote.template_choice(template) == local.template_choice(template)
    assert remote.template_choice("auto").template == "raw"  # a tiny Llama, not named instruct
    prompt = local.prompt_ids("What is 12 + 30?", "mistral")
    assert remote.score(prompt, ids, top_k=3) == local.score(prompt, ids, top_k=3)
    question = "What is 12 + 30?"
    assert remote.score_text(question, text, "mistral") == local.score_text(question, text, "mistral")


def test_refusals_are_4xx_with_a_reason_and_keep_the_loaded_model(daemon, tiny_llama, tmp_path):
    remote = daemon.client
    before = remote.info()
    with pytest.raises(RmxError, match="outside the vocabulary"):
        remote.detokenize([10**6])
    with pytest.raises(RmxError, match="empty completion"):
        remote.score([1, 2], [])
    pickles = tmp_path / "pickles"
    pickles.mkdir()
    shutil.copy(tiny_llama / "config.json", pickles / "config.json")
    (pickles / "pytorch_model.bin").write_bytes(b"not loaded, ever")
    response = remote._http.post("/load", json={"base": {"source": str(pickles)}})
    assert response.status_code == 400
    assert "safetensors only" in response.json()["detail"]
    with pytest.raises(RmxError, match="safetensors only"):
        remote.load(ModelSpec(str(pickles)))
    assert remote.info() == before
    assert before.base.extra == {} and remote.health()["ok"] is True
    # The stoppable streams: a malformed body is a 4xx before any frame; an engine refusal, the stream's error.
    for path in ("/intervene/stream", "/fork/stream"):
        assert remote._http.post(path, json={"prompt_ids": "seven", "mode": "base"}).status_code == 422
        response = remote._http.post(path, json={"prompt_ids": [1, 2], "rollout": [3], "pos": 0, "token": 3,
                                                 "mode": "base", "sampling": {"temperature": 0}})
        assert response.status_code == 400 and "temperature" in response.json()["detail"]
    with pytest.raises(RmxError, match="^oracle needs a teacher model"):
        remote.intervene([1, 2], "oracle", should_stop=lambda: False)
    with pytest.raises(RmxError, match="gold answer"):
        remote.fork_outcomes([1, 2], [3, 4], 0, 5, "", should_stop=lambda: False)
    assert remote.health()["ok"] is True


def test_pool_stats_through_the_daemon_match_the_local_client(daemon, local, tmp_path):
    from engine.recipes.pool import entropy_cache
    from tests.test_train import make_rollouts

    remote = daemon.client
    path = str(make_rollouts(tmp_path / "rollouts.jsonl", problems=3, k=2, completion_len=(6, 12)))
    plain = remote.pool_stats(path, keep_shortest=0.5)
    assert plain == local.pool_stats(path, keep_shortest=0.5) and plain.decision is None
    scored = remote.pool_stats(path, taus=("1.0", "q0.9"), with_base=True)
    assert [row.tau for row in scored.decision] == ["1", "q0.9"] and entropy_cache(path).is_file()
    # The local client finds the daemon's cached entropies: one file convention, one model key.
    assert scored == local.pool_stats(path, taus=("1.0", "q0.9"), with_base=True)
    with pytest.raises(RmxError, match="keep-shortest must be in"):
        remote.pool_stats(path, keep_shortest=0.0)
    with pytest.raises(RmxError, match="rollouts file not found"):
        remote.pool_stats(str(tmp_path / "missing.jsonl"))


def test_the_openapi_schema_is_published_and_curl_works_on_the_socket(daemon):
    schema = daemon.client._http.get("/openapi.json").json()
    assert ENDPOINTS == set(schema["paths"])  # a new endpoint is added here, and to the README's API table
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(["curl", "-s", "--unix-socket", daemon.card.socket, "http://rmx/health"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert json.loads(out)["pid"] == daemon.card.pid


def test_jobs_through_the_daemon(daemon):
    remote = daemon.client
    status = remote.submit_job("selftest", {"count": 5, "fail_at": 2})
    events = list(remote.job_events(status.id, follow=True))
    assert [e["selftest/value"] for e in events if "selftest/value" in e] == [0, 1]
    view = remote.job(status.id)
    assert view.status.state == "failed" and view.spec.config == {"count": 5, "fail_at": 2}
    assert [s.id for s in remote.list_jobs()][-1] == status.id
    with pytest.raises(JobConflict):
        remote.cancel_job(status.id)
    assert remote.resume_job(status.id).attempt == 2
    events = list(remote.job_events(status.id, follow=True))
    assert [e["selftest/value"] for e in events if "selftest/value" in e] == [0, 1, 2, 3, 4]
    assert list(remote.job_events(status.id, since=len(events) - 1)) == events[-1:]
    with pytest.raises(JobNotFound):
        remote.job("20990101-000000-selftest-0000")
    with pytest.raises(RmxError, match="count must be"):
        remote.submit_job("selftest", {"count": -1})


def test_rmx_jobs_with_connect_asks_the_daemon(daemon, monkeypatch):
    status = daemon.client.submit_job("selftest", {"count": 2})
    list(daemon.client.job_events(status.id, follow=True))

    def not_here(*args, **kwargs):
        raise AssertionError("rmx --connect jobs read the run dirs in its own process")

    for method in ("list_jobs", "job", "job_events"):
        monkeypatch.setattr(LocalJobs, method, not_here)
    runner, connect = CliRunner(), ["--connect", daemon.card.socket, "jobs"]
    listed = runner.invoke(cli_app, [*connect, "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert status.id in [job["id"] for job in json.loads(listed.output)]
    shown = runner.invoke(cli_app, [*connect, "show", status.id, "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["status"]["state"] == "done", shown.output
    logs = runner.invoke(cli_app, [*connect, "logs", status.id, "--json"])
    assert logs.exit_code == 0 and any("selftest/value" in line for line in logs.output.splitlines()), logs.output
    repair = runner.invoke(cli_app, [*connect, "repair", status.id])
    assert repair.exit_code != 0 and "without --connect" in str(repair.exception)


def test_ensure_daemon_reuses_the_running_one_and_start_refuses_a_second(daemon):
    with ensure_daemon() as client:
        assert client.health()["pid"] == daemon.card.pid
    with pytest.raises(RmxError, match="already running"):
        start_daemon()
    with pytest.raises(RmxError, match="no engine socket"):
        connect("/nonexistent/engine.sock")
    with connect(f"unix:{daemon.card.socket}") as client:
        assert client.health()["pid"] == daemon.card.pid


def test_tcp_needs_the_token_everywhere(monkeypatch):
    root = short_tmp()
    monkeypatch.setenv("RMX_RUNTIME_DIR", str(root))
    runner = CliRunner()
    app = cli_app
    try:
        started = runner.invoke(app, ["engine", "start", "--port", "0", "--json"])
        assert started.exit_code == 0, started.output
        card = json.loads(started.output)
        url, token = card["url"], card["token"]
        assert url.startswith("http://127.0.0.1:") and len(token) >= 32
        assert stat.S_IMODE(token_path().stat().st_mode) == 0o600
        assert token_path().read_text().strip() == token
        with httpx.Client(base_url=url) as raw:
            for path in ("/health", "/openapi.json", "/docs", "/jobs", "/info"):
                assert raw.get(path).status_code == 401, path
                assert raw.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert raw.post("/tokenize", json={"text": "x"}).status_code == 401
            assert raw.get("/openapi.json", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        with connect(url) as client:  # the token stored by the daemon on this machine
            assert client.health()["pid"] == card["pid"]
        with pytest.raises(RmxError, match="refused the token"):
            connect(url, token="wrong")
        status = runner.invoke(app, ["engine", "status", "--json"])
        assert json.loads(status.output)["url"] == url
        stopped = runner.invoke(app, ["engine", "stop"])
        assert stopped.exit_code == 0 and f"pid {card['pid']}" in stopped.output
        assert runner.invoke(app, ["engine", "status"]).exit_code == 1
        assert not token_path().exists()
    finally:
        stop_daemon()
        shutil.rmtree(root, ignore_errors=True)


def test_non_loopback_addresses_are_refused_without_allow_remote(monkeypatch):
    root = short_tmp()
    monkeypatch.setenv("RMX_RUNTIME_DIR", str(root))
    try:
        with pytest.raises(RmxError, match="not a loopback address"):
            start_daemon("0.0.0.0", 0)
        result = CliRunner().invoke(cli_app, ["engine", "start", "--host", "0.0.0.0", "--port", "0"])
        assert isinstance(result.exception, RmxError) and "--allow-remote" in str(result.exception)
        assert daemon_status() is None
        for host in ("0.0.0.0", "::", "10.1.2.3", "192.168.0.1"):
            with pytest.raises(RmxError):
                check_host(host, allow_remote=False)
        with pytest.raises(RmxError, match="IP address"):
            check_host("gpu-node.example", allow_remote=False)
        for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
            check_host(host, allow_remote=False)
        check_host("0.0.0.0", allow_remote=True, tls=True)
        with pytest.raises(RmxError, match="without --tls-cert and --tls-key"):
            check_host("0.0.0.0", allow_remote=True)
        refused = CliRunner().invoke(cli_app, ["engine", "start", "--host", "0.0.0.0", "--port", "0", "--allow-remote"])
        assert "SSH tunnel" in str(refused.exception) and daemon_status() is None
        sock = bind_tcp("127.0.0.1", 0)
        assert sock.proto == socket.IPPROTO_TCP  # else asyncio leaves Nagle on: +40 ms per keep-alive request
        sock.close()
        assert isinstance(LocalJobs(), JobsClient)
        with pytest.raises(RmxError, match="--host needs --port"):
            start_daemon("127.0.0.1")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_token_gate_covers_the_schema_and_docs():
    client = TestClient(create_app(Workbench(), token="s3cret"))
    for path in ("/health", "/openapi.json", "/docs", "/redoc", "/nope"):
        response = client.get(path)
        assert response.status_code == 401 and "token" in response.json()["detail"]
    assert client.get("/health", headers={"Authorization": "Bearer s3cret"}).json()["ok"] is True
    assert client.get("/health", headers={"Authorization": "s3cret"}).status_code == 401
    open_client = TestClient(create_app(Workbench()))
    assert open_client.get("/health").status_code == 200


@dataclass(frozen=True)
class Step:
    """A record frame, as a Workbench decode generator would yield."""

    token: int

    def to_json(self) -> dict:
        return {"decode/token": self.token}


def test_ndjson_response_streams_frames_and_ends_with_done():
    app = FastAPI()

    def tokens(fail: bool):
        yield {"decode/token": 1}
        yield Step(2)
        if fail:
            raise RmxError("the model ran out of context")
        yield [Step(3), {"decode/token": 4}]

    @app.get("/ok")
    def ok():
        return ndjson_response(tokens(False))

    @app.get("/fail")
    def fail():
        return ndjson_response(tokens(True))

    client = TestClient(app)
    response = client.get("/ok")
    assert response.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in response.text.splitlines()] == [
        {"decode/token": 1}, {"decode/token": 2}, {"decode/token": 3}, {"decode/token": 4}, {"done": True}]
    frames = [json.loads(line) for line in client.get("/fail").text.splitlines()]
    assert frames == [{"decode/token": 1}, {"decode/token": 2}, {"done": True, "error": "the model ran out of context"}]


def test_rmx_score_with_connect_scores_in_the_daemon(daemon, tiny_llama, monkeypatch):
    import engine.service.workbench as workbench

    def no_local_model(*args, **kwargs):
        raise AssertionError("rmx --connect score loaded a model in its own process")

    monkeypatch.setattr(workbench, "load_pair", no_local_model)
    args = ["--connect", daemon.card.socket, "score", "--base", str(tiny_llama), "--device", "cpu", "--dtype",
            "float32", "--prompt-text", "What is 1+1?", "--completion-text", "It is 2.", "--template", "raw", "--json"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    want = daemon.client.score_text("What is 1+1?", "It is 2.", "raw")
    assert got["template"] == "raw" and [t["id"] for t in got["tokens"]] == list(want.completion_ids)
    assert [t["entropy"] for t in got["tokens"]] == [t.entropy for t in want.tokens]


def _no_local_model(monkeypatch, command: str) -> None:
    import engine.service.workbench as workbench

    def no_local_model(*args, **kwargs):
        raise AssertionError(f"rmx --connect {command} loaded a model in its own process")

    monkeypatch.setattr(workbench, "load_pair", no_local_model)


def test_rmx_generate_with_connect_decodes_in_the_daemon(daemon, tiny_llama, monkeypatch):
    args = ["generate", "--base", str(tiny_llama), "--device", "cpu", "--dtype", "float32", "--prompt-text",
            "What is 2+3?", "--max-new-tokens", "6", "--temperature", "0.9", "--seed", "3", "--n", "2",
            "--force", "1:7", "--json"]
    here = CliRunner().invoke(cli_app, args)
    assert here.exit_code == 0, here.output
    _no_local_model(monkeypatch, "generate")
    there = CliRunner().invoke(cli_app, ["--connect", daemon.card.socket, *args])
    assert there.exit_code == 0, there.output
    lines = [json.loads(line) for line in there.output.splitlines()]
    assert len(lines) == 2 and all(line["tokens"][1]["id"] == 7 for line in lines)
    assert there.output == here.output  # the same completions, sampled in the daemon


def test_rmx_analyze_with_connect_runs_in_the_daemon(daemon, tiny_llama, tiny_llama_adapter, monkeypatch):
    args = ["analyze", "--base", str(tiny_llama), "--teacher-adapter", str(tiny_llama_adapter), "--device", "cpu",
            "--dtype", "float32", "--dataset", "smoke", "--limit", "2", "--max-new-tokens", "6", "--tau", "q0.8",
            "--json"]
    here = CliRunner().invoke(cli_app, args)
    assert here.exit_code == 0, here.output
    try:
        with monkeypatch.context() as patch:
            _no_local_model(patch, "analyze")
            there = CliRunner().invoke(cli_app, ["--connect", daemon.card.socket, *args])
            assert there.exit_code == 0, there.output
            # the output also holds the progress lines (stderr): the JSON document is the last line
            assert json.loads(there.output.splitlines()[-1]) == json.loads(here.output.splitlines()[-1])
            seen: list[tuple[int, int]] = []
            daemon.client.analyze("smoke", 2, "q0.8", max_new_tokens=6, on_progress=lambda *p: seen.append(p))
            assert seen == [(1, 2), (2, 2)]  # progress frames reach the caller as the daemon scores each problem
    finally:
        daemon.client.load(ModelSpec(str(tiny_llama), device="cpu", dtype="float32"))
