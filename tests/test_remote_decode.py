"""Decode, interventions and forks over the daemon's API: step-for-step parity with Workbench, errors, cancels."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fastapi.testclient import TestClient

from engine.service.client import EngineClient
from engine.core.config import ModelSpec, Tau
from engine.core.decode import SamplingSpec, Step
from engine.core.errors import RmxError
from engine.core.interventions import ForkEstimate, InterventionResult, Interrupted
from engine.core.records import TopToken
from engine.service.remote import RemoteClient, StepStream
from engine.service.server import create_app
from engine.service.workbench import Workbench
from tests.test_jobs import kill_jobs

QUESTION = "Sam has 4 pencils and gets 3 more. How many pencils does Sam have now?"


@pytest.fixture(scope="module")
def engines(tiny_llama, tiny_llama_adapter):
    """A daemon and a Workbench with the same models, both on one CPU thread so that their floats agree bit for bit.

    Every test calls both in lockstep, so that their decode caches hold the same history.
    """
    root = Path(tempfile.mkdtemp(prefix="rmx-", dir="/tmp"))  # a socket path must stay short
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    from engine.service.daemon import client_for, start_daemon, stop_daemon

    with pytest.MonkeyPatch.context() as env:
        env.setenv("RMX_RUNTIME_DIR", str(root / "run"))
        env.setenv("RMX_DATA_DIR", str(root / "data"))
        env.setenv("OMP_NUM_THREADS", "1")
        card = start_daemon()
        remote = client_for(card)
        try:
            base = ModelSpec(str(tiny_llama), device="cpu", dtype="float32")
            teacher = ModelSpec(str(tiny_llama), adapter=str(tiny_llama_adapter), device="cpu", dtype="float32")
            local = Workbench()
            assert remote.load(base, teacher) == local.load(base, teacher)
            prompt = local.prompt_ids(QUESTION, "mistral")
            yield SimpleNamespace(local=local, remote=remote, card=card, prompt=prompt)
        finally:
            remote.close()
            stop_daemon()
            kill_jobs()
            torch.set_num_threads(previous)
    shutil.rmtree(root, ignore_errors=True)


def both(engines, call):
    """`call` on the local client, then on the remote one (in that order, always)."""
    return call(engines.local), call(engines.remote)


def test_both_clients_are_engine_clients(engines):
    assert isinstance(engines.remote, EngineClient) and isinstance(engines.local, EngineClient)
    local, remote = both(engines, lambda c: c.info())
    assert local == remote and type(remote.to_json()) is dict
    assert type(local).from_json(local.to_json()) == local


def test_remote_decode_equals_local_step_for_step(engines):
    prompt = engines.prompt
    greedy = SamplingSpec(max_new_tokens=12)
    local, remote = both(engines, lambda c: list(c.decode(prompt, greedy, top=4)))
    assert remote == local and len(remote) == 12 and remote[-1].end == "length"
    assert all(isinstance(s, Step) and len(s.top) == 4 and isinstance(s.top[0], TopToken) for s in remote)

    forced_token = (local[3].id + 1) % 300
    force = [(3, forced_token)]
    local, remote = both(engines, lambda c: list(c.decode(prompt, greedy, rollout=[s.id for s in local], force=force)))
    assert remote == local
    assert remote[0].pos == 3 and remote[0].source == "forced" and remote[0].id == forced_token

    sampled = SamplingSpec(greedy=False, temperature=0.9, top_p=0.95, seed=5, max_new_tokens=8, stop=("7",))
    local, remote = both(engines, lambda c: list(c.decode(prompt, sampled, n=2)))
    assert remote == local and {s.row for s in remote} == {0, 1}
    assert all(s.end in (None, "eos", "stop", "length") for s in remote)


def test_an_error_before_the_first_step_is_a_400_with_the_same_message(engines):
    prompt = engines.prompt
    spec = SamplingSpec(max_new_tokens=4)
    cases = [dict(force=[(0, 10**6)]), dict(force=[(9, 5)]), dict(prompt=[]), dict(prompt=[5] * 600),
             dict(rollout=[1, 2], force=[(0, 1), (0, 2)])]
    for case in cases:
        args = dict(prompt=prompt, force=(), rollout=())
        args.update(case)
        messages = []
        for client in (engines.local, engines.remote):
            with pytest.raises(RmxError) as error:
                client.decode(args["prompt"], spec, rollout=args["rollout"], force=args["force"])
            messages.append(str(error.value))
        assert messages[0] == messages[1] and "\n" not in messages[1], case
    response = engines.remote._http.post("/decode", json={"prompt_ids": prompt, "force": [[0, 10**6]]})
    assert response.status_code == 400 and "outside the vocabulary" in response.json()["detail"]


def test_intervene_and_fork_over_the_wire_equal_local(engines):
    prompt = engines.prompt
    spec = SamplingSpec(max_new_tokens=10)
    calls = [("base", None, ()), ("teacher", None, ()), ("oracle", None, ()), ("random", None, ()),
             ("gated", "q0.5", ()), ("gated", Tau(0.25), ()), ("manual", None, ((2, 17), (5, 40)))]
    for mode, tau, force in calls:
        local, remote = both(engines, lambda c: c.intervene(prompt, mode, spec, tau=tau, gold="7", force=force))
        assert isinstance(remote, InterventionResult) and remote == local, mode
        assert remote.mode == mode and remote.gold == "7" and remote.correct is not None
    assert remote.touched == (2, 5)
    with pytest.raises(RmxError, match="unknown mode"):
        engines.remote.intervene(prompt, "sideways", spec)
    with pytest.raises(RmxError, match="needs τ"):
        engines.remote.intervene(prompt, "gated", spec)

    answer = engines.local.tokenize(" The answer is \\boxed{7}.")
    rollout = answer + [s.id for s in both(engines, lambda c: c.intervene(prompt + answer, "base", spec))[0].steps]
    fork_spec = SamplingSpec(greedy=False, temperature=0.6, top_p=0.95, seed=3, max_new_tokens=6)
    pos = len(answer)
    local, remote = both(engines, lambda c: c.fork_outcomes(prompt, rollout, pos, rollout[pos], "7", 3, fork_spec))
    assert isinstance(remote, ForkEstimate) and remote == local
    assert remote.n == 3 and len(remote.continuations) == 3 and remote.correct >= 1
    with pytest.raises(RmxError, match="gold"):
        engines.remote.fork_outcomes(prompt, rollout, pos, rollout[pos], "", 2, fork_spec)


def test_grade_and_problems_over_the_wire(engines):
    text = "so the answer is \\boxed{7}."
    assert engines.remote.grade(text, "7") == engines.local.grade(text, "7")
    assert engines.remote.problems("smoke", limit=3) == engines.local.problems("smoke", limit=3)
    with pytest.raises(RmxError, match="unknown dataset|not found|no such"):
        engines.remote.problems("no-such-benchmark")


def _prompt_score_returns_promptly(engines, prompt) -> float:
    """Seconds a score call takes on a fresh connection; the lock held by a stuck stream would make it time out."""
    with RemoteClient(uds=engines.card.socket, timeout=20.0) as other:
        began = time.monotonic()
        other.score(prompt, prompt[:3])
        return time.monotonic() - began


def test_closing_a_remote_decode_mid_stream_frees_the_engine(engines):
    prompt = engines.prompt
    # 64 rows × 480 steps of frames is megabytes: far more than the socket buffers, so the daemon is still
    # decoding (blocked on the socket, holding the lock) when the client lets go.
    long = SamplingSpec(greedy=False, seed=1, max_new_tokens=480)
    for take in (3, 1):
        local = engines.local.decode(prompt, long, n=64)
        with closing(local):
            [next(local) for _ in range(take)]  # the same cache history as the daemon's
        stream = engines.remote.decode(prompt, long, n=64)
        assert isinstance(stream, StepStream)
        if take > 1:
            steps = [next(stream) for _ in range(take)]
            assert [s.row for s in steps] == [0, 1, 2]
        stream.close()  # with take == 1: closed before iterating, the first step already computed by the daemon
        assert _prompt_score_returns_promptly(engines, prompt) < 10
    # Dropped without a close: the garbage collector closes it.
    local = engines.local.decode(prompt, long, n=64)
    next(local)
    local.close()
    stream = engines.remote.decode(prompt, long, n=64)
    next(stream)
    del stream
    assert _prompt_score_returns_promptly(engines, prompt) < 10
    local, remote = both(engines, lambda c: list(c.decode(prompt, SamplingSpec(max_new_tokens=5))))
    assert remote == local


def test_stopping_a_remote_intervention_or_fork_stops_the_daemon_and_frees_it(engines):
    prompt = engines.prompt
    long = SamplingSpec(max_new_tokens=480)
    local = engines.local.intervene(prompt, "oracle", long, gold="7")
    began = time.monotonic()
    remote = engines.remote.intervene(prompt, "oracle", long, gold="7", should_stop=lambda: False)
    whole = time.monotonic() - began
    assert remote == local and len(remote.steps) > 100, "streamed, never stopped: the plain answer"

    answer = engines.local.tokenize(" The answer is \\boxed{7}.")
    rollout = answer + list(local.completion_ids[:8])
    pos = len(answer)
    # Each takes longer than the oracle run above: a gated run decodes twice (its τ's reference rollout first),
    # and 64 sampled rows of up to 480 tokens take several times as long.
    wide = SamplingSpec(greedy=False, temperature=0.6, top_p=0.95, max_new_tokens=480)
    calls = {"intervene": lambda stop: engines.remote.intervene(prompt, "gated", long, tau="q0.5", gold="7",
                                                                should_stop=stop),
             "fork": lambda stop: engines.remote.fork_outcomes(prompt, rollout, pos, rollout[pos], "7", 64, wide,
                                                               should_stop=stop)}
    for name, call in calls.items():
        began = time.monotonic()
        call(lambda: False)
        full = max(time.monotonic() - began, whole)  # the call's own uninterrupted length: the baseline
        began = time.monotonic()
        with pytest.raises(Interrupted, match="^intervention stopped$"):
            call(lambda: time.monotonic() > began + min(0.2, full / 8))
        stopped = time.monotonic() - began
        # Had the daemon gone on with the call, the next request would wait for the lock until its end.
        assert stopped + _prompt_score_returns_promptly(engines, prompt) < full / 2, name
    local, remote = both(engines, lambda c: c.intervene(prompt, "oracle", SamplingSpec(max_new_tokens=10), gold="7"))
    assert remote.completion_ids == local.completion_ids and remote.touched == local.touched


class _Scripted:
    """A Workbench stand-in whose decode fails at a chosen step; it records whether its stream was closed."""

    def __init__(self, fail_at: int | None, count: int = 3) -> None:
        self.fail_at = fail_at
        self.count = count
        self.closed = threading.Event()

    def decode(self, prompt, sampling, rollout, force, n, top):
        def steps():
            try:
                for pos in range(self.count):
                    if pos == self.fail_at:
                        raise RmxError(f"the model ran out of context at position {pos}")
                    yield Step(pos=pos, id=pos + 1, text="x", logprob=-0.5, entropy=float("nan"),
                               top=(TopToken(id=pos + 1, text="x", logprob=-0.5),), source="base",
                               end="length" if pos == self.count - 1 else None)
            finally:
                self.closed.set()

        return steps()


def _scripted_client(workbench) -> RemoteClient:
    client = RemoteClient(reconnect_s=0)
    client._http.close()
    client._http = TestClient(create_app(workbench), base_url="http://rmx")
    return client


def test_errors_before_and_during_a_stream_reach_the_caller():
    failing_first = _Scripted(fail_at=0)
    with _scripted_client(failing_first) as client:
        response = client._http.post("/decode", json={"prompt_ids": [1, 2]})
        assert response.status_code == 400
        assert response.json()["detail"] == "the model ran out of context at position 0"
        with pytest.raises(RmxError, match="^the model ran out of context at position 0$"):
            client.decode([1, 2])
    assert failing_first.closed.is_set()

    failing_later = _Scripted(fail_at=2)
    with _scripted_client(failing_later) as client:
        stream = client.decode([1, 2])
        first, second = next(stream), next(stream)
        assert (first.pos, second.pos) == (0, 1) and first.entropy != first.entropy  # NaN comes back as NaN
        with pytest.raises(RmxError, match="^the model ran out of context at position 2$"):
            next(stream)
        stream.close()
    assert failing_later.closed.wait(5)

    fine = _Scripted(fail_at=None)
    with _scripted_client(fine) as client:
        steps = list(client.decode([1, 2]))
        assert [s.pos for s in steps] == [0, 1, 2] and steps[-1].end == "length"


def test_a_slow_step_gets_keepalive_lines_meanwhile(monkeypatch):
    monkeypatch.setattr("engine.service.server.KEEPALIVE_S", 0.05)

    class Slow(_Scripted):
        def decode(self, *args, **kwargs):
            steps = super().decode(*args, **kwargs)

            def slow():
                with closing(steps):
                    for step in steps:
                        time.sleep(0.3)
                        yield step

            return slow()

    with _scripted_client(Slow(fail_at=None)) as client:
        lines = client._http.post("/decode", json={"prompt_ids": [1]}).text.split("\n")
        assert "" in lines[1:-1] and json.loads(lines[-2]) == {"done": True}
        assert [s.pos for s in client.decode([1])] == [0, 1, 2]


def test_a_stoppable_call_streams_blank_lines_then_its_answer_then_done(monkeypatch):
    monkeypatch.setattr("engine.service.server.WORKING_S", 0.05)
    step = Step(pos=0, id=1, text="x", logprob=-0.5, entropy=1.0, top=(TopToken(1, "x", -0.5),), source="base",
                end="length")
    result = InterventionResult(mode="base", steps=(step,), completion_ids=(1,), text="x", touched=())

    class Slow:
        def intervene(self, prompt_ids, mode, *args, should_stop, **kwargs):
            time.sleep(0.3)
            if mode == "manual":
                raise RmxError("the device ran out of memory (simulated)")
            return result

    with _scripted_client(Slow()) as client:
        lines = client._http.post("/intervene/stream", json={"prompt_ids": [1], "mode": "base"}).text.split("\n")
        assert "" in lines[:-3] and not any(lines[:-3])
        assert json.loads(lines[-3]) == result.to_json(with_ids=True) and json.loads(lines[-2]) == {"done": True}
        asked = []

        def never() -> bool:
            asked.append(True)
            return False

        assert client.intervene([1], "base", should_stop=never) == result
        assert len(asked) >= 3, "asked at every line: the blank ones, the answer and done"
        with pytest.raises(RmxError, match=r"^the device ran out of memory \(simulated\)$"):
            client.intervene([1], "manual", should_stop=lambda: False)


def test_step_json_round_trips_and_keeps_the_public_shape():
    step = Step(pos=4, id=9, text=" 7", logprob=-0.25, entropy=1.5, top=(TopToken(9, " 7", -0.25),
                TopToken(3, "8", -2.0)), source="teacher", row=1, end="eos")
    assert list(step.to_json()) == ["pos", "id", "text", "source", "entropy"]
    assert Step.from_json(step.to_json(with_ids=True)) == step


def test_an_unloaded_workbench_refuses_in_one_line():
    client = Workbench()
    for call in (lambda: client.intervene([1, 2], "base"), lambda: client.fork_outcomes([1], [2, 3], 0, 1, "7")):
        with pytest.raises(RmxError, match="no model is loaded"):
            call()


def test_edit_overlap_over_the_wire(engines, tiny_llama_adapter, tmp_path):
    prompt = engines.prompt[:40]
    # The teacher's own adapter: every teacher edit is an adapter edit too, to the same token.
    remote = engines.remote.edit_overlap(prompt, str(tiny_llama_adapter), 8)
    assert remote == engines.local.edit_overlap(prompt, str(tiny_llama_adapter), 8)
    assert set(remote.kinds) <= {"both", None} and "both" in remote.kinds
    assert remote.teacher_ids == remote.adapter_ids
    with pytest.raises(RmxError, match="adapter"):
        engines.remote.edit_overlap(prompt, str(tmp_path / "no-such-adapter"), 8)
