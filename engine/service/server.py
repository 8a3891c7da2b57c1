"""The engine's HTTP API: the Workbench and the jobs as JSON and NDJSON streams, on a Unix socket or loopback TCP."""

from __future__ import annotations

import asyncio
from collections import deque
import hmac
import ipaddress
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Callable, Iterable, Iterator

import anyio
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from engine.core.diskfull import DiskFull, disk_full, is_disk_full
from engine.core.errors import RmxError
from engine.jobs.store import (
    POLL_S, EventTail, JobConflict, JobNotFound, RunDamaged, check_outputs, data_dir, find_run,
    json_bytes, load_run, rmx_version,
)
from engine.service.api import (
    Body,
    AnalyzeBody, DecodeBody, EditOverlapBody, ForkBody, GenerateBody, GradeBody, IdsBody, InterveneBody, LoadBody,
    PoolStatsBody, ProblemsBody, PromptBody, ScoreBody, ScoreTextBody, SubmitBody, TemplateBody, TextBody,
)
from engine.service.workbench import Workbench, WorkbenchInfo

KEEPALIVE_S = 5.0
"""An idle stream sends a blank line this often, so clients and tunnels can tell idle from dead."""
WORKING_S = 0.1
"""A stoppable call's stream sends a blank line this often while it works: the client checks between lines
whether its caller wants it stopped."""
UNIX_PATH_MAX = 104
"""The shortest sun_path limit among the platforms we run on (macOS), less the NUL."""
DEFAULT_MAX_BODY_MB = 8


@dataclass(frozen=True)
class ServerPolicy:
    """What the API lets its callers do beyond the defaults; the daemon's flags map one to one onto it."""

    allow_remote_code: bool = False
    """`POST /load` may set trust_remote_code (run a checkpoint's own Python in the daemon); off by default."""
    max_body_mb: float = DEFAULT_MAX_BODY_MB
    """Larger request bodies are refused with 413 before they are read."""

    def __post_init__(self) -> None:
        if not (0 < self.max_body_mb <= 4096):
            raise RmxError(f"--max-body-mb must be in (0, 4096], got {self.max_body_mb}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * (1 << 20))

log = logging.getLogger("rmx.engine")


class _JSON(JSONResponse):
    """Responses as standard JSON: a NaN entropy must reach the client as null, not crash the request."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def info_json(info: WorkbenchInfo) -> dict[str, Any]:
    return info.to_json()


def _jsonable(value: Any) -> Any:
    """A problem's meta as plain JSON: values JSON has no type for (images, arrays) are sent as their text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


# --- streams ------------------------------------------------------------------------------------


def _line(data: Any) -> bytes:
    return json_bytes(data.to_json() if hasattr(data, "to_json") else data) + b"\n"


def _next(iterator: Iterator[Any]) -> tuple[bool, Any]:
    try:
        return False, next(iterator)
    except StopIteration:
        return True, None


async def _in_threads(iterator: Iterator[Any], close: Callable[[], Any] | None) -> AsyncIterator[Any]:
    """Drive a blocking iterator (a Workbench generator) from worker threads; close it when the client leaves.

    While one item takes longer than KEEPALIVE_S, None (a keepalive) is yielded meanwhile. The iterator is
    closed once the item in progress is done: a generator cannot be closed while a thread runs it.
    """
    pending: asyncio.Future | None = None
    try:
        while True:
            pending = asyncio.ensure_future(run_in_threadpool(_next, iterator))
            while not (await asyncio.wait({pending}, timeout=KEEPALIVE_S))[0]:
                yield None
            finished, item = pending.result()
            pending = None
            if finished:
                return
            yield item
    finally:
        with anyio.CancelScope(shield=True):  # release the Workbench even when the request is cancelled
            if pending is not None:
                await asyncio.wait({pending})
                if not pending.cancelled():
                    pending.exception()  # the client left: an error of the step in progress has nobody to reach
            if close is not None:
                await run_in_threadpool(close)


async def _ndjson(frames: Iterable[Any] | AsyncIterator[Any], close: Callable[[], Any] | None) -> AsyncIterator[bytes]:
    source = frames if hasattr(frames, "__anext__") else _in_threads(iter(frames), close)
    try:
        async for frame in source:
            if frame is None:
                yield b"\n"
            elif isinstance(frame, bytes):
                yield frame
            elif isinstance(frame, list):
                yield b"".join(_line(f) for f in frame)
            else:
                data = frame.to_json() if hasattr(frame, "to_json") else frame
                yield _line(data)
                if isinstance(data, dict) and data.get("done") is True:
                    return
    except RmxError as error:
        yield _line({"done": True, "error": str(error)})
        return
    except Exception:  # an engine bug: end the stream cleanly, keep the trace in the daemon log
        log.exception("stream failed")
        yield _line({"done": True, "error": INTERNAL_ERROR})
        return
    finally:
        await source.aclose()
    yield _line({"done": True})


class _ClosingStream(StreamingResponse):
    """A StreamingResponse that closes its source however the response ends: done, failed, or the client gone.

    Starlette cancels a stream whose client left without closing its body iterator (and never starts it when
    the client left before the headers went out), so a Workbench generator holding the model lock would wait
    for the garbage collector. Here the body and `close` run as soon as the response is over.
    """

    def __init__(self, content: AsyncIterator[bytes], close: Callable[[], Any] | None) -> None:
        super().__init__(content, media_type="application/x-ndjson")
        self._close = close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.body_iterator.aclose()
                except RuntimeError:  # still running in a task of its own: that task closes it as it ends
                    pass
                if self._close is not None:
                    await run_in_threadpool(self._close)


def _drained(progress: deque[dict[str, Any]] | None) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while progress:
        frames.append(progress.popleft())
    return frames


async def _stoppable(call: Callable[[Callable[[], bool]], Any],
                     progress: deque[dict[str, Any]] | None = None) -> AsyncIterator[Any]:
    """Run a blocking engine call in a worker thread, None (a blank line) every WORKING_S meanwhile, then its answer.

    The progress events the call appends to `progress` (slash keys) are sent in place of the blank lines.

    The call gets a should_stop that turns true once this stream is over, so when the client leaves first (the
    stream is cancelled) the engine stops at its next step and lets go of the Workbench.
    """
    stop = threading.Event()
    pending = asyncio.ensure_future(run_in_threadpool(call, stop.is_set))
    try:
        while not (await asyncio.wait({pending}, timeout=WORKING_S))[0]:
            yield _drained(progress) or None
        if progress:
            yield _drained(progress)
        yield pending.result()
    finally:
        stop.set()
        with anyio.CancelScope(shield=True):  # the Workbench is free again before the response ends
            await asyncio.wait({pending})
            if not pending.cancelled():
                pending.exception()  # a client that left has nobody to hear the call's error (its Interrupted)


def _with_ids(record: Any) -> dict[str, Any]:
    return record.to_json(with_ids=True)


def _stoppable_call(method: Callable[..., Any], body: Body, render: Callable[[Any], Any],
                    progress: str | None = None) -> StreamingResponse:
    """The one path of a stoppable operation: the body's arguments to the Workbench method, streamed as _stoppable
    does, its answer rendered to JSON. With `progress`, the method's on_progress(done, total) is sent as
    `{"PROGRESS/done", "PROGRESS/total"}` frames."""
    arguments = body.arguments()
    frames: deque[dict[str, Any]] = deque()
    if progress is not None:
        arguments["on_progress"] = lambda done, total: frames.append({f"{progress}/done": done,
                                                                      f"{progress}/total": total})

    def run(should_stop: Callable[[], bool]) -> Any:
        return render(method(**arguments, should_stop=should_stop))

    return ndjson_response(_stoppable(run, frames))


def ndjson_response(frames: Iterable[Any] | AsyncIterator[Any], close: Callable[[], Any] | None = None
                    ) -> StreamingResponse:
    """The one way a stream leaves the engine: NDJSON, one JSON object per line, ending in a `done` frame.

    `frames` is a blocking iterator (a Workbench generator, run in worker threads) or an async one, yielding
    dicts or records with `to_json()`, a list of them (sent as one chunk), bytes (NDJSON lines, sent as they
    are), or None (a keepalive blank line). A blocking iterator that is slow to give its next frame gets a
    keepalive line every KEEPALIVE_S meanwhile.
    A frame with `"done": true` ends the stream as is; otherwise `{"done": true}` is appended, or
    `{"done": true, "error": "..."}` when the iterator raises.
    `close` (by default the blocking iterator's own `close`) is called once the response is over, whether it
    finished, failed or its client left: a generator that holds the Workbench lock lets go of it there.
    """
    if close is None and not hasattr(frames, "__anext__"):
        close = getattr(frames, "close", None)
    return _ClosingStream(_ndjson(frames, close), close)


async def _event_frames(run_dir: Path, follow: bool, since: int) -> AsyncIterator[Any]:
    tail = EventTail(run_dir)
    seen = 0
    idle_since = time.monotonic()
    while True:
        # In a worker thread: parsing a big backlog must not stall the loop that serves interactive requests.
        lines, finished = await run_in_threadpool(tail.poll, follow, True)
        fresh = lines[max(0, since - seen):]
        seen += len(lines)
        if fresh:
            idle_since = time.monotonic()
            yield b"\n".join(fresh) + b"\n"  # forwarded as written: no decode and re-encode per event
        if finished:
            break
        if not lines:
            if time.monotonic() - idle_since > KEEPALIVE_S:
                idle_since = time.monotonic()
                yield None
            await asyncio.sleep(POLL_S)
    status, _ = await run_in_threadpool(load_run, run_dir)
    yield {"done": True, "state": status.state, "events": seen}


# --- the app ------------------------------------------------------------------------------------


class _TokenGate:
    """Every request, the OpenAPI schema included, must carry `Authorization: Bearer <token>` (TCP only)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = _JSON({"detail": "missing or wrong token: send 'Authorization: Bearer <token>' "
                                            "(rmx engine start printed it and stored it in the runtime dir)"},
                                 status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BodyLimit:
    """Refuse a request body over `limit` bytes with 413: by its Content-Length before reading, or once the
    bytes streamed in pass the limit (a chunked body)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = _JSON({"detail": f"request body over the {self.limit >> 20} MB limit (rmx engine start "
                                   "--max-body-mb raises it)"}, status_code=413)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await too_big(scope, receive, send)
            return
        if declared is not None:
            await self.app(scope, receive, send)
            return
        # No Content-Length (a chunked body): read it here, counting, and hand the app what was read.
        messages, received = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            received += len(message.get("body", b""))
            if received > self.limit:
                await too_big(scope, receive, send)
                return
            if not message.get("more_body"):
                break
        replay = iter(messages)

        async def replayed() -> dict:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)


class _CatchAll:
    """An engine bug answers 500 with a line that names no server path or exception; the trace goes to the log.

    Caught here rather than by Starlette's error middleware, which re-raises after answering and so makes the
    server drop the keep-alive connection the client will reuse for its next request.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as error:
            if started:  # half a response is out: only closing the connection can say it failed
                raise
            if is_disk_full(error):  # the engine's disk, not the request: 507 with what to free
                where = getattr(error, "filename", None) or data_dir()
                detail = str(disk_full(where, then="free space on the engine's machine and try again"))
                await _JSON({"detail": detail}, status_code=507)(scope, receive, send)
                return
            log.exception("request failed: %s %s", scope.get("method"), scope.get("path"))
            await _JSON({"detail": INTERNAL_ERROR}, status_code=500)(scope, receive, send)


INTERNAL_ERROR = "internal error in the engine (its log has the details: rmx engine status shows where)"


def _status_code(error: RmxError) -> int:
    if isinstance(error, JobNotFound):
        return 404
    if isinstance(error, (JobConflict, RunDamaged)):
        return 409
    if isinstance(error, DiskFull):
        return 507
    return 400


async def _rmx_error(request: Request, error: RmxError) -> JSONResponse:
    return _JSON({"detail": str(error)}, status_code=_status_code(error))


async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's own 422, rendered by _JSON: its echo of the input may hold text UTF-8 cannot encode."""
    return _JSON({"detail": jsonable_encoder(error.errors())}, status_code=422)


def create_app(workbench: Workbench, token: str | None = None, policy: ServerPolicy = ServerPolicy()) -> FastAPI:
    """The API over `workbench` and this machine's run dirs; with `token`, every request must present it."""
    version = rmx_version()
    app = FastAPI(title="rmx engine", version=version, default_response_class=_JSON,
                  description="rmx's engine: score tokens, run jobs. Streams are NDJSON ending in a done frame.")
    app.add_exception_handler(RmxError, _rmx_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_middleware(_CatchAll)
    app.add_middleware(_BodyLimit, limit=policy.max_body_bytes)
    if token:
        app.add_middleware(_TokenGate, token=token)  # outermost: nothing is read before the token is checked
    started = time.time()

    def check_ids(ids: list[int]) -> None:
        vocab = workbench.base.vocab_size
        bad = next((i for i in ids if i >= vocab), None)
        if bad is not None:
            raise RmxError(f"token id {bad} is outside the vocabulary (0..{vocab - 1})")

    @app.get("/health")
    async def health() -> dict[str, Any]:  # async: no worker-thread hop for the cheapest liveness probe
        return {"ok": True, "pid": os.getpid(), "version": version, "started": started}

    @app.get("/info")
    def info() -> dict[str, Any]:
        return info_json(workbench.info())

    @app.post("/load")
    def load(body: LoadBody) -> dict[str, Any]:
        remote_code = body.base.trust_remote_code or (body.teacher is not None and body.teacher.trust_remote_code)
        if remote_code and not policy.allow_remote_code:
            raise RmxError("trust_remote_code is refused over the API: it runs the checkpoint's own code in the "
                           "engine; start the engine with --allow-remote-code if you trust every caller")
        return info_json(workbench.load(**body.arguments()))

    @app.post("/prompt_ids")
    def prompt_ids(body: PromptBody) -> dict[str, Any]:
        return {"ids": workbench.prompt_ids(**body.arguments()), **workbench.template_choice(body.template).to_json()}

    @app.post("/template")
    def template(body: TemplateBody) -> dict[str, Any]:
        return workbench.template_choice(**body.arguments()).to_json()

    @app.post("/tokenize")
    def tokenize(body: TextBody) -> dict[str, Any]:
        return {"ids": workbench.tokenize(**body.arguments())}

    @app.post("/detokenize")
    def detokenize(body: IdsBody) -> dict[str, Any]:
        check_ids(body.ids)
        return {"text": workbench.detokenize(**body.arguments())}

    @app.post("/token_texts")
    def token_texts(body: IdsBody) -> dict[str, Any]:
        check_ids(body.ids)
        return {"texts": workbench.token_texts(**body.arguments())}

    @app.post("/score")
    def score(body: ScoreBody) -> dict[str, Any]:
        return workbench.score(**body.arguments()).to_json(with_ids=True)

    @app.post("/score_text")
    def score_text(body: ScoreTextBody) -> dict[str, Any]:
        return workbench.score_text(**body.arguments()).to_json(with_ids=True)

    @app.post("/decode", response_class=StreamingResponse, responses={200: {"content": {"application/x-ndjson": {}}}})
    def decode(body: DecodeBody):
        """Decode step by step, as NDJSON: one full step per line (`Step.to_json(with_ids=True)`), then done.

        A problem found before the first step (bad input, a prompt too long) is a 400; one met later ends the
        stream with `{"done": true, "error": ...}`. Closing the connection stops the decode and frees the engine.
        """
        steps = workbench.decode(**body.arguments())
        try:
            first = next(steps)
        except StopIteration:
            return ndjson_response(iter(()))
        except BaseException:
            steps.close()
            raise

        def frames() -> Iterator[dict[str, Any]]:
            yield first.to_json(with_ids=True)
            for step in steps:
                yield step.to_json(with_ids=True)

        stream = frames()

        def close() -> None:
            stream.close()
            steps.close()  # also when `stream` never started

        return ndjson_response(stream, close)

    @app.post("/intervene")
    def intervene(body: InterveneBody) -> dict[str, Any]:
        return workbench.intervene(**body.arguments()).to_json(with_ids=True)

    @app.post("/fork")
    def fork(body: ForkBody) -> dict[str, Any]:
        return workbench.fork_outcomes(**body.arguments()).to_json(with_ids=True)

    @app.post("/intervene/stream", response_class=StreamingResponse,
              responses={200: {"content": {"application/x-ndjson": {}}}})
    async def intervene_stream(body: InterveneBody):
        """/intervene as NDJSON: blank lines while it runs, then the result, then done. Closing the connection
        stops the run at its next step and frees the engine. A malformed request is a 4xx; a problem the engine
        finds ends the stream with `{"done": true, "error": ...}`."""
        return _stoppable_call(workbench.intervene, body, _with_ids)

    @app.post("/fork/stream", response_class=StreamingResponse,
              responses={200: {"content": {"application/x-ndjson": {}}}})
    async def fork_stream(body: ForkBody):
        """/fork as NDJSON, as /intervene/stream: blank lines, the estimate, done; closing the connection stops it."""
        return _stoppable_call(workbench.fork_outcomes, body, _with_ids)

    @app.post("/edit_overlap")
    def edit_overlap(body: EditOverlapBody) -> dict[str, Any]:
        """The base's greedy rollout, each token marked as edited by the teacher, the adapter or both."""
        return workbench.edit_overlap(**body.arguments()).to_json()

    @app.post("/generate", response_class=StreamingResponse,
              responses={200: {"content": {"application/x-ndjson": {}}}})
    async def generate(body: GenerateBody):
        """n completions as NDJSON, as /intervene/stream: blank lines while it runs, then `{"results": [...]}`, then
        done; closing the connection stops it."""
        return _stoppable_call(workbench.generate, body,
                               lambda results: {"results": [_with_ids(result) for result in results]})

    @app.post("/analyze", response_class=StreamingResponse,
              responses={200: {"content": {"application/x-ndjson": {}}}})
    async def analyze(body: AnalyzeBody):
        """Table 2 over a dataset on this machine, as NDJSON: `{"analyze/done", "analyze/total"}` as problems are
        scored, then the analysis (`rmx analyze --json`'s shape plus each problem's `rollout`), then done; closing
        the connection stops it after the problem in progress."""
        return _stoppable_call(workbench.analyze, body, lambda analysis: analysis.to_json(with_rollouts=True),
                               progress="analyze")

    @app.post("/pool_stats")
    def pool_stats(body: PoolStatsBody) -> dict[str, Any]:
        """The pass-rate histogram, lengths and trim of a rollouts.jsonl on this machine; with_base adds the
        decision-point rate per τ under the loaded base."""
        return workbench.pool_stats(**body.arguments()).to_json()

    @app.post("/grade")
    def grade(body: GradeBody) -> dict[str, Any]:
        return asdict(workbench.grade(**body.arguments()))

    @app.post("/problems")
    def problems(body: ProblemsBody) -> dict[str, Any]:
        found = workbench.problems(**body.arguments())
        return {"problems": [{"id": p.id, "problem": p.problem, "answer": p.answer, "source": p.source,
                              "meta": _jsonable(dict(p.meta))} for p in found]}

    @app.get("/jobs")
    def jobs() -> list[dict[str, Any]]:
        return [status.to_json() for status in workbench.list_jobs()]

    @app.post("/jobs", status_code=201)
    def submit(body: SubmitBody) -> dict[str, Any]:
        check_outputs(body.config, [data_dir()])  # an API caller writes under the data folder, nowhere else
        return workbench.submit_job(**body.arguments()).to_json()

    @app.get("/jobs/{job_id}")
    def job(job_id: str) -> dict[str, Any]:
        return workbench.job(job_id).to_json()

    @app.get("/jobs/{job_id}/events", response_class=StreamingResponse,
             responses={200: {"content": {"application/x-ndjson": {}}}})
    async def job_events(job_id: str, follow: bool = False,
                         since: Annotated[int, Query(ge=0, description="skip this many events (already seen)")] = 0):
        """The job's events as NDJSON: history first, then (follow) new ones until the job ends; then done."""
        return ndjson_response(_event_frames(find_run(job_id), follow, since))

    @app.post("/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> dict[str, Any]:
        return workbench.cancel_job(job_id).to_json()

    @app.post("/jobs/{job_id}/resume")
    def resume(job_id: str) -> dict[str, Any]:
        return workbench.resume_job(job_id).to_json()

    return app


# --- listening ----------------------------------------------------------------------------------


def bind_unix(path: Path) -> socket.socket:
    """A listening Unix socket at `path`, mode 0600 from birth (uvicorn's own binding would make it 0666)."""
    size = len(os.fsencode(str(path)))
    if size > UNIX_PATH_MAX:
        raise RmxError(f"socket path {path} is {size} bytes, over the {UNIX_PATH_MAX} a socket allows: "
                       "set RMX_RUNTIME_DIR to a shorter folder")
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return sock


def check_host(host: str, allow_remote: bool, tls: bool = False) -> None:
    """Refuse to listen beyond this machine unless asked, and then only over TLS: whoever reaches the API can run
    jobs on the node, and the token must not cross the network in clear text."""
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise RmxError(f"--host must be an IP address such as 127.0.0.1, got '{host}'") from None
    if not address.is_loopback and not allow_remote:
        raise RmxError(f"refusing to listen on {host}: it is not a loopback address; reach the engine through an "
                       "SSH tunnel to 127.0.0.1, or pass --allow-remote if you really mean it")
    if not address.is_loopback and not tls:
        raise RmxError(f"refusing --allow-remote on {host} without --tls-cert and --tls-key: the token would cross "
                       "the network in clear text; use an SSH tunnel (ssh -L PORT:127.0.0.1:PORT node) instead")


def bind_tcp(host: str, port: int, allow_remote: bool = False, tls: bool = False) -> socket.socket:
    check_host(host, allow_remote, tls)
    if not 0 <= port <= 65535:
        raise RmxError(f"--port must be in 0..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio turns Nagle off only on sockets that say so, and with Nagle on every
    # keep-alive response waits ~40 ms for a delayed ACK between its header and body writes.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise RmxError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return sock


def check_tls(cert: str | None, key: str | None) -> bool:
    """Whether TLS is asked for; both files or neither, and both readable PEM files."""
    if (cert is None) != (key is None):
        raise RmxError("--tls-cert and --tls-key go together")
    if cert is None or key is None:
        return False
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except FileNotFoundError as error:
        raise RmxError(f"cannot read {error.filename}: no such file") from None
    except PermissionError as error:
        raise RmxError(f"cannot read {error.filename}: permission denied") from None
    except (ssl.SSLError, OSError) as error:
        raise RmxError(f"--tls-cert/--tls-key: not a matching PEM certificate and key ({error})") from None
    return True


def serve(app: FastAPI, sock: socket.socket, tls_cert: str | None = None, tls_key: str | None = None) -> None:
    """Serve until SIGTERM/SIGINT; open streams get 2 s to finish, so `rmx engine stop` never hangs on a follower."""
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2, ssl_certfile=tls_cert, ssl_keyfile=tls_key)
    uvicorn.Server(config).run(sockets=[sock])
