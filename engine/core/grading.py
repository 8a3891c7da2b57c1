"""Answer extraction from model completions and equivalence grading against gold answers."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import queue
import re
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass
from itertools import product
from typing import IO

from engine.core.errors import RmxError

MATH_VERIFY = "math-verify"
SYMPY = "sympy"
EXTRACT_MODES = ("strict", "lenient")
"""strict (the default): no answer from a cut-off completion unless it boxed or stated one; lenient adds the
last number anywhere, whatever the finish."""
FINISHED = ("eos", "stop")
"""Finish reasons of a completion that ended on its own; length and context mean cut off."""
FINISHES = ("eos", "stop", "length", "context")

# Heavy imports happen only in the worker process, before it reports ready, so that
# `import engine.core.grading` stays cheap and no check's timeout is spent importing sympy.
_WORKER_IMPORTS = ("sympy", "math_verify", "latex2sympy2_extended")
_WORKER_READY = "ready"
_WORKER_MAIN = "from engine.core.grading import _serve\n_serve()"
_WORKER_START_TIMEOUT_S = 120.0

_BOX_OPEN_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS_RE = re.compile(r"(?i)\b(?:final answer|the answer)\s*(?:is\b\s*:?|:|=)")
_GSM8K_RE = re.compile(r"####[ \t]*([^\n]*)")
_NUMBER_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)")
_WORD_RE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}")
_FINAL_EQUATION_RE = re.compile(r"=\s*\$?\s*([^=\n$]{1,60}?)[\s.$]*$")
_LEADING_MATH_RE = re.compile(r"(?:\$\$?|\\\(|\\\[)(.+?)(?:\$\$?|\\\)|\\\])", re.DOTALL)

_UPRIGHT_CONSTANT_RE = re.compile(r"\\(?:mathrm|text|operatorname)\s*\{\s*([ei])\s*\}")
_SCIENTIFIC_RE = re.compile(r"(?<![\w.\\])(\d+(?:\.\d+)?)[eE]([+-]?\d+)(?![\w.])")
_UNESCAPED_DOLLAR_RE = re.compile(r"(?<!\\)\$")
_PLAIN_CALL_RE = re.compile(r"\b(sqrt|exp)\(")
_PLAIN_PI_RE = re.compile(r"(?<![a-zA-Z\\])pi\b")
_PLAIN_IMAGINARY_RE = re.compile(r"(?<=\d)i\b")
_PLAIN_INTEGRAL_FLOAT_RE = re.compile(r"(?<![\d.])(\d+)\.0+(?!\d)")

_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?:\.|(?![a-zA-Z]))")
_TEXT_WRAPPER_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|mbox|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}"
)
_LATEX_SPACE_RE = re.compile(r"\\[,;:! ]|~")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|°")
_TRAILING_UNIT_RE = re.compile(r"(?<=[\d}])\s+[a-zA-Z]{2,}(?:\s+[a-zA-Z]+)*\.?$")
_AND_RE = re.compile(r",?\s+and\s+")
_CHOICE_RE = re.compile(r"\(([A-Z])\)")
_ASSIGNMENT_RE = re.compile(r"^[a-zA-Z]\s*=(?!=)")
_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_FRAC_SHORTHAND_RE = re.compile(r"\\frac\s*(\d)\s*(\d)")
_SQRT_SHORTHAND_RE = re.compile(r"\\sqrt\s*(\d)")
_BARE_DECIMAL_RE = re.compile(r"(?<![\d.])\.(\d)")
_INTEGER_RE = re.compile(r"[+-]?\d+")
_DECIMAL_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

# Relative tolerance for decimals: the sympy grader's, and math-verify's below 1e-6.
_SYMPY_REL_TOL = 1e-6
# Exact numbers that math-verify calls equal are re-checked at this many digits, and
# must agree to this relative difference.
_EXACT_DIGITS = 40
_EXACT_REL_DIFF = 1e-25
# Magnitude below which math-verify's 6-decimal rounding cannot tell decimals apart.
_ROUNDED_AWAY = 1e-6


@dataclass(frozen=True)
class GradeResult:
    """The verdict on one completion: what was extracted, whether it matches, and why."""

    extracted: str | None
    gold: str
    correct: bool
    reason: str  # "match", "mismatch", "no_answer", "timeout" or "parse_error"
    grader: str  # "math-verify" or "sympy"
    method: str = ""
    """The extraction rule that found the answer (boxed, answer-is, gsm8k, final-equation, last-number), or
    why there is none (none, unclosed-box)."""
    detail: str = ""
    """One line saying why the verdict is what it is."""


class _Unparsable(Exception):
    """An answer that the grader could not turn into anything comparable."""


# --- extraction ---------------------------------------------------------------------------


def extract_answer(text: str, finish: str | None = None, mode: str = "strict") -> tuple[str | None, str]:
    """(answer, method): the final answer in a completion and the rule that found it.

    `finish` is why the completion ended (eos, stop, length, context; None when unknown, read as
    finished). Rules, first that applies wins:
    'boxed'          the last \\boxed{...}/\\fbox{...}, which must be closed (nested braces balanced):
                     when the last box is cut off, there is no answer ('unclosed-box'), never an
                     earlier box;
    'answer-is'      the sentence after the last "the answer is" / "final answer is" / "final
                     answer:", without $ or ** around it (in a cut-off completion only if that
                     sentence ended);
    'gsm8k'          the text after the last "####" (in a cut-off completion only if its line ended);
    'final-equation' a finished completion that ends with "= <answer>" (and maybe a full stop);
    'last-number'    lenient mode only: the last number anywhere, whatever the finish;
    otherwise (None, 'none').
    """
    if mode not in EXTRACT_MODES:
        raise RmxError(f"unknown extraction mode '{mode}': use one of {', '.join(EXTRACT_MODES)}")
    if finish is not None and finish not in FINISHES:
        raise RmxError(f"unknown finish '{finish}': use one of {', '.join(FINISHES)}")
    text = text if isinstance(text, str) else str(text)
    finished = finish is None or finish in FINISHED
    last_box = _last_box(text)
    if last_box is not None:
        content, closed = last_box
        if not closed:
            return None, "unclosed-box"
        if content:
            return content, "boxed"
    for method, find in (("answer-is", _answer_is), ("gsm8k", _gsm8k_answer)):
        answer, ended = find(text)
        if answer and (finished or ended):
            return answer, method
    if finished:
        answer = _final_equation(text)
        if answer:
            return answer, "final-equation"
    if mode == "lenient":
        numbers = _NUMBER_RE.findall(text)
        if numbers:
            return numbers[-1], "last-number"
    return None, "none"


def _last_box(text: str) -> tuple[str, bool] | None:
    """(content, closed) of the box that opens last; None without any box."""
    openers = list(_BOX_OPEN_RE.finditer(text))
    if not openers:
        return None
    start = openers[-1].end() - 1
    contents = dict(_boxes(text))
    if start in contents:
        return contents[start], True
    return "", False


def _boxes(text: str) -> list[tuple[int, str]]:
    """(opening brace, stripped content) of every closed \\boxed{}/\\fbox{}, ordered by where each opens."""
    box_braces = {match.end() - 1 for match in _BOX_OPEN_RE.finditer(text)}
    if not box_braces:
        return []
    found: list[tuple[int, str]] = []
    open_braces: list[int] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            # An escaped brace (\{ in a set) is content, not structure.
            i += 2
            continue
        if char == "{":
            open_braces.append(i)
        elif char == "}" and open_braces:
            start = open_braces.pop()
            if start in box_braces:
                found.append((start, text[start + 1 : i].strip()))
        i += 1
    return sorted(found)


def _answer_is(text: str) -> tuple[str | None, bool]:
    """(the stated answer, whether its sentence ended) after the last "the answer is"."""
    matches = list(_ANSWER_IS_RE.finditer(text))
    if not matches:
        return None, False
    tail = text[matches[-1].end() :].strip().strip("*").strip()
    math_span = _LEADING_MATH_RE.match(tail)
    if math_span:
        return math_span.group(1).strip(), True
    line, newline, _ = tail.partition("\n")
    parts = _SENTENCE_END_RE.split(line, maxsplit=1)
    return _strip_wrappers(parts[0]) or None, bool(newline) or len(parts) > 1


def _gsm8k_answer(text: str) -> tuple[str | None, bool]:
    """(the text after the last "####", whether its line ended)."""
    matches = list(_GSM8K_RE.finditer(text))
    if not matches:
        return None, False
    last = matches[-1]
    return _strip_wrappers(last.group(1)) or None, text[last.end() :].startswith("\n")


def _final_equation(text: str) -> str | None:
    """The right-hand side when the completion's last line ends with "= <answer>" (a full stop allowed)."""
    match = _FINAL_EQUATION_RE.search(text.rstrip())
    if not match:
        return None
    answer = _strip_wrappers(match.group(1))
    # "= 5. Then we multiply by" ends in prose, not in an answer: the right-hand side must be math alone.
    if _SENTENCE_END_RE.search(answer) or _WORD_RE.search(answer) or not any(c.isdigit() for c in answer):
        return None
    return answer


def _strip_wrappers(answer: str) -> str:
    answer = answer.strip().strip("*").rstrip(".,;").strip()
    math_span = _LEADING_MATH_RE.fullmatch(answer)
    return math_span.group(1).strip() if math_span else answer


# --- grading entry points -------------------------------------------------------------------


def grade(completion: str, gold: str, timeout_s: float = 5.0, *, finish: str | None = None,
          extract: str = "strict") -> GradeResult:
    """Grade a completion against a gold answer with math-verify; never raises on odd input.

    The answer is pulled out with extract_answer, lightly normalised (see _prepare) and
    compared with math-verify, plus two corrections for its known false verdicts: tiny
    exact numbers that its rounding equates, and radicals that are equal for positive
    variables. Runs in a worker process, so timeout_s holds from any thread. `finish` (why the
    completion ended) and `extract` (strict or lenient) are extract_answer's.
    """
    return _grade(completion, gold, timeout_s, MATH_VERIFY, finish, extract)


def grade_sympy(completion: str, gold: str, timeout_s: float = 5.0, *, finish: str | None = None,
                extract: str = "strict") -> GradeResult:
    """Grade with rmx's own sympy-based normaliser, a second opinion to show grader disagreements.

    Both answers are normalised (\\left/\\right, \\text{}, $, degrees, %, trailing units,
    thousands separators, \\dfrac), then compared as strings, then elementwise for
    tuples/sets/intervals, then numerically (exact for integers, relative 1e-6 for
    decimals), then by sympy.simplify(a - b) == 0 on latex2sympy parses.
    """
    return _grade(completion, gold, timeout_s, SYMPY, finish, extract)


def _grade(completion: str, gold: str, timeout_s: float, grader: str, finish: str | None = None,
           extract: str = "strict") -> GradeResult:
    gold = gold if isinstance(gold, str) else str(gold)
    extracted, method = extract_answer(completion, finish, extract)
    if extracted is None:
        return GradeResult(None, gold, False, "no_answer", grader, method, _no_answer(method, finish, extract))
    try:
        reason = _WORKER.check(grader, extracted, gold, timeout_s)
    except TimeoutError:
        reason = "timeout"
    found = f"{extracted!r} (found by the {method} rule)"
    detail = {
        "match": f"{found} is equivalent to the gold {gold!r} under {grader}",
        "mismatch": f"{found} is not equivalent to the gold {gold!r} under {grader}",
        "timeout": f"comparing {found} with the gold {gold!r} took longer than {timeout_s:g} s",
        "parse_error": f"{grader} could not parse {found} or the gold {gold!r}",
    }.get(reason, reason)
    return GradeResult(extracted, gold, reason == "match", reason, grader, method, detail)


def check_gold(gold: str, grader: str = MATH_VERIFY, timeout_s: float = 5.0) -> None:
    """Raise RmxError when the gold answer is malformed: unbalanced braces, or `grader` cannot match it with itself."""
    unescaped = re.sub(r"\\[{}]", "", gold)
    depth = 0
    for char in unescaped:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            break
    if depth != 0:
        raise RmxError(f"the gold answer {gold!r} has unbalanced braces: give it as LaTeX or a number")
    try:
        reason = _WORKER.check(grader, gold, gold, timeout_s)
    except TimeoutError:
        reason = "timeout"
    if reason != "match":
        raise RmxError(f"the gold answer {gold!r} cannot be parsed by {grader} ({reason}): give it as LaTeX or a number")


def _no_answer(method: str, finish: str | None, extract: str) -> str:
    if method == "unclosed-box":
        return "the last \\boxed{ is never closed (cut off), and an earlier box does not stand in for it"
    if finish is not None and finish not in FINISHED:
        return (f"cut off ({finish}) before a closed \\boxed{{}} or an ended 'the answer is' sentence; "
                "the last number of a cut-off completion is not an answer")
    rules = "a closed \\boxed{}, 'the answer is ...', '#### ...', or a last line ending '= <answer>'"
    if extract == "lenient":
        return f"none of {rules}, and no number at all"
    return f"none of {rules} (--extract lenient would also take the last number anywhere)"


# --- shared normalisation -----------------------------------------------------------------


def _prepare(answer: str) -> str:
    """Rewrite forms both graders misread; each rule names the misreading it avoids."""
    # Math-mode delimiters left inside answers ("69$,$84") split one answer in two;
    # \$ (currency) stays for the graders to drop.
    answer = _UNESCAPED_DOLLAR_RE.sub("", answer).strip()
    answer = re.sub(r"\.\s*$", "", answer)
    # latex2sympy drops \mathrm{e} as if it were a unit, so 1 - 1/\mathrm{e} reads as 1.
    answer = _UPRIGHT_CONSTANT_RE.sub(r"\1", answer)
    # 4.5e33 would parse as 4.5 * e * 33.
    answer = _SCIENTIFIC_RE.sub(r"\1\\times 10^{\2}", answer)
    return _latexify_plain(answer)


def _latexify_plain(answer: str) -> str:
    """Turn code-style math ("pi/2", "-1 + exp(16)", "14.0 + -1.0i") into LaTeX.

    Models often answer in Python/sympy notation; read as LaTeX, "pi" is p*i and
    "exp(16)" is e*x*p*16, so a right answer fails (math-verify issue #69).
    """
    if "\\" in answer:
        return answer
    answer = answer.replace("**", "^")
    answer = _rewrite_calls(answer)
    answer = _PLAIN_PI_RE.sub(r"\\pi", answer)
    answer = re.sub(r"\+\s*-", "-", answer)
    answer = _PLAIN_INTEGRAL_FLOAT_RE.sub(r"\1", answer)
    # "1i" has no word boundary before i, so it would not be read as the imaginary unit.
    return _PLAIN_IMAGINARY_RE.sub(" i", answer)


def _rewrite_calls(answer: str) -> str:
    """sqrt(x) -> \\sqrt{x} and exp(x) -> e^{x}, innermost first; stops at unbalanced parens."""
    while True:
        calls = list(_PLAIN_CALL_RE.finditer(answer))
        if not calls:
            return answer
        call = calls[-1]
        close = _matching_close(answer, call.end() - 1)
        if close is None:
            return answer
        inner = answer[call.end() : close]
        latex = f"\\sqrt{{{inner}}}" if call.group(1) == "sqrt" else f"e^{{{inner}}}"
        answer = answer[: call.start()] + latex + answer[close + 1 :]


def _matching_close(text: str, open_index: int) -> int | None:
    """Index of the bracket that closes the one at open_index, any of ()[]{} counted."""
    depth = 0
    for i in range(open_index, len(text)):
        if text[i] in "([{":
            depth += 1
        elif text[i] in ")]}":
            depth -= 1
            if depth == 0:
                return i
    return None


# --- math-verify check (runs in the worker) -----------------------------------------------


def _math_verify_equal(extracted: str, gold: str) -> bool:
    from math_verify import LatexExtractionConfig, parse, verify

    # Wrapping in \boxed{} makes math-verify read the whole string as one LaTeX answer;
    # unwrapped, "f(x) = 0" is reduced to its last number (issues #60, #64).
    targets = (LatexExtractionConfig(boxed_match_priority=0),)
    gold_parsed, pred_parsed = (
        parse(f"\\boxed{{{_prepare(answer)}}}", extraction_config=targets, parsing_timeout=None)
        for answer in (gold, extracted)
    )
    if not gold_parsed or not pred_parsed:
        raise _Unparsable
    # Pairs are checked one by one (verify() would take any()) so each match can be vetted.
    for gold_item, pred_item in product(gold_parsed, pred_parsed):
        if verify(gold_item, pred_item, timeout_seconds=None) and not _numbers_differ(
            gold_item, pred_item
        ):
            return True
    return _equal_for_positive_symbols(gold_parsed[0], pred_parsed[0])


def _numbers_differ(gold: object, pred: object) -> bool:
    """True for two numbers that math-verify equated only through its rounding.

    math-verify compares exact values as `(a - b).evalf(chop=True)` at 15 digits, which
    chops away tiny values and cancels large terms: it equates 1/2^99 with 1/2^98 and
    (2^2005+1)/(3*2^2006) with 1/(3*2^2006) (issue #14). rmx re-checks exact pairs at 40
    digits. Decimals it rounds to 6 places, as intended for 0.333333 = 1/3, but below
    1e-6 that equates any two values (2.88e-19 = 1.325e-27), so there rmx requires the
    relative agreement the sympy grader uses. Percentages keep math-verify's 50% = 50.
    """
    import sympy

    try:
        if not all(
            isinstance(value, sympy.Expr)
            and value.is_number
            and not value.has(sympy.UnevaluatedExpr)
            for value in (gold, pred)
        ):
            return False
        scale = max(abs(sympy.N(gold, _EXACT_DIGITS)), abs(sympy.N(pred, _EXACT_DIGITS)))
        diff = abs(sympy.N(gold - pred, _EXACT_DIGITS))
        if gold.has(sympy.Float) or pred.has(sympy.Float):
            return scale < _ROUNDED_AWAY and diff > _SYMPY_REL_TOL * scale
        return diff > _EXACT_REL_DIFF * scale
    except Exception:
        return False


def _equal_for_positive_symbols(gold: object, pred: object) -> bool:
    """Equal once every variable is taken to be positive, as contest answers assume.

    math-verify rejects \\sqrt{1/n} = 1/\\sqrt{n} because it fails for negative n (issue #64).
    Abs is left out: positivity would erase exactly the distinction |x| encodes.
    """
    import sympy

    if not (isinstance(gold, sympy.Expr) and isinstance(pred, sympy.Expr)):
        return False
    if not (gold.free_symbols or pred.free_symbols) or gold.has(sympy.Abs) or pred.has(sympy.Abs):
        return False
    try:
        positive_diff, _ = sympy.posify(gold - pred)
        return sympy.simplify(positive_diff) == 0
    except Exception:
        return False  # Not subtractable (a matrix against a number): math-verify's "no" stands.


# --- sympy check (runs in the worker) -----------------------------------------------------


def _sympy_equal(extracted: str, gold: str) -> bool:
    pred, expected = _normalize(_prepare(extracted)), _normalize(_prepare(gold))
    if not pred or not expected:
        raise _Unparsable
    return _same(pred, expected)


def _normalize(answer: str) -> str:
    """Strip presentation that does not change the value, for plain string comparison."""
    answer = answer.replace("\\$", "")
    answer = _LEFT_RIGHT_RE.sub("", answer)
    answer = _TEXT_WRAPPER_RE.sub(r"\1", answer)
    answer = _LATEX_SPACE_RE.sub(" ", answer)
    answer = answer.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    answer = _DEGREE_RE.sub("", answer)
    answer = answer.replace("\\%", "").replace("%", "")
    answer = _TRAILING_UNIT_RE.sub("", answer.strip())
    answer = _AND_RE.sub(",", answer)
    choice = _CHOICE_RE.fullmatch(answer.strip())
    if choice:
        answer = choice.group(1)
    if answer.count("=") == 1:
        answer = _ASSIGNMENT_RE.sub("", answer)
    answer = answer.replace("{,}", ",").strip()
    if _THOUSANDS_RE.fullmatch(answer):
        answer = answer.replace(",", "")
    answer = _FRAC_SHORTHAND_RE.sub(r"\\frac{\1}{\2}", answer)
    answer = _SQRT_SHORTHAND_RE.sub(r"\\sqrt{\1}", answer)
    answer = re.sub(r"\s+", "", answer).rstrip(".")
    return _BARE_DECIMAL_RE.sub(r"0.\1", answer)


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    group_a, group_b = _split_group(a), _split_group(b)
    if group_a or group_b:
        if not (group_a and group_b) or group_a[0] != group_b[0]:
            return False
        (_, ordered, items_a), (_, _, items_b) = group_a, group_b
        if len(items_a) != len(items_b):
            return False
        if ordered:
            return all(_same(x, y) for x, y in zip(items_a, items_b))
        unmatched = list(items_b)
        for x in items_a:
            twin = next((y for y in unmatched if _same(x, y)), None)
            if twin is None:
                return False
            unmatched.remove(twin)
        return True
    return _same_scalar(a, b)


def _split_group(answer: str) -> tuple[str, bool, list[str]] | None:
    """(bracket kind, ordered?, items) for a tuple, interval, set or bare comma list."""
    if answer.startswith("\\{") and answer.endswith("\\}"):
        return "{}", False, _split_top_level(answer[2:-2])
    if (
        len(answer) >= 2
        and answer[0] in "(["
        and answer[-1] in ")]"
        and _matching_close(answer, 0) == len(answer) - 1
    ):
        # Brackets are part of the kind, so the interval (1,2] never equals (1,2).
        return answer[0] + answer[-1], True, _split_top_level(answer[1:-1])
    # A bare list ("1, 2") is read as a set, as math-verify reads it.
    items = _split_top_level(answer)
    return ("{}", False, items) if len(items) > 1 else None


def _split_top_level(text: str) -> list[str]:
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return items


def _same_scalar(a: str, b: str) -> bool:
    if _INTEGER_RE.fullmatch(a) and _INTEGER_RE.fullmatch(b):
        return int(a) == int(b)
    if _DECIMAL_RE.fullmatch(a) and _DECIMAL_RE.fullmatch(b):
        return math.isclose(float(a), float(b), rel_tol=_SYMPY_REL_TOL)
    import sympy
    from latex2sympy2_extended import latex2sympy

    try:
        # latex2sympy rather than sympy.parse_expr: parse_expr runs eval() on model output.
        x, y = latex2sympy(a, normalization_config=None), latex2sympy(b, normalization_config=None)
    except Exception as exc:
        raise _Unparsable from exc
    if not (isinstance(x, sympy.Expr) and isinstance(y, sympy.Expr)):
        return x == y
    if x.is_number and y.is_number and (x.has(sympy.Float) or y.has(sympy.Float)):
        a, b = complex(x), complex(y)
        return abs(a - b) <= _SYMPY_REL_TOL * max(abs(a), abs(b))
    return sympy.simplify(x - y) == 0


# --- worker process -------------------------------------------------------------------------

_CHECKS = {MATH_VERIFY: _math_verify_equal, SYMPY: _sympy_equal}


class _Worker:
    """One child process that runs checks, killed and replaced when a check overruns.

    A process rather than a thread or math-verify's SIGALRM timeout: signals only work in
    the main thread, and a thread cannot be stopped inside sympy's C big-integer code
    (\\boxed{9^{9^{9}}} computes for minutes, 10^{10^{10}} would exhaust memory).
    A plain subprocess rather than multiprocessing: spawn re-imports the caller's __main__,
    which breaks any script without an `if __name__ == "__main__"` guard.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._replies: queue.Queue[str | None] = queue.Queue()

    def check(self, grader: str, extracted: str, gold: str, timeout_s: float) -> str:
        """The reason ("match", "mismatch", "parse_error"); TimeoutError when it overruns."""
        with self._lock:
            process = self._running()
            try:
                process.stdin.write(json.dumps([grader, extracted, gold]) + "\n")
                process.stdin.flush()
                reply = self._replies.get(timeout=max(0.0, timeout_s))
            except (OSError, queue.Empty):
                reply = None
            if reply is None:  # Overran, or died mid-check (crash, memory): both give up.
                self._stop()
                raise TimeoutError
            return reply

    def _running(self) -> subprocess.Popen[str]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._stop()
        # The parent's sys.path, so the worker imports the engine package the parent did
        # (with a bare -c, an "engine" folder in the cwd would win).
        code = f"import sys\nsys.path[:] = {sys.path!r}\n" + _WORKER_MAIN
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                encoding="utf-8",
            )
        except OSError as exc:
            raise RmxError(f"cannot start the grading worker process: {exc}") from exc
        # Each process gets its own queue, so a late reply from a killed one is never read.
        self._replies = queue.Queue()
        pump_args = (self._process.stdout, self._replies)
        threading.Thread(target=_pump, args=pump_args, name="rmx-grader-pipe", daemon=True).start()
        try:
            ready = self._replies.get(timeout=_WORKER_START_TIMEOUT_S) == _WORKER_READY
        except queue.Empty:
            ready = False
        if not ready:
            self._stop()
            raise RmxError(
                "the grading worker process failed to start; "
                "run `python -c 'import math_verify, engine.core.grading'` to see why"
            )
        return self._process

    def _stop(self) -> None:
        if self._process is None:
            return
        self._process.kill()
        self._process.wait()
        with contextlib.suppress(OSError):  # Unsent bytes to a dead process cannot be flushed.
            self._process.stdin.close()
        self._process = None


def _pump(stream: IO[str], replies: queue.Queue[str | None]) -> None:
    """Move reply lines from the worker's stdout into a queue; None once the stream ends."""
    with stream:
        for line in stream:
            replies.put(line.rstrip("\n"))
    replies.put(None)


def _serve() -> None:
    """Worker main: read [grader, extracted, gold] JSON lines on stdin, write a reason per line."""
    replies = sys.stdout
    # Stray prints from sympy or math-verify must not land in the reply stream.
    sys.stdout = sys.stderr
    warnings.simplefilter("ignore")
    logging.getLogger("math_verify").addHandler(logging.NullHandler())
    for module in _WORKER_IMPORTS:
        importlib.import_module(module)
    print(_WORKER_READY, file=replies, flush=True)
    for line in sys.stdin:
        try:
            grader, extracted, gold = json.loads(line)
            reason = "match" if _CHECKS[grader](extracted, gold) else "mismatch"
        except Exception:
            reason = "parse_error"
        print(reason, file=replies, flush=True)


# One worker per rmx process: starting one costs about a second, a check about a millisecond.
_WORKER = _Worker()
