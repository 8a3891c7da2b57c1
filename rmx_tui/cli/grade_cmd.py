"""`rmx grade`: grade one completion against a gold answer, and say why the verdict is what it is."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from engine.core.errors import RmxError
from rmx_tui.cli import options as opt


def grade(
    completion_text: Annotated[Optional[str], typer.Option("--completion-text", help="The completion to grade.")] = None,
    completion_file: Annotated[Optional[str], typer.Option("--completion-file", help="Read the completion from a file.")] = None,
    gold: Annotated[Optional[str], typer.Option("--gold", help="The gold answer (LaTeX or plain).")] = None,
    finish: Annotated[str, typer.Option("--finish", help="Why the completion ended: eos (or stop) finished on its own; length (or context) was cut off.")] = "eos",
    extract: Annotated[str, typer.Option("--extract", help="strict (default) or lenient: lenient also takes the last number anywhere.")] = "strict",
    grader: Annotated[str, typer.Option("--grader", help="math-verify (default) or sympy.")] = "math-verify",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds allowed for the equivalence check.")] = 5.0,
    json_output: opt.Json = False,
) -> None:
    """Grade a completion against a gold answer: what was extracted, by which rule, and why it is (in)correct."""
    from pathlib import Path

    from engine.core.grading import EXTRACT_MODES, FINISHES, MATH_VERIFY, SYMPY, check_gold, grade, grade_sympy

    if completion_text is not None and completion_file is not None:
        raise RmxError("give either --completion-text or --completion-file, not both")
    if completion_file is not None:
        try:
            completion_text = Path(completion_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise RmxError(f"cannot read the completion file {completion_file}: {error}") from None
    if completion_text is None or not completion_text.strip():
        raise RmxError("empty completion: give --completion-text or --completion-file with some text to grade")
    if gold is None or not gold.strip():
        raise RmxError("no gold answer: give --gold")
    if finish not in FINISHES:
        raise RmxError(f"unknown --finish '{finish}': use one of {', '.join(FINISHES)}")
    if extract not in EXTRACT_MODES:
        raise RmxError(f"unknown --extract '{extract}': use one of {', '.join(EXTRACT_MODES)}")
    if grader not in (MATH_VERIFY, SYMPY):
        raise RmxError(f"unknown --grader '{grader}': use math-verify or sympy")
    if not timeout > 0:
        raise RmxError(f"--timeout must be > 0 seconds, got {timeout}")
    check_gold(gold, grader, timeout)
    judge = grade if grader == MATH_VERIFY else grade_sympy
    result = judge(completion_text, gold, timeout, finish=finish, extract=extract)
    if json_output:
        opt.print_json({"extracted": result.extracted, "gold": result.gold, "correct": result.correct,
                        "reason": result.reason, "why": result.detail, "method": result.method,
                        "grader": result.grader, "finish": finish, "extract": extract})
        return
    verdict = "correct" if result.correct else "wrong"
    print(f"{verdict} ({result.reason}): {result.detail}")


def register(app: typer.Typer) -> None:
    app.command("grade")(grade)
