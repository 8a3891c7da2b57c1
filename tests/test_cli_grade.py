"""`rmx grade` through the real entry point: the verdict, the rule that found the answer, and bad input."""

from __future__ import annotations

import json

import pytest

from tests.test_cli_score import run_cli


def grade_json(args, capsys, monkeypatch) -> dict:
    code, out, err = run_cli(["grade", *args, "--json"], capsys, monkeypatch)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize(
    ("completion", "gold", "finish"),
    [
        ("2+3 = 5. Then we multiply by", "5", "length"),
        (r"\boxed{\frac{1}{2", "2", "length"),
        ("there are 4 cases ... case 4", "4", "eos"),
        (r"\boxed{4} ... \boxed{\frac{1}{", "4", "length"),
    ],
)
def test_grade_json_refuses_the_issues_false_positives(completion, gold, finish, capsys, monkeypatch):
    data = grade_json(["--completion-text", completion, "--gold", gold, "--finish", finish], capsys, monkeypatch)
    assert {"extracted", "gold", "correct", "reason"} <= set(data)
    assert (data["extracted"], data["gold"], data["correct"], data["reason"]) == (None, gold, False, "no_answer")
    assert data["why"]


def test_grade_json_says_which_rule_found_the_answer(capsys, monkeypatch):
    data = grade_json(["--completion-text", r"So the answer is $\boxed{\frac{1}{2}}$.", "--gold", "0.5"],
                      capsys, monkeypatch)
    assert (data["extracted"], data["correct"], data["reason"], data["method"]) == (r"\frac{1}{2}", True, "match", "boxed")
    lenient = grade_json(["--completion-text", "there are 4 cases ... case 4", "--gold", "4", "--extract", "lenient"],
                         capsys, monkeypatch)
    assert (lenient["correct"], lenient["method"]) == (True, "last-number")
    code, out, err = run_cli(["grade", "--completion-text", "2+3 = 5.", "--gold", "5"], capsys, monkeypatch)
    assert code == 0 and out.startswith("correct (match)"), err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--completion-text", "", "--gold", "4"], "empty completion"),
        (["--completion-text", "   ", "--gold", "4"], "empty completion"),
        (["--gold", "4"], "empty completion"),
        (["--completion-text", "x = 4.", "--gold", r"\frac{1}{"], "unbalanced braces"),
        (["--completion-text", "x = 4.", "--gold", "$$"], "cannot be parsed"),
        (["--completion-text", "x = 4."], "no gold answer"),
        (["--completion-text", "x = 4.", "--gold", "4", "--finish", "maybe"], "unknown --finish"),
        (["--completion-text", "x = 4.", "--gold", "4", "--extract", "loose"], "unknown --extract"),
    ],
)
def test_grade_bad_input_is_one_line_and_exit_2(args, message, capsys, monkeypatch):
    code, out, err = run_cli(["grade", *args], capsys, monkeypatch)
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
