"""Units under the widgets: the gate's moves and quantiles, token glyphs and wrapping, the branch model, freezing."""

from __future__ import annotations

import ast
import random
from pathlib import Path

from engine.core.config import Tau
from engine.core.data import Problem
from engine.core.decode import Step
from engine.core.records import TopToken

from rmx_tui.gate import Gate, count_above
from rmx_tui.ui_state import Branch, Outcome, Session, Verdict
from rmx_tui.token_layout import TokenLayout, glyphs, quoted
from rmx_tui import freezer as freezing

ROOT = Path(__file__).resolve().parents[2]


def test_engine_never_imports_the_ui():
    offenders = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names
                          if name.split(".")[0] in ("textual", "rmx_tui", "textual_plotext")]
    assert not offenders, offenders


def test_gate_quantiles_match_the_engine_and_keys_move_them():
    rng = random.Random(0)
    ordered = sorted(rng.expovariate(1.0) for _ in range(997))
    for q in (0.01, 0.5, 0.9, 0.97, 0.99):
        assert Gate(Tau(q, quantile=True)).nats(ordered) == Tau(q, quantile=True).resolve(ordered)
    gate = Gate(Tau(0.9, quantile=True))
    assert str(gate.moved(1).tau) == "q0.91" and str(gate.moved(-100).tau) == "q0.01"
    assert gate.moved(100).tau.value == 0.99
    nats = Gate(Tau(1.0))
    assert nats.moved(-20).tau.value == 0.0 and nats.moved(3).tau.value == 1.3
    toggled = nats.toggled(ordered)
    assert toggled.tau.quantile and abs(toggled.tau.value - sum(e <= 1.0 for e in ordered) / len(ordered)) < 0.006
    back = toggled.toggled(ordered)
    assert not back.tau.quantile and abs(back.tau.value - 1.0) < 0.05
    assert count_above(ordered, 1.0) == sum(e > 1.0 for e in ordered)
    assert Gate(Tau(0.9, quantile=True)).nats([]) is None and count_above([], None) == 0


def test_glyphs_keep_whitespace_visible():
    assert glyphs(" the") == [(" the", False, 4)]
    assert glyphs("  ") == [("··", False, 2)]
    assert glyphs("\n\n") == [("⏎", True, 1), ("⏎", True, 1)]
    assert glyphs("a\tb") == [("a⇥b", False, 3)]
    assert glyphs("") == [("∅", False, 1)]
    assert glyphs("\x01") == [("\u2401", False, 1)]
    assert quoted(" x\n") == "' x⏎'"


def _lines(layout: TokenLayout) -> list[list[tuple[int, str, int]]]:
    return [list(layout.fragments(line)) for line in range(layout.line_count)]


def test_layout_wraps_whole_words_and_streams_like_a_full_pass():
    layout = TokenLayout(12)
    layout.add(["Sam", " has", " four", " pen", "cils", ".\n", "Then", " x" * 10])
    text = ["".join(t for _i, t, _c in line) for line in _lines(layout)]
    assert text[:3] == ["Sam has four", " pencils.⏎", "Then"]
    assert all(sum(c for _i, _t, c in line) <= 12 for line in _lines(layout))
    rng = random.Random(1)
    tokens = [rng.choice([" a", "bc", "\n", " defgh", "ij", "  ", "klmnopqrstuvwxyz0123", "中文", "x\ny"])
              for _ in range(2000)]
    for width in (5, 11, 40):
        whole, streamed = TokenLayout(width), TokenLayout(width)
        whole.add(tokens)
        at = 0
        while at < len(tokens):
            step = rng.randint(1, 7)
            streamed.add(tokens[at:at + step])
            at += step
        assert _lines(whole) == _lines(streamed) and list(whole.token_line) == list(streamed.token_line)
        for token, line in enumerate(whole.token_line):
            assert any(index == token for index, _t, _c in whole.fragments(line))
            assert all(index != token for index, _t, _c in whole.fragments(line - 1)) or line == 0
        assert whole.token_at(whole.token_line[50], whole.column_of(50)) == 50


def test_branches_fork_share_prefixes_and_estimates():
    session = Session()
    problem = Problem(id="p", problem="1+1", answer="2", source="test")
    root = session.new_root(problem, (1, 2), "greedy")
    root.extend([Step(pos=i, id=10 + i, text=str(i), logprob=-0.1, entropy=0.5, source="base",
                      top=(TopToken(10 + i, str(i), -0.1), TopToken(99, "z", -3.0))) for i in range(5)])
    assert root.ids == [10, 11, 12, 13, 14] and root.tokens[0].rank == 1
    child = session.new_fork(root, 2, "@2")
    assert child.ids == [10, 11] and child.key == "p#1.1" and child.shared == 2
    assert child.origin(2) is root and child.origin(3) is child
    verdicts = [Verdict("2", True, "match"), Verdict("3", False, "mismatch"), Verdict(None, False, "no_answer")]
    assert verdicts[0].mark == "✓" and verdicts[1].mark == "✗"
    correct, wrong, none, answers = Outcome.tally(verdicts)
    outcome = Outcome(pos=2, token=99, text="z", correct=correct, wrong=wrong, no_answer=none, low=0.1, high=0.9,
                      answers=answers)
    session.record_outcome(child, outcome)
    assert session.outcomes_at(root, 2) == [outcome] and outcome.n == 3 and abs(outcome.p - 1 / 3) < 1e-9
    assert session.entries["p"].pass_rate == ""
    root.verdict = verdicts[0]
    assert session.entries["p"].pass_rate == "1/1"


def test_lines_holding_finds_every_line_a_wanted_token_touches():
    layout = TokenLayout(6)
    layout.add(["ab", " cd", "efghijklmn", " o", "\n", "p"])
    wanted = {2}
    lines = layout.lines_holding(0, layout.line_count, lambda token: token in wanted)
    assert lines == {line for line in range(layout.line_count)
                     if any(index in wanted for index, _t, _c in layout.fragments(line))}
    assert len(lines) == 2  # the long token is cut across two lines
    assert layout.lines_holding(5, 99, lambda token: True) <= set(range(5, layout.line_count))


def test_scored_tokens_are_frozen_once_enough_new_ones_were_shown(monkeypatch):
    frozen = []
    monkeypatch.setattr(freezing.gc, "freeze", lambda: frozen.append(True))
    freezer = freezing.Freezer()
    problem = Problem(id="p", problem="1+1", answer="2", source="test")
    branch = Branch(key="p#1", problem=problem, prompt_ids=(1,), label="greedy")
    branch.tokens = [None] * (freezing.FREEZE_AFTER // 2)
    freezer.shown(branch)
    assert not frozen and freezer.pending == 0, "a streamed branch's records are replaced once it is scored"
    branch.scored = True
    freezer.shown(branch)
    freezer.shown(branch)
    assert not frozen, "the same records are counted once"
    branch.tokens = list(branch.tokens)  # scored again: new records
    freezer.shown(branch)
    assert frozen == [True] and freezer.pending == 0
