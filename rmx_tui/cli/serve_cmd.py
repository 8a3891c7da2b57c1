"""`rmx serve`: the workbench in a browser, each tab a TUI on the same engine daemon as the terminal app."""

from __future__ import annotations

import shlex
import sys
from typing import Annotated

import typer

from rmx_tui.cli import options as opt
from rmx_tui.cli import tui_cmd as tui

Host = Annotated[str, typer.Option("--host", help="Listen address; anything but loopback needs --allow-remote.")]
Port = Annotated[int, typer.Option("--port", help="Listen port.")]
AllowRemote = Annotated[bool, typer.Option("--allow-remote",
                                           help="Allow a non-loopback --host (plain HTTP: prefer ssh -L).")]


def _check_theme(theme: str) -> None:
    from engine.core.errors import RmxError
    from textual.theme import BUILTIN_THEMES

    from themes.workbench import workbench_themes

    known = set(BUILTIN_THEMES) | {spec.name for spec in workbench_themes()}
    if theme not in known:
        raise RmxError(f"unknown theme '{theme}': use one of {', '.join(sorted(known))}")


def serve(
    ctx: typer.Context,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    allow_remote: AllowRemote = False,
    base: opt.Base = "demo",
    teacher: opt.Teacher = None,
    adapter: opt.Adapter = None,
    teacher_adapter: opt.TeacherAdapter = None,
    dataset: tui.DatasetOpt = "math500",
    rollouts: tui.Rollouts = None,
    limit: tui.Limit = None,
    tau: tui.TauOpt = "q0.97",
    max_new_tokens: tui.MaxNew = 1024,
    samples: tui.Samples = 8,
    sample: tui.Sample = False,
    seed: tui.Seed = 0,
    template: tui.Template = "auto",
    theme: tui.ThemeOpt = "rmx-dark",
    dtype: opt.Dtype = "auto",
    device: opt.Device = "auto",
    revision: opt.Revision = None,
    trust_remote_code: opt.TrustRemoteCode = False,
) -> None:
    """Serve the workbench to a browser on 127.0.0.1 (reach it with ssh -L 8000:localhost:8000 gpu-node).

    The models load once in the engine daemon (started if none runs); every browser tab runs the workbench on it.
    Open the printed URL: its one-time token becomes a session cookie, and requests without it are refused.
    """
    from engine.core.config import Tau
    from engine.core.errors import RmxError
    from engine.service.server import check_host

    check_host(host, allow_remote)
    try:
        from rmx_tui.web import WorkbenchServer
    except ImportError:
        raise RmxError("rmx serve needs textual-serve: pip install 'rmx[web]'") from None
    if not 1 <= port <= 65535:
        raise RmxError(f"--port must be in 1..65535, got {port}")
    if samples < 1:
        raise RmxError(f"--samples must be at least 1, got {samples}")
    Tau.parse(tau)
    _check_theme(theme)
    base_spec, teacher_spec = opt.model_specs(base, teacher, adapter, teacher_adapter, dtype, device, revision,
                                              trust_remote_code)
    client = tui._client(ctx, default_local=False)
    if client is None:
        raise RmxError("rmx serve runs the workbench on the engine daemon: drop --local")
    typer.echo(f"loading {base_spec.label} on the engine at {client.target} ...", err=True)
    client.load(base_spec, teacher_spec)  # a bad model fails here, once, not in every browser tab
    flags = {"--base": base, "--teacher": teacher, "--adapter": adapter, "--teacher-adapter": teacher_adapter,
             "--dataset": dataset, "--rollouts": rollouts, "--limit": limit, "--tau": tau,
             "--max-new-tokens": max_new_tokens, "--samples": samples, "--seed": seed, "--template": template,
             "--theme": theme, "--dtype": dtype, "--device": device, "--revision": revision}
    argv = [sys.executable, "-m", "rmx_tui", "--connect", client.target, "tui"]
    for flag, value in flags.items():
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--sample" if sample else "--greedy"] + (["--trust-remote-code"] if trust_remote_code else [])
    server = WorkbenchServer(shlex.join(argv), host, port)
    typer.echo(f"rmx serve: open {server.url}")
    typer.echo("  the token is for you alone; from your laptop: ssh -L 8000:localhost:8000 gpu-node", err=True)
    if allow_remote and host not in ("127.0.0.1", "::1", "localhost"):
        typer.echo("  warning: plain HTTP beyond this machine: the token crosses the network unencrypted", err=True)
    sys.stdout.flush()
    server.serve()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
