"""Specs are the source of the options: every field of a command's spec has an option with the spec's default,
and the field's docstring as its help."""

from __future__ import annotations

import dataclasses

import pytest
import typer.main

from engine.core.fielddocs import field_docs
from engine.recipes.distill import DistillSpec
from engine.recipes.evaluate import EvalSpec
from engine.recipes.rollouts import RolloutSpec
from engine.recipes.sweep import SweepSpec
from engine.recipes.train import TrainSpec
from rmx_tui.cli import app

SPECS = {"train": (TrainSpec,), "sweep": (TrainSpec, SweepSpec), "distill": (DistillSpec,),
         "rollouts": (RolloutSpec,), "eval": (EvalSpec,)}
RENAMED = {"grade_timeout_s": "grade_timeout"}
"""Fields whose option predates the spec's name for them (a public contract: `--grade-timeout`)."""
NOT_OPTIONS = {"sweep": {"tau", "tau_correct", "tau_wrong"}}
"""Fields a command sets itself: a sweep gives each run its τ from --taus."""


@pytest.mark.parametrize("command", sorted(SPECS))
def test_every_spec_field_has_an_option_with_the_specs_default(command):
    params = {p.name: p for p in typer.main.get_command(app).commands[command].params}
    for spec in SPECS[command]:
        for field in dataclasses.fields(spec):
            if field.name in NOT_OPTIONS.get(command, set()):
                continue
            param = params.get(RENAMED.get(field.name, field.name))
            assert param is not None, f"rmx {command}: {spec.__name__}.{field.name} has no option"
            doc = field_docs(spec.__module__, spec.__name__).get(field.name)
            assert doc, f"{spec.__name__}.{field.name} has no docstring to be its option's help"
            assert param.help == doc, f"rmx {command} --{param.name}: help {param.help!r}, {spec.__name__} says {doc!r}"
            if field.default is dataclasses.MISSING:
                continue
            default = field.default
            given = tuple(param.default) if isinstance(param.default, list) else param.default
            if isinstance(default, tuple) and isinstance(given, str):
                given = tuple(given.split(",")) if given else ()  # comma-separated options of tuple fields
            assert given == default, f"rmx {command} --{param.name}: default {given!r}, {spec.__name__} says {default!r}"


def test_job_is_the_one_detached_flag_and_detach_a_hidden_alias():
    commands = typer.main.get_command(app).commands
    for name in ("rollouts", "train", "sweep", "eval", "distill", "pipeline", "intervene"):
        flags = {o: p for p in commands[name].params for o in p.opts}
        assert "--job" in flags and not flags["--job"].hidden, name
        assert "--detach" not in flags or flags["--detach"].hidden, name


def test_connect_is_refused_by_a_command_that_would_ignore_it():
    from typer.testing import CliRunner

    from engine.core.errors import RmxError

    result = CliRunner().invoke(app, ["--connect", "/nowhere.sock", "grade", "--completion-text", "4", "--gold", "4"])
    assert isinstance(result.exception, RmxError) and "--connect applies to rmx tui" in str(result.exception)


def test_help_shows_the_brackets_its_text_has():
    """typer renders help as rich markup, where `rmx[ray]` loses its `[ray]`: bracketed words are escaped."""
    import re

    from typer.testing import CliRunner

    def walk(command, path):
        yield path, command
        for name, sub in (getattr(command, "commands", None) or {}).items():
            yield from walk(sub, [*path, name])

    checked = 0
    for path, command in walk(typer.main.get_command(app), []):
        words = {w for p in command.params for w in re.findall(r"\\?\[[a-z][^\]]*\]", getattr(p, "help", None) or "")}
        if not words:
            continue
        shown = " ".join(CliRunner().invoke(app, [*path, "--help"], terminal_width=400).output.split())
        for word in words:
            assert word.lstrip("\\") in shown, f"rmx {' '.join(path)} --help drops {word}"
            checked += 1
    assert checked >= 5
