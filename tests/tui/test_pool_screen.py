"""The pool inspector, driven by Pilot on a Workbench with the tiny Llama: histogram, lengths, τ table, errors."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import DataTable

from engine.service.client import EngineClient
from engine.service.workbench import Workbench
from engine.core.config import ModelSpec
from engine.core.records import Rollout
from engine.jobs.store import run_outputs, write_result
from rmx_tui.screens.pool import PoolScreen, rollouts_file_of
from rmx_tui.widgets.pass_rate_histogram import PassRateHistogram
from tests.tui.harness import SIZE, until
from themes.workbench import workbench_themes

pytestmark = pytest.mark.anyio

PASSES = {"none": 0, "one": 1, "two-a": 2, "two-b": 2, "three": 3, "all": 4}
"""Problem → correct samples of 4: every pass rate, and the middle one twice."""


def write_rollouts(path: Path) -> Path:
    """Seeded rollouts of the PASSES pattern; wrong ones run longer than right ones, as in real pools."""
    rng = random.Random(0)
    with path.open("w") as handle:
        for problem, right in PASSES.items():
            prompt = tuple(rng.randrange(4, 380) for _ in range(8))
            for sample in range(4):
                correct = sample < right
                length = rng.randint(6, 10) if correct else rng.randint(12, 18)
                completion = tuple(rng.randrange(4, 380) for _ in range(length))
                rollout = Rollout(problem, sample, prompt, completion, "", "1", None, correct, "eos")
                handle.write(json.dumps(rollout.to_json()) + "\n")
    return path


class HeldClient:
    """The real client, whose scoring under the base waits until the test lets it go."""

    def __init__(self, inner: Workbench) -> None:
        self.inner = inner
        self.release = threading.Event()

    def pool_stats(self, *args, with_base: bool = False, **kwargs):
        if with_base:
            self.release.wait(timeout=60)
        return self.inner.pool_stats(*args, with_base=with_base, **kwargs)


class Host(App[None]):
    """A bare app in the workbench's theme that opens the pool inspector on `path`."""

    def __init__(self, client: EngineClient, path: str | Path, **options) -> None:
        super().__init__()
        for theme in workbench_themes():
            self.register_theme(theme)
        self.theme = "rmx-dark"
        self.client = client
        self.path = path
        self.options = options

    def on_mount(self) -> None:
        self.push_screen(PoolScreen(self.client, self.path, **self.options))


@pytest.fixture(scope="module")
def loaded(tiny_llama) -> Workbench:
    client = Workbench()
    client.load(ModelSpec(str(tiny_llama), dtype="float32", device="cpu"))
    return client


def cells(pilot, table_id: str) -> list[list[str]]:
    table = pilot.app.screen.query_one(table_id, DataTable)
    return [[str(cell) for cell in table.get_row_at(index)] for index in range(table.row_count)]


def notice(pilot) -> str:
    return str(pilot.app.screen.query_one("#pool-notice").render())


async def read(pilot) -> PoolScreen:
    screen = pilot.app.screen
    assert isinstance(screen, PoolScreen)
    await until(pilot, lambda: screen.stats is not None or screen.error is not None)
    return screen


def test_rollouts_file_of_each_kind(tmp_path):
    run = tmp_path / "runs" / "20260101-120000-rollouts-0001"
    write_result(run / "artifacts", {}, {"rollouts": "/elsewhere/r.jsonl"})
    assert rollouts_file_of(run_outputs(run), "rollouts", {}) == Path("/elsewhere/r.jsonl")  # listed, not guessed
    assert rollouts_file_of(run_outputs(run), "pipeline", {"pipeline": {}}) == Path("/elsewhere/r.jsonl")
    assert rollouts_file_of({}, "rollouts", {}) is None  # not finished: no result.json yet
    assert rollouts_file_of({}, "pool", {"pool": {"rollouts": "out/r.jsonl", "size": 50}}) == Path("out/r.jsonl")
    assert rollouts_file_of({}, "pool", {"pool": "broken"}) is None
    assert rollouts_file_of({}, "pool", {}) is None
    assert rollouts_file_of({"adapter": "a"}, "train", {"train": {"rollouts": "pool.jsonl"}}) is None


def test_outputs_of_a_result_json_written_before_outputs_existed_are_read_from_its_fields(tmp_path):
    (tmp_path / "artifacts").mkdir()
    old = tmp_path / "artifacts" / "result.json"
    old.write_text(json.dumps({"path": "/r/rollouts.jsonl", "samples": 4}))
    assert run_outputs(tmp_path) == {"rollouts": "/r/rollouts.jsonl"}
    old.write_text(json.dumps({"path": "/r/pool.jsonl", "stats": {}}))
    assert run_outputs(tmp_path) == {"pool": "/r/pool.jsonl"}
    old.write_text(json.dumps({"stages": {"rollouts": {"path": "/p/r.jsonl"}, "pool": {"path": "/p/pool.jsonl"}},
                               "adapter": "/p/adapter", "report": "/p/report.md", "comparison": None}))
    assert run_outputs(tmp_path) == {"rollouts": "/p/r.jsonl", "pool": "/p/pool.jsonl", "adapter": "/p/adapter",
                                     "report": "/p/report.md"}
    old.write_text(json.dumps({"rows": [], "best_tau": "1.4", "best_adapter": "/s/tau_1.4/adapter"}))
    assert run_outputs(tmp_path) == {"adapter": "/s/tau_1.4/adapter"}
    old.write_text("{half")
    assert run_outputs(tmp_path) == {}


async def test_histogram_lengths_and_the_tau_table_after_b(loaded, tmp_path):
    path = write_rollouts(tmp_path / "rollouts.jsonl")
    held = HeldClient(loaded)
    async with Host(held, path).run_test(size=SIZE) as pilot:
        screen = await read(pilot)
        assert screen.error is None
        assert screen.query_one(PassRateHistogram).rows == [("0/4", 1), ("1/4", 1), ("2/4", 2), ("3/4", 1),
                                                             ("4/4", 1)]
        stats = screen.stats
        lengths = cells(pilot, "#pool-lengths")
        assert [row[:2] for row in lengths] == [["correct", "8"], ["wrong", "8"], ["correct, 100% kept", "8"],
                                               ["wrong, 100% kept", "8"]]
        assert lengths[0][2] == f"{stats.lengths_correct.mean:.0f}"
        assert lengths[1][4] == f"{stats.lengths_wrong.p90:.0f}"
        assert stats.lengths_correct.mean < stats.lengths_wrong.mean
        assert not screen.query_one("#pool-decision", DataTable).display

        await pilot.press("b")
        assert screen.scoring and "scoring the pool under the base" in notice(pilot)
        held.release.set()
        await until(pilot, lambda: screen.decision is not None)
        assert not screen.scoring and notice(pilot) == "" and screen.query_one("#pool-decision", DataTable).display
        taus = cells(pilot, "#pool-decision")
        assert [row[0] for row in taus] == ["1", "1.2", "1.4", "1.6", "1.8", "2.2", "q0.95", "q0.97"]
        assert all(row[2].endswith("%") for row in taus)
        assert (tmp_path / "rollouts.entropies.jsonl").is_file()

        await pilot.press("minus", "minus", "minus", "minus")  # keep the shortest 80%: the long, wrong ones go
        await until(pilot, lambda: screen.stats.keep_shortest == 0.8)
        trimmed = cells(pilot, "#pool-lengths")
        # Per problem: each keeps its 3 shortest of 4; "three" is left all right and leaves the pool.
        assert [row[:2] for row in trimmed[2:]] == [["correct, 80% kept", "5"], ["wrong, 80% kept", "4"]]
        assert (screen.stats.trim_removed_problems, screen.stats.trim_removed_rollouts) == (1, 7)
        assert cells(pilot, "#pool-decision") == taus  # over the untrimmed pool: the trim leaves them as they were
        await pilot.press("escape")
        assert not isinstance(pilot.app.screen, PoolScreen)


async def test_errors_show_inline_and_the_screen_stays_usable(tmp_path):
    path = write_rollouts(tmp_path / "rollouts.jsonl")
    empty = Workbench()  # no model loaded: the stats need none, scoring does
    async with Host(empty, tmp_path / "missing.jsonl").run_test(size=SIZE) as pilot:
        screen = await read(pilot)
        assert notice(pilot) == f"rollouts file not found: {tmp_path / 'missing.jsonl'}"
        assert screen.query_one(PassRateHistogram).rows == [] and cells(pilot, "#pool-lengths") == []
        screen.rollouts = str(path)  # the run wrote its file meanwhile
        await pilot.press("r")
        await until(pilot, lambda: screen.stats is not None)
        assert notice(pilot) == ""
        await pilot.press("b")
        await until(pilot, lambda: not screen.scoring)
        assert notice(pilot) == "no model is loaded: load a base model first"
        assert screen.stats is not None and screen.decision is None  # the stats stay on screen

    flat = tmp_path / "flat.jsonl"
    flat.write_text("".join(line for line in path.read_text().splitlines(keepends=True)
                            if json.loads(line)["problem_id"] in ("none", "all")))
    async with Host(empty, flat).run_test(size=SIZE) as pilot:
        await read(pilot)
        assert notice(pilot).startswith("no training signal: 0 of 2 problems have mixed success at K=4")


async def test_size_and_trim_from_the_run_config(loaded, tmp_path):
    path = write_rollouts(tmp_path / "rollouts.jsonl")
    async with Host(loaded, path, size=2, keep_shortest=0.75).run_test(size=SIZE) as pilot:
        screen = await read(pilot)
        assert (screen.stats.selected, screen.stats.rollouts) == (2, 6)
        summary = str(screen.query_one("#pool-summary").render())
        assert "pool: 2 problems (the 2 closest to a pass rate of 0.5), 6 rollouts" in summary
        assert "keeping the shortest 75% of each problem's (the trim removed 0 problems and 2 rollouts)" in summary


def test_snapshot_of_the_pool_screen(snap_compare, loaded, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative path: the title is the same on every machine
    write_rollouts(tmp_path / "rollouts.jsonl")

    async def scored(pilot):
        screen = await read(pilot)
        await pilot.press("b")
        await until(pilot, lambda: screen.decision is not None)

    assert snap_compare(Host(loaded, "rollouts.jsonl"), terminal_size=SIZE, run_before=scored)


def test_the_compare_views_adapter_is_the_newest_finished_runs_listed_adapter():
    from engine.jobs.store import JobSpec, create_run, read_status, write_json_atomic
    from engine.jobs.store import LocalJobs
    from rmx_tui.adapter_choice import newest_adapter

    def finished(kind: str, created: float, outputs: dict[str, str] | None) -> None:
        run_dir = create_run(JobSpec(kind=kind, entry="engine.jobs.kinds:train_job", config={}, rmx_version="0",
                                     created=created))
        write_json_atomic(run_dir / "status.json", {**read_status(run_dir).to_json(), "state": "done"})
        if outputs is not None:
            write_result(run_dir / "artifacts", {}, outputs)

    assert newest_adapter(LocalJobs()) is None
    finished("train", 1.0, {"adapter": "/runs/a/adapter"})
    finished("distill", 2.0, {"adapter": "/elsewhere/distilled"})  # wherever it wrote it: listed, not guessed
    finished("rollouts", 3.0, {"rollouts": "/r.jsonl"})  # no adapter
    finished("train", 4.0, None)  # its result.json missing: nothing to offer
    assert newest_adapter(LocalJobs()) == "/elsewhere/distilled"
