"""The `rmx` command line: a typer app whose commands live one group per module in this package."""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys
import warnings

from typing import Annotated, NoReturn, Optional

import typer

from engine.core.errors import RmxError

app = typer.Typer(
    name="rmx",
    help="rmx: see where a model hesitates, force a different token, and train the cheap fix.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)


CLIENT_COMMANDS = ("tui", "demo", "serve", "score", "generate", "analyze", "jobs")
"""The commands that reach the engine through its client: `--connect` sends their work to a daemon."""


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
    if connect and ctx.invoked_subcommand not in (None, *CLIENT_COMMANDS):
        raise RmxError(f"--connect applies to rmx {', '.join(CLIENT_COMMANDS)}; rmx {ctx.invoked_subcommand} runs in "
                       "this process (or as a detached job with --job)")
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


def _command_of(args: list[str]):
    """The click command `args` invoke (the deepest subcommand named), and its name path."""
    command, path = typer.main.get_command(app), ["rmx"]
    for arg in args:
        commands = getattr(command, "commands", None)
        if not isinstance(commands, dict):
            break
        if arg in commands:
            command, path = commands[arg], path + [arg]
    return command, path


def _resume_hint(args: list[str]) -> str | None:
    """The command line that continues an interrupted run, when the command has --resume (its --out, given or
    default, holds what was done)."""
    import shlex

    command, _ = _command_of(args)
    options = {opt for param in getattr(command, "params", []) for opt in getattr(param, "opts", [])}
    if "--resume" not in options:
        return None
    return shlex.join(["rmx", *args, *([] if "--resume" in args else ["--resume"])])


def _os_error_line(error: OSError) -> str | None:
    """One line for a file the user pointed at that cannot be used, None for anything else."""
    from engine.core.diskfull import disk_full, is_disk_full

    path = error.filename
    if is_disk_full(error):
        return str(disk_full(path or os.getcwd()))
    if isinstance(error, PermissionError) and path:
        verb = "use" if os.path.isdir(path) else "read" if os.path.exists(path) else "write"
        return f"cannot {verb} {path}: permission denied"
    if isinstance(error, IsADirectoryError) and path:
        return f"cannot read {path}: it is a folder, not a file"
    return None


class _WarningLine(logging.Handler):
    """The engine's warnings (logger `rmx`) as one `rmx: warning:` line each, on whatever stderr is now."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"rmx: warning: {record.getMessage()}", file=sys.stderr)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer's own click, not the click package

    from engine.core.diskfull import DiskFull

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    engine_log = logging.getLogger("rmx")
    engine_log.addHandler(_WarningLine(logging.WARNING))
    engine_log.propagate = False
    if not os.environ.get("RMX_DEBUG"):
        # Library deprecation notices (transformers, peft) are for rmx's developers, not its users.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    args = sys.argv[1:]
    try:
        code = app(args=args, standalone_mode=False)
    except NoArgsIsHelpError as error:
        print(error.ctx.get_help() if error.ctx else "try rmx --help", file=sys.stderr)
        sys.exit(2)
    except UsageError as error:  # a bad option value, an unknown option: one line and where to look
        where = " ".join(_command_of(args)[1])
        print(f"rmx: error: {' '.join(error.format_message().split()).rstrip('.')}; try {where} --help", file=sys.stderr)
        sys.exit(2)
    except DiskFull as error:
        print(f"rmx: {error}", file=sys.stderr)
        sys.exit(2)
    except RmxError as error:
        print(f"rmx: error: {error}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except OSError as error:
        line = _os_error_line(error)
        if line is None or os.environ.get("RMX_DEBUG"):
            _internal(error)
        print(f"rmx: {line}" if line.startswith("no space") else f"rmx: error: {line}", file=sys.stderr)
        sys.exit(2)
    except Exception as error:  # an rmx bug: keep the one-line promise, keep the trace on request
        _internal(error)
        code = 1
    if code == 130:  # typer turns Ctrl-C into exit code 130 on its own
        hint = _resume_hint(args)
        print(f"rmx: interrupted; resume with {hint}" if hint else "rmx: interrupted", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)


def _internal(error: Exception) -> NoReturn:
    from engine.core.diskfull import disk_full, is_disk_full

    if os.environ.get("RMX_DEBUG"):
        raise error
    if is_disk_full(error):  # a library (torch, safetensors) that dropped the errno
        print(f"rmx: {disk_full(getattr(error, 'filename', None) or os.getcwd())}", file=sys.stderr)
        sys.exit(2)
    print(f"rmx: internal error: {type(error).__name__}: {error} (set RMX_DEBUG=1 for the traceback)",
          file=sys.stderr)
    sys.exit(1)
