"""Launching jobs from the jobs screen: the dialog, its templates against the engine's validators, and a launch
through the daemon that a new app, on a new connection, finds again with its whole history."""

from __future__ import annotations

import json
import shutil
import tempfile
import tomllib
from pathlib import Path

import pytest
from textual.widgets import Label, OptionList, TextArea

from engine.service.daemon import client_for, daemon_status, start_daemon, stop_daemon
from engine.core.errors import RmxError
from engine.jobs.store import JobStatus, list_runs, resolve_entry, run_outputs, submit_job, write_result
from engine.core.records import ModelInfo, Rollout
from engine.service.workbench import WorkbenchInfo
from rmx_tui.job_templates import KINDS, NO_ROLLOUTS, Defaults, job_config, template
from rmx_tui.screens.jobs import JobsScreen
from rmx_tui.screens.launch import LaunchJob
from rmx_tui.screens.run import RunScreen
from rmx_tui.widgets.job_table import JobTable
from tests.tui.harness import SIZE, until
from tests.tui.test_jobs_screen import Host, row, state_of, wait_for
from tests.tui.test_jobs_screen import _fast_heartbeat  # noqa: F401  (autouse: short heartbeats, no job left behind)

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline-demo.toml"


def error_of(dialog: LaunchJob) -> str | None:
    label = dialog.query_one("#launch-error", Label)
    return str(label.render()) if label.display else None


async def open_dialog(pilot) -> LaunchJob:
    await pilot.press("n")
    dialog = pilot.app.screen
    assert isinstance(dialog, LaunchJob)
    return dialog


async def test_a_selftest_launched_from_the_dialog_is_selected_and_runs_to_done():
    older = submit_job("selftest", {"count": 1})
    wait_for(lambda: state_of(older.id) == "done")
    async with Host().run_test(size=SIZE) as pilot:
        table = pilot.app.screen.query_one(JobTable)
        await until(pilot, lambda: table.selected is not None and table.selected.id == older.id)
        dialog = await open_dialog(pilot)
        config = dialog.query_one("#launch-config", TextArea)
        assert dialog.kind == "selftest" and job_config("selftest", config.text) == {"count": 20, "sleep": 0.1}
        config.load_text("count = 5\n")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(pilot.app.screen, JobsScreen))
        await until(pilot, lambda: table.selected is not None and table.selected.id != older.id)  # the new run
        job_id = table.selected.id
        await until(pilot, lambda: table.statuses[job_id].state == "done", timeout=15)
        assert row(pilot, job_id)[1:3] == ["selftest", "done"] and row(pilot, job_id)[3].endswith(" 5/5")
        assert table.selected.id == job_id


async def test_a_toml_syntax_error_keeps_the_dialog_open_with_the_text_as_typed():
    async with Host().run_test(size=SIZE) as pilot:
        dialog = await open_dialog(pilot)
        config = dialog.query_one("#launch-config", TextArea)
        config.load_text("count = \nsleep = 0.1\n")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert pilot.app.screen is dialog
        assert error_of(dialog) == "not valid TOML: Invalid value (at line 1, column 9)"
        assert config.text == "count = \nsleep = 0.1\n"
        assert list_runs() == []
        config.focus()  # esc closes the dialog from the editor too
        await pilot.press("escape")
        assert isinstance(pilot.app.screen, JobsScreen)


async def test_the_validators_refusal_shows_in_the_dialog_and_a_fixed_config_then_launches():
    async with Host().run_test(size=SIZE) as pilot:
        dialog = await open_dialog(pilot)
        config = dialog.query_one("#launch-config", TextArea)
        config.load_text("count = -3\n")
        await pilot.click("#launch")
        await until(pilot, lambda: error_of(dialog) is not None)
        assert error_of(dialog) == "selftest: count must be an integer in 1..10000000"
        assert pilot.app.screen is dialog and config.text == "count = -3\n" and list_runs() == []

        dialog.query_one("#launch-kinds", OptionList).focus()
        await pilot.press("down")  # selftest → intervene: another kind's template, the error gone
        assert dialog.kind == "intervene" and error_of(dialog) is None and config.text == template("intervene")
        await pilot.press("end")  # → pipeline
        config.load_text(config.text.replace("[pool]\n", "[pool]\nbogus = 1\n"))
        await pilot.press("ctrl+s")
        await until(pilot, lambda: error_of(dialog) is not None)
        assert error_of(dialog) == "job config: unknown key(s) bogus in [pool] (known: keep_shortest, size)"

        await pilot.press("home")  # back to selftest: its text is as it was left
        assert dialog.kind == "selftest" and config.text == "count = -3\n"
        config.load_text("count = 3\n")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(pilot.app.screen, JobsScreen))
        [launched] = list_runs()
        assert launched.kind == "selftest"


def mixed_rollouts(path: Path) -> str:
    """A rollouts file with a training signal: each problem answered both right and wrong."""
    rollouts = [Rollout(problem_id=f"p{problem}", sample=sample, prompt_ids=(1, 2), completion_ids=(3, 4), text="4",
                        gold="4", answer="4" if sample else "5", correct=bool(sample), finish="eos")
                for problem in range(2) for sample in range(2)]
    path.write_text("".join(json.dumps(rollout.to_json()) + "\n" for rollout in rollouts), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("kind", KINDS)
def test_every_template_parses_and_passes_its_kinds_validator(kind, tmp_path):
    made = mixed_rollouts(tmp_path / "rollouts.jsonl")  # what pool, train, sweep and distill read
    config = job_config(kind, template(kind, Defaults(rollouts=made, pool=made)))
    resolve_entry(kind, None).validate(config)


def test_templates_take_the_loaded_models_and_the_newest_finished_outputs(tiny_llama, tiny_llama_adapter, tmp_path):
    def model(source: str, adapter: str | None) -> ModelInfo:
        return ModelInfo(label="tiny", source=source, adapter=adapter, architecture="LlamaForCausalLM",
                         dtype="float32", device="cpu", vocab_size=256, context_length=512, parameters=1)

    def run(job_id: str, kind: str, state: str, created: float) -> JobStatus:
        return JobStatus(id=job_id, kind=kind, state=state, created=created)

    info = WorkbenchInfo(base=model(str(tiny_llama), None), teacher=model(str(tiny_llama), str(tiny_llama_adapter)))
    runs = [run("20260101-120000-rollouts-0001", "rollouts", "done", 1.0),
            run("20260101-120100-rollouts-0002", "rollouts", "done", 2.0),
            run("20260101-120200-rollouts-0003", "rollouts", "failed", 3.0),
            run("20260101-120300-pool-0004", "pool", "done", 4.0)]
    for status in runs:  # each lists its output in result.json, wherever it wrote it (a failed run lists none)
        if status.state == "done":
            write_result(tmp_path / status.id / "artifacts", {}, {status.kind: f"/out/{status.id}.jsonl"})
    defaults = Defaults.of(info, runs, lambda job_id: run_outputs(tmp_path / job_id))
    newest, pool = "/out/20260101-120100-rollouts-0002.jsonl", "/out/20260101-120300-pool-0004.jsonl"
    assert (defaults.rollouts, defaults.pool) == (newest, pool)
    # A finished run whose result.json is missing has no output to offer: nothing is guessed from its folder.
    (tmp_path / "20260101-120100-rollouts-0002" / "artifacts" / "result.json").unlink()
    assert Defaults.of(info, runs, lambda job_id: run_outputs(tmp_path / job_id)).rollouts == "/out/20260101-120000-rollouts-0001.jsonl"

    base = {"source": str(tiny_llama), "dtype": "auto", "device": "auto", "trust_remote_code": False}
    teacher = {**base, "adapter": str(tiny_llama_adapter)}
    distill = job_config("distill", template("distill", defaults))
    assert (distill["model"], distill["teacher"], distill["distill"]["rollouts"]) == (base, teacher, newest)
    assert job_config("train", template("train", defaults))["train"]["rollouts"] == pool
    assert job_config("pipeline", template("pipeline", defaults))["pipeline"]["model"]["base"] == str(tiny_llama)
    intervene = job_config("intervene", template("intervene", defaults))
    assert (intervene["base"], intervene["teacher"]) == (base, teacher)
    resolve_entry("intervene", None).validate(intervene)  # the models are there

    alone = Defaults.of(WorkbenchInfo(base=model(str(tiny_llama), None), teacher=None), [], dict)
    assert (alone.teacher, alone.teacher_adapter, alone.rollouts) == (str(tiny_llama), None, None)  # its own teacher
    assert job_config("pool", template("pool", alone))["pool"]["rollouts"] == NO_ROLLOUTS
    assert Defaults.of(None, [], dict) == Defaults()


def test_a_new_spec_field_appears_in_its_template_and_is_read_back(tmp_path, monkeypatch):
    """The templates are rendered from the specs: a field added to one shows up, documented, without a template edit."""
    import dataclasses
    import importlib
    import sys

    from engine.recipes import schema
    from engine.recipes.pool import PoolSpec

    (tmp_path / "grown_spec.py").write_text(
        "from dataclasses import dataclass\n"
        "from engine.recipes.pool import PoolSpec\n\n\n"
        "@dataclass(frozen=True)\n"
        "class GrownPoolSpec(PoolSpec):\n"
        "    min_pass_rate: float = 0.1\n"
        '    """Leave out problems solved less often than this."""\n', encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    grown = importlib.import_module("grown_spec").GrownPoolSpec
    monkeypatch.setitem(schema.TABLES, "pool", grown)
    try:
        text = template("pool", Defaults(rollouts="/r.jsonl"))
        assert "# Leave out problems solved less often than this.\nmin_pass_rate = 0.1\n" in text
        for field in dataclasses.fields(PoolSpec):  # every field of the spec, each under its docstring
            assert f"\n{field.name} = " in text or f"\n# {field.name} =" in text, field.name
        assert job_config("pool", text.replace("min_pass_rate = 0.1", "min_pass_rate = 0.3"))["pool"][
            "min_pass_rate"] == 0.3
    finally:
        sys.modules.pop("grown_spec", None)


@pytest.mark.parametrize("edit, message", [
    (("k = 4", "k = 4\nbogus = 1"), "job config: unknown key(s) bogus in [rollouts] (known: backend, dataset, "),
    (("[rollouts]", "[rollout]"), "job config: unknown table(s) rollout for a rollouts job (known: model, rollouts"),
    (("k = 4", 'k = "four"'), "--k must be a positive integer, got four"),
    (('dtype = "auto"', 'dtype = "fp8"'), "unknown dtype 'fp8'"),
])
def test_an_edited_template_is_read_back_through_the_specs_with_one_line_per_fault(edit, message):
    text = template("rollouts")
    assert edit[0] in text
    with pytest.raises(RmxError) as refused:
        job_config("rollouts", text.replace(*edit, 1))
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_the_pipeline_template_is_rendered_from_the_specs_and_builds_the_example_pipeline():
    """The dialog's pipeline is rendered from the schema (every field of each stage's spec), and it builds the same
    specs as examples/pipeline-demo.toml, the commented document a newcomer reads."""
    import dataclasses

    from engine.recipes.pipeline import SECTIONS, _build
    from engine.recipes.train import TrainSpec

    def specs(config: dict) -> dict:
        return {section: _build(section, values, "test") for section, values in config.items() if section in SECTIONS}

    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    rendered = job_config("pipeline", template("pipeline"))["pipeline"]
    assert specs(rendered) == specs(example)
    text = template("pipeline")
    assert all(f"\n{field.name} = " in text or f"\n# {field.name} =" in text
               for field in dataclasses.fields(TrainSpec) if field.name != "rollouts")
    assert "# rollouts: the previous stage's output" in text


def test_an_unknown_kind_has_no_template():
    with pytest.raises(RmxError, match="no template for job kind 'nope'"):
        template("nope")


async def test_a_job_launched_through_the_daemon_is_there_with_its_plots_after_the_terminal_closes(monkeypatch):
    """Issue 5's done-when: engine started, a job launched from the TUI, the TUI gone, a new TUI finds it all."""
    root = Path(tempfile.mkdtemp(prefix="rmx-", dir="/tmp"))  # a Unix socket path must stay short
    monkeypatch.setenv("RMX_RUNTIME_DIR", str(root / "run"))
    first = client_for(start_daemon())
    second = None
    try:
        async with Host(first).run_test(size=SIZE) as pilot:
            dialog = await open_dialog(pilot)
            config = dialog.query_one("#launch-config", TextArea)
            config.load_text("count = 0\n")
            await pilot.click("#launch")
            await until(pilot, lambda: error_of(dialog) is not None)  # the daemon's validator said no
            assert error_of(dialog) == "selftest: count must be an integer in 1..10000000"
            config.load_text("count = 30\nsleep = 0.05\n")
            # A Button ignores clicks for its 0.2 s press effect, and the daemon's refusal can come back sooner.
            await until(pilot, lambda: not dialog.query_one("#launch").has_class("-active"))
            await pilot.click("#launch")
            await until(pilot, lambda: isinstance(pilot.app.screen, JobsScreen))
            table = pilot.app.screen.query_one(JobTable)
            await until(pilot, lambda: table.selected is not None)
            job_id = table.selected.id
        first.close()  # the terminal is gone: the app and its connection with it

        second = client_for(daemon_status())
        async with Host(second).run_test(size=SIZE) as pilot:
            table = pilot.app.screen.query_one(JobTable)
            await until(pilot, lambda: job_id in table.statuses and table.statuses[job_id].state == "done", timeout=15)
            table.focus()
            await pilot.press("enter")
            run = pilot.app.screen
            assert isinstance(run, RunScreen) and run.job_id == job_id
            await until(pilot, lambda: run.ended and run.view is not None and run.plots
                        and run.plots["selftest/value"].drawn == 30, timeout=15)
            assert list(run.series["selftest/value"].ys) == list(range(30))
            assert run.received == len(list(second.job_events(job_id))) == 33  # job/state ×2, 30 values, done
    finally:
        first.close()
        if second is not None:
            second.close()
        stop_daemon()
        shutil.rmtree(root, ignore_errors=True)


def test_snapshot_of_the_launch_dialog(snap_compare):
    async def opened(pilot):
        detail = pilot.app.screen.query_one("#job-detail")
        await until(pilot, lambda: "no runs yet" in str(detail.render()))  # listed: the screen behind is still
        await pilot.press("n")
        await pilot.pause()

    assert snap_compare(Host(), terminal_size=SIZE, run_before=opened)
