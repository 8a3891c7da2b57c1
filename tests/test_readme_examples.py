"""Every fenced `rmx … demo …` line of the README runs (short) and prints something real, or says why it cannot."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from engine.core.models import demo_teacher_path
from tests.test_cli_score import run_cli

README = Path(__file__).resolve().parents[1] / "README.md"

NOT_RUN_HERE = {
    "serve": "a web server that runs until stopped (tests/tui/test_serve.py drives it)",
    "pipeline": "the whole recipe, minutes long (tests/test_pipeline.py runs it on tiny models)",
    "export-adapter": "needs a finished pipeline run (tests/test_export_adapter.py)",
    "eval": "needs a trained adapter from `rmx train` (tests/test_rollouts_eval.py)",
    "distill": "needs a teacher's rollouts file and a teacher T (tests/test_train.py)",
    "pool": "needs rollouts with mixed success, more than a seconds-long run samples (tests/test_pool.py)",
    "demo": "opens the workbench (tests/tui/test_tour.py and tests/tui/* drive it)",
}
"""Subcommands whose README lines need a long run or its output; each names the test that covers it."""
SHORTER = {"--max-new-tokens": "8", "--limit": "1", "--k": "2"}
"""Options forced small so that each example takes seconds on a CPU."""
SHRINKS = {"generate": ("--max-new-tokens",), "intervene": ("--max-new-tokens",),
           "analyze": ("--max-new-tokens",), "rollouts": ("--max-new-tokens", "--limit"),
           "overlap": ("--max-new-tokens", "--limit")}
"""Where an example leaves an option at its (long) default, the options added to it."""


def demo_examples() -> list[str]:
    """The `rmx …` lines inside the README's fenced blocks that use the demo model, comments dropped."""
    lines: list[str] = []
    fenced = False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        command = line.split("  #", 1)[0].strip()
        if fenced and command.startswith("rmx ") and re.search(r"\bdemo\b", command):
            lines.append(command)
    return lines


def runnable(argv: list[str], workdir: Path) -> list[str]:
    """The example with its placeholders filled (the shipped demo teacher as ADAPTER) and its sizes shrunk."""
    adapter = str(demo_teacher_path())
    argv = [adapter if arg in ("ADAPTER", "runs/…/adapter") else arg for arg in argv]
    argv = [str(workdir / arg) if arg.endswith((".jsonl", ".txt")) else arg for arg in argv]
    for option, value in SHORTER.items():
        if option in argv:
            argv[argv.index(option) + 1] = value
        elif option in SHRINKS.get(argv[0], ()):
            argv += [option, value]
    if argv[0] == "intervene":
        argv += ["--out", str(workdir / "intervene.jsonl")]
    return argv


def test_the_readme_has_demo_examples_and_each_is_run_or_names_its_test():
    examples = demo_examples()
    assert len(examples) >= 10
    for example in examples:
        command = shlex.split(example)[1]
        assert command in NOT_RUN_HERE or command in {"generate", "score", "analyze", "intervene",
                                                     "rollouts", "overlap"}, f"README example not covered here: {example}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """One folder for every example's inputs and outputs."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "answer.txt").write_text("Sam has 4 + 3 = 7 pencils. The answer is 7.", encoding="utf-8")
    return folder


@pytest.mark.parametrize("example", [e for e in demo_examples() if shlex.split(e)[1] not in NOT_RUN_HERE
                                     and "--job" not in e])
def test_readme_example_runs_and_prints_a_completion(example, workdir, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("RMX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RMX_RUNTIME_DIR", str(tmp_path / "rt"))
    monkeypatch.chdir(workdir)
    argv = runnable(shlex.split(example)[1:], workdir)
    code, out, err = run_cli(argv, capsys, monkeypatch)
    assert code == 0, f"{example}\n{err}"
    assert out.strip(), example
    if argv[0] == "generate" and "--json" in argv:
        for line in out.splitlines():
            result = json.loads(line)
            assert result["text"].strip(), f"empty completion from: {example}"
            if "--force" in argv:
                assert result["touched"] == [int(argv[argv.index("--force") + 1].split(":")[0])]
    if argv[0] == "score" and "--json" in argv:
        assert json.loads(out)["tokens"], example
