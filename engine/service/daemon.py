"""The detached engine daemon: start, stop, status, autostart (`ensure_daemon`) and attaching (`connect`)."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import signal
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from engine.core.errors import RmxError
from engine.jobs.store import pid_alive, rmx_version, spawn_detached, write_json_atomic
from engine.service.remote import RemoteClient

START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DaemonInfo:
    """A running daemon's address card, `engine.json` in the runtime dir."""

    pid: int
    """The daemon process."""
    socket: str | None
    """The Unix socket it listens on, or None when it listens on TCP."""
    url: str | None
    """`http://127.0.0.1:PORT` when it listens on TCP (token required), else None."""
    started: float
    """Unix time it started."""
    version: str
    """The rmx version it runs."""
    tls_cert: str | None = None
    """The certificate it serves HTTPS with (clients trust it), None for plain HTTP or the socket."""

    def __post_init__(self) -> None:
        if self.pid <= 0 or (self.socket is None) == (self.url is None):
            raise RmxError("an engine address card needs a pid and exactly one of socket or url")

    @property
    def address(self) -> str:
        return self.socket or self.url or "?"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DaemonInfo":
        return cls(pid=int(data["pid"]), socket=data.get("socket"), url=data.get("url"),
                   started=float(data["started"]), version=str(data.get("version", "")),
                   tls_cert=data.get("tls_cert"))


def runtime_dir() -> Path:
    """Where the socket, token and address card live: platformdirs' user runtime dir, or RMX_RUNTIME_DIR. Mode 0700."""
    override = os.environ.get("RMX_RUNTIME_DIR")
    if override:
        path = Path(override)
    else:
        import platformdirs

        with warnings.catch_warnings():  # its fallback warning when XDG_RUNTIME_DIR is unset is noise here
            warnings.simplefilter("ignore")
            path = Path(platformdirs.user_runtime_dir("rmx"))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise RmxError(f"{path} belongs to another user: set RMX_RUNTIME_DIR to a folder of your own")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def socket_path() -> Path:
    return runtime_dir() / "engine.sock"


def token_path() -> Path:
    return runtime_dir() / "engine.token"


def _card_path() -> Path:
    return runtime_dir() / "engine.json"


def log_path() -> Path:
    return runtime_dir() / "engine.log"


def _read_card() -> DaemonInfo | None:
    try:
        return DaemonInfo.from_json(json.loads(_card_path().read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, RmxError):
        return None


def _is_daemon(pid: int) -> bool:
    """`pid` lives and is an engine daemon, not a process that inherited a dead daemon's pid."""
    if not pid_alive(pid):
        return False
    try:
        return b"engine.service.daemon" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no procfs (macOS): liveness is all we can check


def daemon_status() -> DaemonInfo | None:
    """The running daemon's card, or None when none runs (no card, or its process is gone)."""
    card = _read_card()
    return card if card is not None and _is_daemon(card.pid) else None


def _remove_files(pid: int | None) -> None:
    """Remove the card, socket and token of daemon `pid` (or of a dead one, pid None)."""
    card = _read_card()
    if card is not None and pid is not None and card.pid != pid:
        return
    for path in (_card_path(), socket_path(), token_path()):
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _start_lock() -> Iterator[None]:
    """One starter at a time: two `rmx` launched together must not start two daemons."""
    with open(runtime_dir() / "engine.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _last_log_line() -> str:
    try:
        text = log_path().read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no log"
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no log"


@dataclass(frozen=True)
class DaemonOptions:
    """How the daemon listens and what it allows; `rmx engine start`'s flags map one to one onto it."""

    host: str | None = None
    """TCP address to listen on (needs `port`); None: the Unix socket."""
    port: int | None = None
    """TCP port (0: any free one); None: the Unix socket."""
    allow_remote: bool = False
    """Allow a non-loopback `host` (only with TLS)."""
    allow_remote_code: bool = False
    """Let API callers load models with trust_remote_code."""
    max_body_mb: float = 8.0
    """The largest request body the API reads, in MB (413 above)."""
    tls_cert: str | None = None
    """PEM certificate to serve HTTPS with (with `tls_key`)."""
    tls_key: str | None = None
    """PEM private key of `tls_cert`."""

    def __post_init__(self) -> None:
        from engine.service.server import ServerPolicy, check_host, check_tls

        if self.port is None and self.host is not None:
            raise RmxError("--host needs --port")
        tls = check_tls(self.tls_cert, self.tls_key)
        if tls and self.port is None:
            raise RmxError("--tls-cert/--tls-key need --port: the Unix socket is not on the network")
        if self.port is not None:
            check_host(self.host or "127.0.0.1", self.allow_remote, tls)
        ServerPolicy(self.allow_remote_code, self.max_body_mb)  # checks the limit

    def argv(self) -> list[str]:
        args: list[str] = []
        if self.port is not None:
            args += ["--host", self.host or "127.0.0.1", "--port", str(self.port)]
        if self.allow_remote:
            args.append("--allow-remote")
        if self.allow_remote_code:
            args.append("--allow-remote-code")
        if self.max_body_mb != 8.0:
            args += ["--max-body-mb", repr(self.max_body_mb)]
        if self.tls_cert and self.tls_key:
            args += ["--tls-cert", str(Path(self.tls_cert).resolve()), "--tls-key", str(Path(self.tls_key).resolve())]
        return args


def _spawn(options: DaemonOptions, timeout: float) -> DaemonInfo:
    _remove_files(None)
    argv = [sys.executable, "-m", "engine.service.daemon", *options.argv()]
    log_path().write_bytes(b"")
    process = spawn_detached(argv, log_path())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        card = _read_card()
        if card is not None and card.pid == process.pid:
            threading.Thread(target=process.wait, daemon=True, name="rmx-daemon-reaper").start()
            return card
        if process.poll() is not None:
            raise RmxError(f"the engine did not start: {_last_log_line()}")
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RmxError(f"the engine did not start within {timeout:g} s; see {log_path()}")


def start_daemon(host: str | None = None, port: int | None = None, allow_remote: bool = False,
                 timeout: float = START_TIMEOUT_S, options: DaemonOptions | None = None) -> DaemonInfo:
    """Start a detached daemon: on the Unix socket, or on TCP `host:port` (loopback unless `allow_remote`, and
    then only with TLS); `options` gives every setting at once."""
    options = options or DaemonOptions(host, port, allow_remote)
    with _start_lock():
        running = daemon_status()
        if running is not None:
            raise RmxError(f"the engine is already running (pid {running.pid}) at {running.address}")
        return _spawn(options, timeout)


def stop_daemon(timeout: float = 10.0) -> DaemonInfo | None:
    """SIGTERM the daemon and wait (SIGKILL after `timeout`); its jobs keep running. None if none ran."""
    card = daemon_status()
    if card is None:
        _remove_files(None)
        return None
    os.kill(card.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(card.pid):
        if time.monotonic() > deadline:
            os.kill(card.pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)
    _remove_files(card.pid)
    return card


def stored_token() -> str | None:
    try:
        return token_path().read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def client_for(card: DaemonInfo) -> RemoteClient:
    if card.socket:
        return RemoteClient(uds=card.socket)
    return RemoteClient(card.url or "", token=stored_token(), verify=_tls_verify(card.tls_cert))


def _tls_verify(cert: str | None) -> Any:
    """What an HTTPS client trusts: $RMX_TLS_CA, else the daemon's own certificate (self-signed), else the system."""
    import ssl

    authority = os.environ.get("RMX_TLS_CA") or cert
    if not authority:
        return True
    try:
        return ssl.create_default_context(cafile=authority)
    except (OSError, ssl.SSLError) as error:
        raise RmxError(f"cannot use {authority} as the engine's TLS authority: {error}") from None


def ensure_daemon() -> RemoteClient:
    """A client of the running daemon, starting one (detached, on the Unix socket) if none runs."""
    with _start_lock():
        card = daemon_status() or _spawn(DaemonOptions(), START_TIMEOUT_S)
    return client_for(card)


def connect(target: str, token: str | None = None) -> RemoteClient:
    """Attach to a daemon at `http://127.0.0.1:PORT` or a socket path (`unix:` prefix optional).

    Over TCP the token is `token`, else $RMX_TOKEN, else the one stored by a daemon on this machine.
    """
    if target.startswith(("http://", "https://")):
        card = _read_card()
        cert = card.tls_cert if card is not None and card.url == target.rstrip("/") else None
        client = RemoteClient(target.rstrip("/"), token=token or os.environ.get("RMX_TOKEN") or stored_token(),
                              verify=_tls_verify(cert))
    else:
        path = Path(target.removeprefix("unix:")).expanduser()
        if not path.exists():
            raise RmxError(f"no engine socket at {path}: give http://127.0.0.1:PORT or the socket path "
                           "(rmx engine status shows it)")
        client = RemoteClient(uds=path, token=token)
    client.health()  # fail now, with the reason, rather than at the first real request
    return client


def _write_token(token: str) -> None:
    path = token_path()
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")


def _serve(options: DaemonOptions) -> None:
    from engine.service.server import ServerPolicy, bind_tcp, bind_unix, create_app, serve
    from engine.service.workbench import Workbench

    token = None
    tls = options.tls_cert is not None
    if options.port is not None:
        host = options.host or "127.0.0.1"
        sock = bind_tcp(host, options.port, options.allow_remote, tls)
        token = secrets.token_urlsafe(32)
        _write_token(token)
        shown = f"[{host}]" if ":" in host else host
        url = f"{'https' if tls else 'http'}://{shown}:{sock.getsockname()[1]}"
        card = DaemonInfo(os.getpid(), None, url, time.time(), rmx_version(), options.tls_cert)
    else:
        sock = bind_unix(socket_path())
        card = DaemonInfo(os.getpid(), str(socket_path()), None, time.time(), rmx_version())
    sock.listen(128)  # clients that connect before the server loop runs wait in the backlog
    write_json_atomic(_card_path(), card.to_json())
    try:
        policy = ServerPolicy(options.allow_remote_code, options.max_body_mb)
        serve(create_app(Workbench(), token, policy), sock, options.tls_cert, options.tls_key)
    finally:
        _remove_files(os.getpid())


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.service.daemon [--host H --port P [--allow-remote]]`: the daemon process itself."""
    parser = argparse.ArgumentParser(prog="python -m engine.service.daemon", description=main.__doc__)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--allow-remote", action="store_true")
    parser.add_argument("--allow-remote-code", action="store_true")
    parser.add_argument("--max-body-mb", type=float, default=8.0)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        _serve(DaemonOptions(args.host, args.port, args.allow_remote, args.allow_remote_code, args.max_body_mb,
                             args.tls_cert, args.tls_key))
    except RmxError as error:
        print(f"rmx engine: error: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
