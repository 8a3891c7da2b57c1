"""`rmx engine start|stop|status`: the detached daemon that holds the models and serves the API."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from rmx_tui.cli.options import Json, print_json


def _start(
    host: Annotated[Optional[str], typer.Option("--host", help="Listen on TCP at this address (needs --port).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="Listen on TCP at this port (0: any free one).")] = None,
    allow_remote: Annotated[bool, typer.Option(
        "--allow-remote", help="Allow a non-loopback --host (needs --tls-cert/--tls-key; prefer an SSH tunnel).")] = False,
    allow_remote_code: Annotated[bool, typer.Option(
        "--allow-remote-code", help="Let API callers load models with trust_remote_code (runs checkpoint code).")] = False,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", help="Largest request body the API reads (MB).")] = 8.0,
    tls_cert: Annotated[Optional[str], typer.Option("--tls-cert", help="PEM certificate: serve HTTPS.")] = None,
    tls_key: Annotated[Optional[str], typer.Option("--tls-key", help="PEM private key of --tls-cert.")] = None,
    json: Json = False,
) -> None:
    """Start the engine daemon, detached: on a 0600 Unix socket, or on loopback TCP with a token."""
    from engine.service.daemon import DaemonOptions, start_daemon, stored_token, token_path

    card = start_daemon(options=DaemonOptions(host, port, allow_remote, allow_remote_code, max_body_mb, tls_cert,
                                              tls_key))
    token = stored_token() if card.url else None
    if json:
        print_json({**card.to_json(), "token": token, "token_file": str(token_path()) if token else None})
        return
    typer.echo(f"engine started (pid {card.pid}) on {card.address}")
    if token:
        typer.echo(f"token: {token}")
        typer.echo(f"  shown once; stored 0600 in {token_path()}. Clients send it as 'Authorization: Bearer <token>'.")
        if card.url and card.url.startswith("https"):
            typer.echo(f"  HTTPS with {tls_cert}; clients elsewhere trust it with RMX_TLS_CA={tls_cert}.")


def _stop(json: Json = False) -> None:
    """Stop the engine daemon. Running jobs keep running; a new daemon finds them."""
    from engine.service.daemon import stop_daemon

    card = stop_daemon()
    if json:
        print_json({"stopped": card is not None, "pid": card.pid if card else None})
    else:
        typer.echo(f"engine stopped (pid {card.pid})" if card else "engine: not running")


def _status(json: Json = False) -> None:
    """Show whether the engine runs, where, what it has loaded, and how many jobs are active."""
    from engine.service.daemon import client_for, daemon_status
    from engine.jobs.store import list_runs

    card = daemon_status()
    active = [s.id for s in list_runs() if s.active]
    if card is None:
        if json:
            print_json({"running": False, "active_jobs": active})
        else:
            typer.echo(f"engine: not running ({len(active)} active jobs)")
        raise typer.Exit(1)
    with client_for(card) as client:
        info = client.info()
    models = {"base": info.base.label if info.base else None, "teacher": info.teacher.label if info.teacher else None}
    if json:
        print_json({"running": True, **card.to_json(), **models, "active_jobs": active})
        return
    uptime = time.time() - card.started
    typer.echo(f"engine: running (pid {card.pid}, rmx {card.version}, up {uptime:.0f} s) on {card.address}")
    typer.echo(f"  base: {models['base'] or '-'}   teacher: {models['teacher'] or '-'}")
    typer.echo(f"  active jobs: {len(active)}")


def register(app: typer.Typer) -> None:
    engine = typer.Typer(help="Start, stop and inspect the engine daemon (it holds the models; jobs outlive it).",
                         no_args_is_help=True)
    engine.command("start")(_start)
    engine.command("stop")(_stop)
    engine.command("status")(_status)
    app.add_typer(engine, name="engine")
