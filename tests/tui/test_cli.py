"""`rmx tui` and `rmx demo` on the command line: registered, documented, and refusing bad options in one line."""

from __future__ import annotations

from typer.testing import CliRunner

from rmx_tui.cli import app


def test_tui_and_demo_are_registered_with_their_options():
    runner = CliRunner()
    tui = runner.invoke(app, ["tui", "--help"])
    assert tui.exit_code == 0
    for option in ("--base", "--teacher", "--teacher-adapter", "--adapter", "--dataset", "--dtype", "--device",
                   "--tau", "--rollouts", "--theme"):
        assert option in tui.output, option
    demo = runner.invoke(app, ["demo", "--help"])
    assert demo.exit_code == 0 and "demo model" in demo.output


def test_bad_options_fail_before_the_app_starts():
    from engine.core.errors import RmxError

    runner = CliRunner()
    for args, words in ((["tui", "--tau", "fast"], "neither a number"), (["tui", "--theme", "nope"], "unknown theme"),
                        (["tui", "--samples", "0"], "--samples"), (["demo", "--dtype", "int3"], "unknown dtype")):
        result = runner.invoke(app, args)
        assert isinstance(result.exception, RmxError) and words in str(result.exception), args
