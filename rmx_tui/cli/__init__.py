"""The `rmx` command line: a typer app whose commands live one group per module in this package."""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys
import warnings

from typing import Annotated, Optional

import typer

from engine.core.errors import RmxError

app = typer.Typer(
    name="rmx",
    help="rmx: see where a model hesitates, force a different token, and train the cheap fix.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    connect: Annotated[
        Optional[str],
        typer.Option("--connect", help="Attach to a running engine daemon: a socket path, unix:PATH or http://HOST:PORT."),
    ] = None,
    local: Annotated[bool, typer.Option("--local", help="Run the engine inside this process instead of the daemon.")] = False,
) -> None:
    """rmx: see where a model hesitates, force a different token, and train the cheap fix.

    With no command, rmx opens the workbench on the engine daemon, starting one (detached) if none runs,
    so loaded models and jobs outlive the terminal.
    """
    ctx.obj = {"connect": connect, "local": local}
    if ctx.invoked_subcommand is None:
        from rmx_tui.cli.tui_cmd import tui

        tui(ctx)


def _register_commands() -> None:
    """Each module here that defines `register(app)` adds its commands; heavy imports stay inside commands."""
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


class _WarningLine(logging.Handler):
    """The engine's warnings (logger `rmx`) as one `rmx: warning:` line each, on whatever stderr is now."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"rmx: warning: {record.getMessage()}", file=sys.stderr)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    engine_log = logging.getLogger("rmx")
    engine_log.addHandler(_WarningLine(logging.WARNING))
    engine_log.propagate = False
    if not os.environ.get("RMX_DEBUG"):
        # Library deprecation notices (transformers, peft) are for rmx's developers, not its users.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        app()
    except RmxError as error:
        print(f"rmx: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("rmx: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # an rmx bug: keep the one-line promise, keep the trace on request
        if os.environ.get("RMX_DEBUG"):
            raise
        print(f"rmx: internal error: {type(error).__name__}: {error} (set RMX_DEBUG=1 for the traceback)",
              file=sys.stderr)
        sys.exit(1)
