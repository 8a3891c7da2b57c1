"""Tests that fail when the science is wrong: each kills a single-line mutation listed in tests/test_mutations.md."""

from __future__ import annotations

import pytest

from engine.core.config import ModelSpec, Tau
from engine.core.records import Rollout
from tests.tiny import ANSWERED
from tests.test_train import _spec, make_rollouts


@pytest.fixture(scope="module")
def answering_pair(tiny_llama, tiny_answerer):
    """A random-weight base that answers nothing and a teacher that answers the synthetic task right."""
    from engine.core.models import load_pair

    return load_pair(ModelSpec(str(tiny_llama), dtype="float32"), ModelSpec(str(tiny_answerer), dtype="float32"))


def test_figure2_oracle_reproduces_a_teacher_that_is_actually_right(answering_pair, answered_dataset, tmp_path):
    from engine.core.data import load_problems
    from engine.core.decode import SamplingSpec
    from engine.recipes.experiments import run_figure2

    base, teacher = answering_pair
    problems = load_problems(str(answered_dataset))
    figure = run_figure2(base, teacher, problems, tmp_path / "f2.jsonl", modes=("base", "teacher", "oracle", "random"),
                         sampling=SamplingSpec(max_new_tokens=16), template="raw")
    assert figure.problems == len(ANSWERED)
    assert figure.mode("teacher").pass_at_1 == 1.0 and figure.mode("base").pass_at_1 == 0.0
    assert figure.mode("oracle").pass_at_1 == figure.mode("teacher").pass_at_1 == 1.0
    assert figure.mode("oracle").recovered == 1.0
    assert all(t["oracle"] == t["random"] > 0 for t in figure.touches)


def test_rollouts_and_eval_grade_real_answers_with_the_real_grader(tiny_answerer, answered_dataset, tmp_path):
    from engine.recipes.evaluate import EvalSpec, evaluate
    from engine.recipes.rollouts import RolloutSpec, read_rollouts, sample_rollouts

    model = ModelSpec(str(tiny_answerer), dtype="float32")
    spec = RolloutSpec(dataset=str(answered_dataset), k=3, temperature=0.3, max_new_tokens=16, template="raw")
    result = sample_rollouts(model, spec, tmp_path / "r.jsonl")
    rollouts = read_rollouts(result.path)
    assert result.correct > 0 and any(r.correct and r.answer == ANSWERED_BY_ID[r.problem_id] for r in rollouts)
    scores = evaluate(model, EvalSpec(benchmarks=(str(answered_dataset),), max_new_tokens=16, template="raw"))
    assert [s.score for s in scores.scores] == [1.0]


ANSWERED_BY_ID = {f"answered_{i}": answer for i, answer in enumerate(ANSWERED.values())}


def test_table2_scores_the_base_and_compares_the_teacher(answering_pair):
    from engine.core.data import Problem
    from engine.core.scoring import score
    from engine.recipes.analysis import analyze

    base, teacher = answering_pair
    problems = [Problem(id=f"p{i}", problem=text, answer=a, source="t") for i, (text, a) in enumerate(ANSWERED.items())]
    analysis = analyze(base, teacher, problems, tau=Tau.parse("q0.9"), template="raw", max_new_tokens=8)
    for analyzed in analysis.problems:
        rollout = analyzed.rollout
        completion = [t.id for t in rollout.tokens]
        by_base = score(base, [(list(rollout.prompt_ids), completion)], teacher)[0]
        assert [t.entropy for t in rollout.tokens] == pytest.approx([t.entropy for t in by_base.tokens])
        assert [t.teacher.id for t in rollout.tokens] == [t.teacher.id for t in by_base.tokens]
    # The base decoded greedily: every token is its own argmax (rank 1), which the teacher's view would not give.
    assert all(t.rank == 1 for p in analysis.problems for t in p.rollout.tokens)


def test_the_sweep_keeps_the_tau_with_the_best_holdout_score():
    from engine.recipes.sweep import SweepRow, best_row

    rows = [SweepRow("1.2", 1.2, 0.1, "done", "a", 0.30), SweepRow("1.4", 1.4, 0.1, "done", "b", 0.55),
            SweepRow("1.6", 1.6, 0.1, "done", "c", 0.10), SweepRow("1.8", 1.8, 0.1, "diverged", None, None),
            SweepRow("2.2", 2.2, 0.1, "done", "e", 0.55)]
    assert best_row(rows).tau == "1.4"  # the best, ties keeping the first τ given
    assert best_row(rows[3:4]) is None


def test_the_learning_rate_warms_up_then_decays_linearly_to_zero(tiny_llama, tmp_path):
    from engine.recipes.loop import schedule
    from engine.recipes.train import train

    factor = schedule(total=10, warmup=2)
    assert [factor(s) for s in range(11)] == pytest.approx([0, 0.5, 1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0])
    events: list[dict] = []
    rollouts = make_rollouts(tmp_path / "r.jsonl", problems=2, k=4, completion_len=(6, 10))
    train(ModelSpec(str(tiny_llama), dtype="float32"), _spec(rollouts, grad_accum=1, warmup_ratio=0.25),
          tmp_path / "out", emit=events.append)
    lrs = [e["train/lr"] for e in events if "train/step" in e and "train/lr" in e]
    peak = lrs.index(max(lrs))
    after = lrs[peak:]
    assert len(after) > 3 and all(a > b for a, b in zip(after, after[1:])), lrs
    assert after[-1] < 0.3 * after[0]


def test_advantages_are_standardised_within_each_problem():
    from engine.recipes.train import TrainSpec, _prepare, advantages

    def rollout(pid: str, sample: int, correct: bool) -> Rollout:
        return Rollout(pid, sample, (1, 2, 3), (4, 5, 6), "", "1", None, correct, "eos")

    # Pass rates that differ between problems: 1/4 and 3/4. A global baseline would give other numbers.
    pool = [rollout("a", i, i == 0) for i in range(4)] + [rollout("b", i, i != 0) for i in range(4)]
    chosen, _ = _prepare(pool, TrainSpec("r.jsonl", tau="1.0"), context=512)
    got = {(r.problem_id, r.sample): adv for r, adv in chosen}
    expected_a = advantages([True, False, False, False])
    expected_b = advantages([False, True, True, True])
    assert [got[("a", i)] for i in range(4)] == pytest.approx(expected_a)
    assert [got[("b", i)] for i in range(4)] == pytest.approx(expected_b)
    assert expected_a[0] == pytest.approx(3 ** 0.5, rel=1e-4) and expected_b[0] == pytest.approx(-(3 ** 0.5), rel=1e-4)


def test_the_contrastive_step_raises_correct_and_lowers_wrong_decision_tokens(tiny_llama, tmp_path):
    """A few steps on one fixed batch: Δlog p at decision tokens rises on correct rollouts, falls on wrong ones."""
    from engine.recipes.train import train

    rollouts = make_rollouts(tmp_path / "r.jsonl", problems=1, k=4, completion_len=(10, 14))
    events: list[dict] = []
    result = train(ModelSpec(str(tiny_llama), dtype="float32"),
                   _spec(rollouts, lr=1e-2, warmup_ratio=0.0, epochs=6, grad_accum=4, tau="q0.5"),
                   tmp_path / "out", emit=events.append)
    assert result.state == "done"
    windows = [e for e in events if "train/step" in e and e.get("train/dlogp_pos") is not None]
    last = windows[-1]
    assert last["train/dlogp_pos"] > 0 > last["train/dlogp_neg"], windows
