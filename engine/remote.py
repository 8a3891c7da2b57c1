"""RemoteClient: EngineClient and JobsClient over HTTP to the daemon, reconnecting with backoff."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import quote

import httpx

from engine.config import ModelSpec
from engine.errors import RmxError
from engine.jobs import JobConflict, JobNotFound, JobStatus, JobView, job_entry
from engine.records import ModelInfo, ScoredRollout
from engine.workbench import WorkbenchInfo

STREAM_READ_TIMEOUT_S = 30.0
"""A stream idle longer than this is dead: the daemon sends a keepalive line every few seconds."""


class EngineLost(RmxError):
    """The daemon stopped answering (stopped, crashed, or the SSH tunnel dropped) and reconnecting failed."""


def _info_from_json(data: dict[str, Any]) -> WorkbenchInfo:
    return WorkbenchInfo(
        base=ModelInfo(**data["base"]) if data.get("base") else None,
        teacher=ModelInfo(**data["teacher"]) if data.get("teacher") else None,
    )


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
                 timeout: float = 300.0, reconnect_s: float = 10.0) -> None:
        self.target = str(uds) if uds else url
        self.reconnect_s = reconnect_s
        transport = httpx.HTTPTransport(uds=str(uds)) if uds else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url, transport=transport, headers=headers,
                                  timeout=httpx.Timeout(timeout, connect=5.0))
        self._stream_timeout = httpx.Timeout(STREAM_READ_TIMEOUT_S, connect=5.0)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RemoteClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport ----------------------------------------------------------------------------

    def _send(self, send: Callable[[], httpx.Response], idempotent: bool) -> httpx.Response:
        delay = 0.05
        deadline = time.monotonic() + self.reconnect_s
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
              timeout: httpx.Timeout | None = None) -> Any:
        extra = {"timeout": timeout} if timeout is not None else {}
        response = self._send(lambda: self._http.request(method, path, json=body, **extra), idempotent)
        self._check(response)
        return response.json()

    def _stream(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
                idempotent: bool = True) -> Iterator[dict[str, Any]]:
        """The frames of an NDJSON stream up to its done frame (not yielded); a done frame with an error raises."""
        request = self._http.build_request(method, path, json=body, params=params, timeout=self._stream_timeout)
        response = self._send(lambda: self._http.send(request, stream=True), idempotent)
        try:
            if not response.is_success:
                response.read()
                self._check(response)
            for line in response.iter_lines():
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

    # --- EngineClient -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def load(self, base: ModelSpec, teacher: ModelSpec | None = None) -> WorkbenchInfo:
        body = {"base": asdict(base), "teacher": asdict(teacher) if teacher else None}
        # No read timeout: a large checkpoint may take minutes to load, and the daemon answers when done.
        return _info_from_json(self._call("POST", "/load", body, timeout=httpx.Timeout(None, connect=5.0)))

    def info(self) -> WorkbenchInfo:
        return _info_from_json(self._call("GET", "/info"))

    def prompt_ids(self, problem: str, template: str | None = "raw") -> list[int]:
        return self._call("POST", "/prompt_ids", {"problem": problem, "template": template})["ids"]

    def tokenize(self, text: str) -> list[int]:
        return self._call("POST", "/tokenize", {"text": text})["ids"]

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._call("POST", "/detokenize", {"ids": [int(i) for i in ids]})["text"]

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        return self._call("POST", "/token_texts", {"ids": [int(i) for i in ids]})["texts"]

    def score(self, prompt: Sequence[int], completion: Sequence[int], top_k: int = 5,
              with_teacher: bool = True) -> ScoredRollout:
        body = {"prompt_ids": [int(i) for i in prompt], "completion_ids": [int(i) for i in completion],
                "top_k": top_k, "with_teacher": with_teacher}
        return ScoredRollout.from_json(self._call("POST", "/score", body))

    def score_text(self, prompt: str, completion: str, template: str | None = "raw", top_k: int = 5,
                   with_teacher: bool = True) -> ScoredRollout:
        body = {"prompt": prompt, "completion": completion, "template": template, "top_k": top_k,
                "with_teacher": with_teacher}
        return ScoredRollout.from_json(self._call("POST", "/score_text", body))

    # --- JobsClient ---------------------------------------------------------------------------

    def list_jobs(self) -> list[JobStatus]:
        return [JobStatus.from_json(item) for item in self._call("GET", "/jobs")]

    def submit_job(self, kind: str, config: dict[str, Any], entry: str | None = None) -> JobStatus:
        """Start a job on the daemon; a kind registered in this process sends its entry, so the daemon can import it."""
        body = {"kind": kind, "config": config, "entry": entry or job_entry(kind)}
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
