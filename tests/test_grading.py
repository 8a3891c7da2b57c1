"""Tests for engine.core.grading: answer extraction, both graders, pitfalls and timeouts."""

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from engine.core.grading import GradeResult, extract_answer, grade, grade_sympy

BOTH_GRADERS = pytest.mark.parametrize("grader", [grade, grade_sympy], ids=["math-verify", "sympy"])


# --- extraction -------------------------------------------------------------------------------


def test_boxed_with_nested_braces_is_extracted_whole():
    assert extract_answer(r"so $\boxed{\frac{1}{2}}$.") == (r"\frac{1}{2}", "boxed")


def test_last_boxed_wins():
    text = r"First \boxed{3}, then corrected: \boxed{\sqrt{2}}."
    assert extract_answer(text) == (r"\sqrt{2}", "boxed")


def test_fbox_counts_as_boxed():
    assert extract_answer(r"\fbox{7}") == ("7", "boxed")


def test_escaped_braces_inside_a_box_are_content():
    assert extract_answer(r"\boxed{\{1, 2\}}") == (r"\{1, 2\}", "boxed")


def test_a_last_box_cut_off_is_no_answer_and_never_falls_back_to_an_earlier_box():
    for mode in ("strict", "lenient"):
        assert extract_answer(r"\boxed{4} ... so \boxed{\frac{1}{", "length", mode) == (None, "unclosed-box")
        assert extract_answer(r"\boxed{\frac{1}{2", "length", mode) == (None, "unclosed-box")


def test_empty_box_is_not_an_answer():
    assert extract_answer(r"\boxed{} and 12") == (None, "none")
    assert extract_answer(r"\boxed{} and 12", mode="lenient") == ("12", "last-number")


def test_fallbacks_apply_in_order():
    everything = "The answer is 5.\n#### 6\nlast 7 " + r"\boxed{4}"
    assert extract_answer(everything) == ("4", "boxed")
    assert extract_answer("The answer is 5.\n#### 6\nlast 7") == ("5", "answer-is")
    assert extract_answer("so 3 + 3\n#### 6\nlast 7") == ("6", "gsm8k")
    assert extract_answer("Adding gives 3 and then 7") == (None, "none")
    assert extract_answer("Adding gives 3 and then 7", mode="lenient") == ("7", "last-number")


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (r"The answer is $\frac{3}{4}$ since it works.", r"\frac{3}{4}"),
        ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),
        ("**Final Answer:** 42", "42"),
        ("The answer is: **72**", "72"),
        ("The answer is 3.5.", "3.5"),
        (r"the answer is \(x=2\).", "x=2"),
    ],
)
def test_answer_is_forms(text, answer):
    assert extract_answer(text) == (answer, "answer-is")


def test_gsm8k_marker():
    assert extract_answer("She pays 8 * 9 = 72 dollars.\n#### 72") == ("72", "gsm8k")


def test_last_number_keeps_thousands_separators_and_sign():
    assert extract_answer("total 12, so -1,250.5 remain", mode="lenient") == ("-1,250.5", "last-number")


# The issue's false positives: each graded correct before, none may be now.
FALSE_POSITIVES = [
    ("2+3 = 5. Then we multiply by", "5", "length"),  # stopped mid-sentence after an intermediate number
    ("2+3 = 5. Then we multiply by", "5", "eos"),
    (r"so the answer is \boxed{\frac{1}{2", "2", "length"),  # a truncated box
    ("there are 4 cases, and we check each: case 1, case 2, case 3, case 4", "4", "eos"),
    ("there are 4 cases, and we check each: case 1, case 2, case 3, case 4", "4", "length"),
    (r"\boxed{4} so far; now the real answer: \boxed{\frac{1}{", "4", "length"),  # the unclosed last box
    ("So 2+3 = 5.", "5", "length"),  # an equation is an answer only in a finished completion
    ("The answer is 5", "5", "length"),  # the sentence may go on: 5, 50, 5/2 ...
    ("#### 5", "5", "length"),
]


@BOTH_GRADERS
@pytest.mark.parametrize(("completion", "gold", "finish"), FALSE_POSITIVES)
def test_strict_grading_has_no_false_positives(grader, completion, gold, finish):
    result = grader(completion, gold, finish=finish)
    assert (result.correct, result.reason, result.extracted) == (False, "no_answer", None), result
    assert result.detail and "\n" not in result.detail


@pytest.mark.parametrize(
    ("completion", "finish", "answer", "method"),
    [
        ("So 2+3 = 5.", "eos", "5", "final-equation"),
        ("so the total is 3 \\times 4 = 12", "stop", "12", "final-equation"),
        (r"Therefore $x = \frac{1}{2}$.", "eos", r"\frac{1}{2}", "final-equation"),
        ("The answer is 5.", "length", "5", "answer-is"),  # a sentence that ended before the cut
        ("#### 72\nand then", "length", "72", "gsm8k"),
        (r"\boxed{4} and then I went on", "length", "4", "boxed"),  # a closed box counts even when cut off
        ("The answer is 5", None, "5", "answer-is"),  # an unknown finish reads as finished
    ],
)
def test_stated_answers_are_still_found(completion, finish, answer, method):
    assert extract_answer(completion, finish) == (answer, method)
    assert grade(completion, answer, finish=finish).correct


def test_lenient_takes_the_last_number_whatever_the_finish():
    result = grade("there are 4 cases ... case 4", "4", finish="length", extract="lenient")
    assert (result.correct, result.method) == (True, "last-number")
    # The truncated-box rule holds in both modes.
    assert grade(r"\boxed{4} ... \boxed{\frac{1}{", "4", finish="length", extract="lenient").correct is False


def test_no_answer():
    assert extract_answer("I am not sure how to proceed.") == (None, "none")
    result = grade("I am not sure how to proceed.", "5")
    assert (result.extracted, result.correct, result.reason) == (None, False, "no_answer")


# --- equivalence ------------------------------------------------------------------------------


@BOTH_GRADERS
@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        ("#### 72", "72"),
        (r"\boxed{1,000}", "1000"),
        (r"\boxed{1{,}000}", "1000"),
        (r"\boxed{\$5}", "5"),
        (r"\boxed{\$5.00}", "5"),
        (r"\boxed{50\%}", "50"),
        (r"\boxed{30^\circ}", "30"),
        (r"\boxed{\text{(A)}}", "A"),
        (r"\boxed{(A)}", r"\text{(A)}"),
        (r"\boxed{0.5}", r"\frac{1}{2}"),
        (r"\boxed{\dfrac{1}{2}}", "0.5"),
        (r"\boxed{\frac12}", r"\frac{1}{2}"),
        (r"\boxed{2\sqrt{2}}", r"\sqrt{8}"),
        (r"\boxed{(3, \frac{\pi}{2})}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"\boxed{\{2, 1\}}", r"\{1,2\}"),
        (r"\boxed{3, 1, 2}", "1,2,3"),
        (r"\boxed{[1, 2)}", "[1,2)"),
        (r"\boxed{10\text{ cm}}", "10"),
        (r"\boxed{4.5 \times 10^{33}}", "4.5e33"),
        (r"\boxed{x = 5}", "5"),
    ],
)
def test_equivalent_answers_match(grader, completion, gold):
    result = grader(completion, gold)
    assert (result.correct, result.reason) == (True, "match"), result


@BOTH_GRADERS
@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        (r"\boxed{(2, 1)}", "(1, 2)"),  # a tuple is ordered
        (r"\boxed{(1, 2]}", "(1, 2)"),  # an interval's brackets matter
        (r"\boxed{0.866}", r"\frac{\sqrt{3}}{2}"),  # too coarse a decimal
        (r"\boxed{10001}", "10000"),
        (r"\boxed{B}", r"\text{(A)}"),
    ],
)
def test_different_answers_do_not_match(grader, completion, gold):
    result = grader(completion, gold)
    assert (result.correct, result.reason) == (False, "mismatch"), result


def test_result_records_what_was_compared():
    result = grade(r"Thus $\boxed{\frac{1}{2}}$.", "0.5")
    assert result == GradeResult(r"\frac{1}{2}", "0.5", True, "match", "math-verify", "boxed", result.detail)
    assert "boxed" in result.detail and "0.5" in result.detail
    assert grade_sympy(r"\boxed{2}", "2").grader == "sympy"
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.correct = False


def test_graders_can_disagree():
    # The point of the second grader: 50% = 0.5 to math-verify, while rmx's sympy
    # normaliser drops the percent sign and sees 50 against 0.5.
    assert grade(r"\boxed{50\%}", "0.5").correct
    assert not grade_sympy(r"\boxed{50\%}", "0.5").correct


@BOTH_GRADERS
@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        (None, "1"),
        ("", ""),
        (r"\boxed{%%%}", "{"),
        (r"\boxed{" + "{" * 300 + "}", "1"),
        ("\x00\ud800", "2"),
    ],
)
def test_odd_input_never_raises(grader, completion, gold):
    result = grader(completion, gold)
    assert isinstance(result, GradeResult)
    assert result.reason in {"match", "mismatch", "no_answer", "timeout", "parse_error"}


# --- math-verify pitfalls (github.com/huggingface/Math-Verify/issues/N) -----------------------


@BOTH_GRADERS
@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        (r"\boxed{\frac{1}{2^{98}}}", r"\frac{1}{2^{99}}"),
        (r"\boxed{\frac{1}{2006!}}", r"\frac{1}{2004!}"),
        (r"\boxed{\frac{1}{3 \cdot 2^{2006}}}", r"\frac{2^{2005}+1}{3 \cdot 2^{2006}}"),
        (r"\boxed{2.88 \times 10^{-19}}", "1.325e-27"),
        (r"\boxed{1 + \frac{1}{\mathrm{e}}}", r"1 - \frac{1}{\mathrm{e}}"),
        (r"\boxed{2021}", r"\pm 2021"),
        (r"\boxed{n=1, 2, 3}", "n=2, 3, 4"),
    ],
)
def test_issue_14_false_positives_are_rejected(grader, completion, gold):
    """#14: verify() said True for these. math-verify evaluates a - b to 15 digits with
    chop=True, so tiny or cancelling exact values compare equal, and it rounds decimals to 6
    places, so any two below 1e-6 compare equal; rmx re-checks such pairs (exact ones at 40
    digits, tiny decimals to a relative 1e-6). \\mathrm{e} was dropped as a unit (1 +- 1/e
    both read as 1); rmx rewrites it to e first."""
    result = grader(completion, gold)
    assert (result.correct, result.reason) == (False, "mismatch"), result


def test_issue_14_rewrite_keeps_true_matches():
    assert grade(r"\boxed{1 - e^{-1}}", r"1 - \frac{1}{\mathrm{e}}").correct
    assert grade(r"\boxed{\frac{1}{2^{99}}}", r"2^{-99}").correct
    assert grade(r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{1}{\sqrt{2}}").correct
    assert grade(r"\boxed{0.333333}", r"\frac{1}{3}").correct
    assert grade(r"\boxed{2.88 \times 10^{-19}}", "2.88e-19").correct


@BOTH_GRADERS
def test_issue_47_a_subset_of_a_multi_part_answer_is_wrong(grader):
    """#47: with gold "1331 and 1728" and prediction "1728", verify() was True because the
    gold parsed to just its last number and verify takes any() over candidates. rmx always
    parses the whole gold inside \\boxed{}, so it is the set {1331, 1728}."""
    assert not grader(r"\boxed{1728}", "1331 and 1728").correct
    assert not grader(r"\boxed{1728}", "1331, 1728").correct
    assert grader(r"\boxed{1728 \text{ and } 1331}", "1331, 1728").correct
    assert grader(r"\boxed{1728, 1331}", "1331 and 1728").correct


def test_issue_64_radicals_equal_for_positive_variables_match():
    """#64: \\sqrt{1/n} vs \\frac{1}{\\sqrt{n}} was False, since they differ for negative n.
    Contest variables are positive, so rmx retries a mismatch with every symbol taken
    positive; |x| is excluded so that |x| = x stays wrong."""
    assert grade(r"\boxed{\frac{1}{\sqrt{n}}}", r"\sqrt{1/n}").correct
    assert grade(r"\boxed{\sqrt{a}\sqrt{b}}", r"\sqrt{ab}").correct
    assert not grade(r"\boxed{\frac{1}{n}}", r"\sqrt{1/n}").correct
    assert not grade(r"\boxed{x}", "|x|").correct


@BOTH_GRADERS
def test_issue_64_equations_are_not_reduced_to_their_last_number(grader):
    """#64 (and #60): parse("f(x) = 0") without a LaTeX environment kept only "0", so
    different equations with the same right-hand side matched. rmx wraps answers in \\boxed{}."""
    assert not grader(r"\boxed{3x + 4y + 14 = 0}", "3x - y + 13 = 0").correct
    assert not grader(r"\boxed{f(x) = 0}", "f(x) = x").correct
    assert not grade(r"\boxed{\forall x>0, f(x) = 0}", "f(x) = x").correct
    assert grade(r"\boxed{f(x) = x + x}", "f(x) = 2x").correct


@BOTH_GRADERS
@pytest.mark.parametrize(
    ("completion", "gold"),
    [
        (r"\boxed{-1 + exp(16)}", "e^{16} - 1"),
        (r"\boxed{pi/2}", r"\dfrac{\pi}{2}"),
        (r"\boxed{14.0 + -1.0i}", "14 - i"),
        (r"\boxed{-2*pi}", r"-2\pi"),
        (r"\boxed{sqrt(2)/2}", r"\frac{\sqrt{2}}{2}"),
        ("The answer is 3**2.", "9"),
    ],
)
def test_issue_69_code_style_answers_match(grader, completion, gold):
    """#69: answers in Python/sympy notation scored 0: read as LaTeX, "pi" is p*i and
    "exp(16)" is e*x*p*16. rmx rewrites code-style math (no backslash) into LaTeX first.
    (The issue's "Theta(log log n)" vs "O(\\log \\log n)" is a different claim and stays
    a mismatch.)"""
    result = grader(completion, gold)
    assert (result.correct, result.reason) == (True, "match"), result


# --- timeouts and threads ---------------------------------------------------------------------


def test_overrunning_check_times_out_and_the_next_grade_works():
    # 9^(9^9) has 370 million digits: sympy computes it in C, where no thread or signal can
    # stop it; only killing the worker process does. If sympy ever stops expanding it,
    # pick another input that takes longer than the timeout.
    grade(r"\boxed{1}", "1")  # start the worker first: its start-up is not part of the timeout
    start = time.monotonic()
    result = grade(r"\boxed{9^{9^{9}}}", "5", timeout_s=0.5)
    assert time.monotonic() - start < 3
    assert (result.correct, result.reason, result.extracted) == (False, "timeout", "9^{9^{9}}")
    assert grade_sympy(r"\boxed{5}", "5").reason == "match"
    assert grade(r"\boxed{5}", "5").reason == "match"


def test_grading_works_from_worker_threads():
    # math-verify's own timeout uses SIGALRM and raises ValueError outside the main thread.
    results: list[GradeResult] = []
    worker = threading.Thread(target=lambda: results.append(grade(r"\boxed{\frac{2}{4}}", "0.5")))
    worker.start()
    worker.join(30)
    assert [r.reason for r in results] == ["match"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        verdicts = list(pool.map(lambda i: grade(rf"\boxed{{{i}}}", str(i % 3)).correct, range(12)))
    assert verdicts == [i == i % 3 for i in range(12)]
