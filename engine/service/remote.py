"""RemoteClient: EngineClient and JobsClient over HTTP to the daemon, reconnecting with backoff."""

from __future__ import annotations

import json
import threading
import time

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import quote

import httpx

from engine.core.config import ModelSpec, Tau
from engine.core.data import Problem
from engine.core.prompts import TemplateChoice
from engine.core.decode import SamplingSpec, Step
from engine.core.errors import RmxError
from engine.core.grading import GradeResult
from engine.core.interventions import ForkEstimate, InterventionResult, Interrupted, ShouldStop
from engine.jobs.store import JobConflict, JobNotFound, JobStatus, JobView, job_entry
from engine.recipes.analysis import Analysis
from engine.recipes.overlap import RolloutEdits
from engine.recipes.pool import DEFAULT_TAUS, PoolStats
from engine.core.records import ScoredRollout
from engine.service.api import (
    AnalyzeBody, DecodeBody, EditOverlapBody, ForkBody, GenerateBody, GradeBody, IdsBody, InterveneBody, LoadBody,
    PoolStatsBody, ProblemsBody, PromptBody, ScoreBody, ScoreTextBody, SubmitBody, TemplateBody, TextBody,
)
from engine.service.workbench import FORK_SAMPLING, WorkbenchInfo

STOP_POLL_S = 0.05
"""How often a stoppable one-shot call (a score) asks its should_stop while it waits."""
STREAM_READ_TIMEOUT_S = 30.0
"""A stream idle longer than this is dead: the daemon sends a keepalive line every few seconds."""


def _never() -> bool:
    return False


class EngineLost(RmxError):
    """The daemon stopped answering (stopped, crashed, or the SSH tunnel dropped) and reconnecting failed."""


def _pairs(force: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    try:
        return [(int(pos), int(token)) for pos, token in force]
    except (TypeError, ValueError):
        raise RmxError(f"forced tokens are (position, token id) pairs, got {list(force)!r}") from None


class StepStream:
    """The steps of a decode on the daemon, yielded as they arrive.

    Close it (or leave its `with` block) to stop early: the connection is dropped, which stops the decode on the
    daemon and frees the engine. A stream dropped without closing is closed when it is garbage collected.
    An error the daemon met mid-stream is raised here as RmxError; a lost daemon as EngineLost.
    """

    def __init__(self, response: httpx.Response, frames: Iterator[dict[str, Any]]) -> None:
        self._response = response
        self._frames = frames

    def __iter__(self) -> "StepStream":
        return self

    def __next__(self) -> Step:
        return Step.from_json(next(self._frames))

    def close(self) -> None:
        try:
            self._frames.close()
        except ValueError:  # being iterated in another thread right now: closing the response ends its read
            pass
        self._response.close()

    def __enter__(self) -> "StepStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


Timeout = tuple[float, float | None, float | None, float | None]
"""A request's (connect, read, write, pool) timeouts in seconds, None for no limit."""


def _timeout(read: float | None) -> Timeout:
    """A 5-second connect timeout and `read` for the rest, as a plain tuple: any httpx-compatible client (the
    tests' Starlette TestClient is an httpx2 one) takes it, where an httpx.Timeout object ties it to httpx."""
    return (5.0, read, read, read)


def _detail(response: httpx.Response) -> str:
    """The server's one-line reason; FastAPI's validation errors (a list) become `field: reason; ...`."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', ())[1:]) or 'request'}: {item.get('msg', '')}"
            for item in detail if isinstance(item, dict)
        ) or "invalid request"
    return str(detail)


class RemoteClient:
    """Talks to a daemon on a Unix socket (`uds`) or loopback TCP (`url` + `token`).

    A request that could not reach the daemon is retried with exponential backoff for `reconnect_s`;
    then EngineLost. Requests that may have reached it are retried only when repeating them is harmless.
    """

    def __init__(self, url: str = "http://rmx", *, uds: str | Path | None = None, token: str | None = None,
                 timeout: float = 300.0, reconnect_s: float = 10.0, verify: Any = True) -> None:
        self.target = str(uds) if uds else url
        self.reconnect_s = reconnect_s
        transport = httpx.HTTPTransport(uds=str(uds)) if uds else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url, transport=transport, headers=headers, verify=verify,
                                  timeout=httpx.Timeout(timeout, connect=5.0))
        self._stream_timeout = _timeout(STREAM_READ_TIMEOUT_S)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RemoteClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport ----------------------------------------------------------------------------

    def _send(self, send: Callable[[], httpx.Response], idempotent: bool) -> httpx.Response:
        """Send, retrying what is safe to repeat: a request that never reached the daemon, with backoff for
        `reconnect_s`; an idempotent one cut by a connection reset (a stale keep-alive connection), at once, once
        even when `reconnect_s` is 0. Any answer, 4xx and 5xx included, is returned, never turned into EngineLost."""
        delay = 0.05
        deadline = time.monotonic() + self.reconnect_s
        retried = False
        while True:
            try:
                return send()
            except httpx.ReadTimeout:
                raise EngineLost(f"the engine at {self.target} did not answer in time (busy or hung?)") from None
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                failure: httpx.TransportError = error  # never reached the daemon: always safe to repeat
            except httpx.TransportError as error:
                if not idempotent:
                    raise EngineLost(f"lost the engine at {self.target} mid-request ({error}); "
                                     "check `rmx jobs list` before repeating it") from None
                failure = error
                if not retried:
                    retried = True
                    continue
            if time.monotonic() + delay > deadline:
                raise EngineLost(f"lost the engine at {self.target}: {str(failure) or type(failure).__name__} "
                                 "(is it running? rmx engine status)") from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _check(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        detail = _detail(response)
        if response.status_code == 401:
            raise RmxError(f"the engine at {self.target} refused the token: {detail}")
        if response.status_code == 404:
            raise JobNotFound(detail)
        if response.status_code == 409:
            raise JobConflict(detail)
        if response.status_code >= 500:
            raise RmxError(f"the engine failed: {detail}")
        raise RmxError(detail)

    def _call(self, method: str, path: str, body: Any = None, idempotent: bool = True,
              timeout: Timeout | None = None) -> Any:
        extra = {"timeout": timeout} if timeout is not None else {}
        response = self._send(lambda: self._http.request(method, path, json=body, **extra), idempotent)
        self._check(response)
        return response.json()

    def _open(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
              idempotent: bool = True, timeout: Timeout | None = None) -> httpx.Response:
        """Send a request whose answer is a stream; an error status raises (the response closed) before any frame."""
        extra = {"timeout": timeout} if timeout is not None else {}
        request = self._http.build_request(method, path, json=body, params=params, **extra)
        response = self._send(lambda: self._http.send(request, stream=True), idempotent)
        if response.is_success:
            return response
        try:
            response.read()
        except httpx.TransportError:  # the status line came; a body cut short leaves the status to say what failed
            raise RmxError(f"the engine answered {response.status_code} {response.reason_phrase}") from None
        finally:
            response.close()
        self._check(response)
        raise RmxError(f"the engine answered {response.status_code}")  # _check raised already; for type checkers

    def _stream(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
                idempotent: bool = True) -> Iterator[dict[str, Any]]:
        """The frames of an NDJSON stream up to its done frame (not yielded); a done frame with an error raises."""
        response = self._open(method, path, body, params, idempotent, self._stream_timeout)
        yield from self._frames(response)

    def _frames(self, response: httpx.Response, should_stop: ShouldStop | None = None) -> Iterator[dict[str, Any]]:
        """The frames of an open NDJSON response; the response is closed when they end or when this is closed.

        `should_stop` is asked at every line, keepalives included: True drops the connection (which stops the
        daemon's work) and raises Interrupted.
        """
        try:
            for line in response.iter_lines():
                if should_stop is not None and should_stop():
                    raise Interrupted()
                if not line.strip():
                    continue  # keepalive
                frame = json.loads(line)
                if frame.get("done") is True:
                    if frame.get("error"):
                        raise RmxError(frame["error"])
                    return
                yield frame
        except httpx.TransportError as error:
            reason = str(error) or type(error).__name__
            raise EngineLost(f"lost the engine at {self.target} mid-stream ({reason})") from None
        finally:
            response.close()
        raise EngineLost(f"the stream from the engine at {self.target} ended before its done frame")

    def _stoppable(self, path: str, body: Any, should_stop: ShouldStop | None,
                   on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """The answer of a stoppable call's NDJSON stream (a blank line every few tenths of a second, or progress
        events with slash keys handed to `on_event`, then the answer); should_stop is asked at every line, and True
        drops the connection, which stops the daemon's work."""
        response = self._open("POST", path, body, timeout=self._stream_timeout)
        answers = []
        for frame in self._frames(response, should_stop or _never):
            if frame and all("/" in key for key in frame):
                if on_event is not None:
                    on_event(frame)
            else:
                answers.append(frame)
        [answer] = answers
        return answer

    # --- EngineClient -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def load(self, base: ModelSpec, teacher: ModelSpec | None = None) -> WorkbenchInfo:
        body = LoadBody.wire(base=base, teacher=teacher)
        # No read timeout: a large checkpoint may take minutes to load, and the daemon answers when done.
        return WorkbenchInfo.from_json(self._call("POST", "/load", body, timeout=_timeout(None)))

    def info(self) -> WorkbenchInfo:
        return WorkbenchInfo.from_json(self._call("GET", "/info"))

    def prompt_ids(self, problem: str, template: str | None = "raw") -> list[int]:
        return self._call("POST", "/prompt_ids", PromptBody.wire(problem=problem, template=template))["ids"]

    def template_choice(self, template: str | None = "auto") -> TemplateChoice:
        data = self._call("POST", "/template", TemplateBody.wire(template=template))
        return TemplateChoice(data["template"], data["template_reason"])

    def tokenize(self, text: str) -> list[int]:
        return self._call("POST", "/tokenize", TextBody.wire(text=text))["ids"]

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._call("POST", "/detokenize", IdsBody.wire(ids=ids))["text"]

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        return self._call("POST", "/token_texts", IdsBody.wire(ids=ids))["texts"]

    def score(self, prompt: Sequence[int], completion: Sequence[int], top_k: int = 5,
              with_teacher: bool = True, *, should_stop: ShouldStop | None = None) -> ScoredRollout:
        """With `should_stop`, the call waits on a daemon thread so that True raises Interrupted at once.

        The daemon finishes that score (one call, no stream to drop); only the caller stops waiting for it.
        """
        body = ScoreBody.wire(prompt=prompt, completion=completion, top_k=top_k, with_teacher=with_teacher)
        if should_stop is None:
            return ScoredRollout.from_json(self._call("POST", "/score", body))
        outcome: list[Any] = []

        def call() -> None:
            try:
                outcome.append(self._call("POST", "/score", body))
            except BaseException as error:  # handed back to the waiting thread below
                outcome.append(error)

        waiter = threading.Thread(target=call, name="rmx-score", daemon=True)
        waiter.start()
        while waiter.is_alive():
            if should_stop():
                raise Interrupted("scoring stopped")
            waiter.join(STOP_POLL_S)
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return ScoredRollout.from_json(outcome[0])

    def score_text(self, prompt: str, completion: str, template: str | None = "raw", top_k: int = 5,
                   with_teacher: bool = True) -> ScoredRollout:
        body = ScoreTextBody.wire(prompt=prompt, completion=completion, template=template, top_k=top_k,
                                  with_teacher=with_teacher)
        return ScoredRollout.from_json(self._call("POST", "/score_text", body))

    def decode(self, prompt: Sequence[int], sampling: SamplingSpec = SamplingSpec(), rollout: Sequence[int] = (),
               force: Sequence[tuple[int, int]] = (), n: int = 1, top: int = 5) -> StepStream:
        """Stream a decode from the daemon; bad input raises here, before the first step, as it does locally.

        The request waits for the first step (a long prompt's prefill) under the client's own timeout.
        """
        body = DecodeBody.wire(prompt=prompt, sampling=sampling, rollout=rollout, force=_pairs(force), n=n, top=top)
        response = self._open("POST", "/decode", body)
        return StepStream(response, self._frames(response))

    def intervene(self, prompt_ids: Sequence[int], mode: str, sampling: SamplingSpec = SamplingSpec(),
                  tau: str | float | Tau | None = None, gold: str | None = None,
                  force: Sequence[tuple[int, int]] = (), rollout: Sequence[int] = (),
                  top: int = 5, *, should_stop: ShouldStop | None = None) -> InterventionResult:
        """One completion under `mode` on the daemon; no read timeout, as a long decode answers only when done.

        With `should_stop` the run is streamed instead, and stopped on the daemon (Interrupted here) once it says
        True.
        """
        body = InterveneBody.wire(prompt_ids=prompt_ids, mode=mode, sampling=sampling, tau=tau, gold=gold,
                                  force=_pairs(force), rollout=rollout, top=top)
        if should_stop is not None:
            return InterventionResult.from_json(self._stoppable("/intervene/stream", body, should_stop))
        data = self._call("POST", "/intervene", body, timeout=_timeout(None))
        return InterventionResult.from_json(data)

    def fork_outcomes(self, prompt_ids: Sequence[int], rollout: Sequence[int], pos: int, token: int, gold: str,
                      n: int = 8, sampling: SamplingSpec = FORK_SAMPLING, *,
                      should_stop: ShouldStop | None = None) -> ForkEstimate:
        """P(correct | token at pos) from n continuations sampled on the daemon; no read timeout, as intervene.

        With `should_stop` the estimate is streamed, and stopped on the daemon as intervene's run is.
        """
        body = ForkBody.wire(prompt_ids=prompt_ids, rollout=rollout, pos=pos, token=token, gold=gold, n=n,
                             sampling=sampling)
        if should_stop is not None:
            return ForkEstimate.from_json(self._stoppable("/fork/stream", body, should_stop))
        data = self._call("POST", "/fork", body, timeout=_timeout(None))
        return ForkEstimate.from_json(data)

    def edit_overlap(self, prompt_ids: Sequence[int], adapter: str, max_new_tokens: int = 256) -> RolloutEdits:
        """The overlap from the daemon (`adapter` is a path on its machine); no read timeout, as decoding and
        scoring twice answers only when done."""
        body = EditOverlapBody.wire(prompt_ids=prompt_ids, adapter=str(adapter), max_new_tokens=max_new_tokens)
        return RolloutEdits.from_json(self._call("POST", "/edit_overlap", body,
                                                 timeout=_timeout(None)))

    def generate(self, prompt_ids: Sequence[int], sampling: SamplingSpec = SamplingSpec(),
                 force: Sequence[tuple[int, int]] = (), intervene: str | None = None,
                 tau: str | float | Tau | None = None, n: int = 1, gold: str | None = None, top: int = 5, *,
                 should_stop: ShouldStop | None = None) -> list[InterventionResult]:
        """n completions on the daemon, streamed: leaving early (Ctrl-C, or should_stop saying True) drops the
        connection, which stops the daemon's run."""
        body = GenerateBody.wire(prompt_ids=prompt_ids, sampling=sampling, force=_pairs(force), intervene=intervene,
                                 tau=tau, n=n, gold=gold, top=top)
        return [InterventionResult.from_json(r) for r in self._stoppable("/generate", body, should_stop)["results"]]

    def analyze(self, dataset: str, limit: int | None = None, tau: str | float | Tau = "1.4",
                template: str | None = "auto", max_new_tokens: int = 512, batch_size: int | None = None, *,
                should_stop: ShouldStop | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> Analysis:
        """Table 2 on the daemon (`dataset` is a bundled name or a path on its machine), progress as it goes."""
        body = AnalyzeBody.wire(dataset=dataset, limit=limit, tau=tau, template=template,
                                max_new_tokens=max_new_tokens, batch_size=batch_size)

        def on_event(event: dict[str, Any]) -> None:
            if on_progress is not None and "analyze/done" in event:
                on_progress(event["analyze/done"], event["analyze/total"])

        return Analysis.from_json(self._stoppable("/analyze", body, should_stop, on_event))

    def pool_stats(self, rollouts: str, size: int | None = None, keep_shortest: float = 1.0,
                   taus: Sequence[str] = DEFAULT_TAUS, with_base: bool = False) -> PoolStats:
        """The pool's stats from the daemon (`rollouts` is a path on its machine); no read timeout, as scoring a
        large pool under the base answers only when done."""
        body = PoolStatsBody.wire(rollouts=str(rollouts), size=size, keep_shortest=keep_shortest, taus=taus,
                                  with_base=with_base)
        return PoolStats.from_json(self._call("POST", "/pool_stats", body, timeout=_timeout(None)))

    def grade(self, completion: str, gold: str, finish: str | None = None,
              extract: str = "strict") -> GradeResult:
        body = GradeBody.wire(completion=completion, gold=gold, finish=finish, extract=extract)
        return GradeResult(**self._call("POST", "/grade", body))

    def problems(self, dataset: str, limit: int | None = None) -> list[Problem]:
        data = self._call("POST", "/problems", ProblemsBody.wire(dataset=dataset, limit=limit))
        return [Problem(**item) for item in data["problems"]]

    # --- JobsClient ---------------------------------------------------------------------------

    def list_jobs(self) -> list[JobStatus]:
        return [JobStatus.from_json(item) for item in self._call("GET", "/jobs")]

    def submit_job(self, kind: str, config: dict[str, Any], entry: str | None = None) -> JobStatus:
        """Start a job on the daemon; a kind registered in this process sends its entry, so the daemon can import it."""
        body = SubmitBody.wire(kind=kind, config=config, entry=entry or job_entry(kind))
        return JobStatus.from_json(self._call("POST", "/jobs", body, idempotent=False))

    def job(self, job_id: str) -> JobView:
        return JobView.from_json(self._call("GET", f"/jobs/{quote(job_id, safe='')}"))

    def job_events(self, job_id: str, follow: bool = False, since: int = 0) -> Iterator[dict[str, Any]]:
        """The job's events; a dropped stream is resumed after the last event seen, within `reconnect_s`."""
        seen = since
        lost_at: float | None = None
        path = f"/jobs/{quote(job_id, safe='')}/events"
        while True:
            try:
                for event in self._stream("GET", path, params={"follow": follow, "since": seen}):
                    seen += 1
                    lost_at = None
                    yield event
                return
            except EngineLost:
                now = time.monotonic()
                lost_at = lost_at or now
                if now - lost_at > self.reconnect_s:
                    raise

    def cancel_job(self, job_id: str) -> JobStatus:
        return JobStatus.from_json(self._call("POST", f"/jobs/{quote(job_id, safe='')}/cancel"))

    def resume_job(self, job_id: str) -> JobStatus:
        return JobStatus.from_json(self._call("POST", f"/jobs/{quote(job_id, safe='')}/resume", idempotent=False))
