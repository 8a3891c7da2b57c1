"""The training pool: mixed-success selection, closest-to-0.5, the length trim, base entropies and stats."""

from __future__ import annotations

import json

import pytest

from engine.core.config import ModelSpec
from engine.core.errors import RmxError
from engine.core.records import Rollout


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rollouts(pattern: dict[str, list[tuple[bool, int]]]) -> list[Rollout]:
    """Rollouts from {problem: [(correct, completion length), …]}."""
    return [Rollout(pid, i, (1, 2, 3), tuple(range(5, 5 + length)), "", "1", None, ok, "eos")
            for pid, samples in pattern.items() for i, (ok, length) in enumerate(samples)]


PATTERN = {
    "easy": [(True, 10)] * 4,                                          # pass rate 1: no signal
    "hard": [(False, 30)] * 4,                                         # pass rate 0: no signal
    "quarter": [(True, 10), (False, 40), (False, 50), (False, 60)],    # 0.25
    "half": [(True, 12), (True, 14), (False, 45), (False, 55)],        # 0.5
    "most": [(True, 8), (True, 9), (True, 11), (False, 70)],           # 0.75
}


def test_pool_keeps_only_mixed_success_and_the_closest_to_one_half():
    from engine.recipes.pool import PoolSpec, select_pool

    pool = select_pool(_rollouts(PATTERN), PoolSpec("r.jsonl"))
    assert [r.problem_id for r in pool][::4] == ["quarter", "half", "most"]
    two = select_pool(_rollouts(PATTERN), PoolSpec("r.jsonl", size=2))
    assert {r.problem_id for r in two} == {"half", "quarter"}  # 0.5 first; 0.25 and 0.75 tie, file order wins


def test_pool_without_mixed_problems_names_the_problem():
    from engine.recipes.pool import PoolSpec, select_pool

    rollouts = _rollouts({"easy": PATTERN["easy"], "hard": PATTERN["hard"]})
    with pytest.raises(RmxError, match="no training signal: 0 of 2 problems have mixed success at K=4"):
        select_pool(rollouts, PoolSpec("r.jsonl"))


def test_length_trim_works_within_each_problem_and_drops_problems_it_unmixes():
    from engine.recipes.pool import PoolSpec, pool_stats, select_pool

    rollouts = _rollouts(PATTERN)
    trimmed = select_pool(rollouts, PoolSpec("r.jsonl", keep_shortest=0.5))
    # Each problem keeps its own 2 shortest of 4: only "quarter" keeps a wrong one (its wrong ones are all long
    # elsewhere), so "half" and "most" leave the pool instead of silently keeping only right rollouts.
    assert [(r.problem_id, len(r.completion_ids)) for r in trimmed] == [("quarter", 10), ("quarter", 40)]
    stats = pool_stats(rollouts, PoolSpec("r.jsonl", keep_shortest=0.5))
    assert (stats.trim_removed_problems, stats.trim_removed_rollouts, stats.rollouts) == (2, 10, 2)
    assert stats.lengths_wrong.count == 6 and stats.trimmed_wrong.count == 1  # every wrong rollout is long
    # A trim across all problems at once would keep every 10–14-token rollout and no wrong one at all.
    mild = select_pool(rollouts, PoolSpec("r.jsonl", keep_shortest=0.75))
    assert {r.problem_id for r in mild} == {"quarter", "half"}
    assert all(sum(r.problem_id == pid for r in mild) == 3 for pid in ("quarter", "half"))
    with pytest.raises(RmxError, match="keep-shortest"):
        PoolSpec("r.jsonl", keep_shortest=0.0)


def test_a_trim_that_unmixes_every_problem_is_refused_but_still_shown():
    from engine.recipes.pool import PoolSpec, pool_stats, select_pool

    rollouts = _rollouts({"half": PATTERN["half"], "most": PATTERN["most"]})
    with pytest.raises(RmxError, match="leaves none of the 2 pool problems"):
        select_pool(rollouts, PoolSpec("r.jsonl", keep_shortest=0.5))
    stats = pool_stats(rollouts, PoolSpec("r.jsonl", keep_shortest=0.5))
    assert (stats.trim_removed_problems, stats.rollouts) == (2, 0)


def test_pool_stats_histogram_and_decision_rates():
    from engine.recipes.pool import PoolSpec, pool_stats, select_pool

    rollouts = _rollouts(PATTERN)
    stats = pool_stats(rollouts, PoolSpec("r.jsonl"), taus=("1.0", "q0.5"))
    assert stats.pass_rates == [("0/4", 1), ("1/4", 1), ("2/4", 1), ("3/4", 1), ("4/4", 1)]
    assert (stats.problems, stats.mixed, stats.all_correct, stats.all_wrong, stats.selected) == (5, 3, 1, 1, 3)
    assert stats.decision is None
    pool = select_pool(rollouts, PoolSpec("r.jsonl"))
    entropies = [[2.0 if r.correct else 0.5] * len(r.completion_ids) for r in pool]
    stats = pool_stats(rollouts, PoolSpec("r.jsonl"), entropies, taus=("1.0", "q0.5"))
    fixed = stats.decision[0]
    correct_tokens = sum(len(r.completion_ids) for r in pool if r.correct)
    total_tokens = sum(len(r.completion_ids) for r in pool)
    assert (fixed.tau, fixed.correct, fixed.wrong) == ("1", 1.0, 0.0)
    assert fixed.fraction == pytest.approx(correct_tokens / total_tokens)
    assert stats.decision[1].tau == "q0.5"


def test_write_pool_writes_jsonl_and_stats(tmp_path):
    from engine.recipes.pool import PoolSpec, write_pool
    from engine.core.records import read_rollouts

    source = tmp_path / "rollouts.jsonl"
    source.write_text("".join(json.dumps(r.to_json()) + "\n" for r in _rollouts(PATTERN)))
    result = write_pool(PoolSpec(str(source), size=1), tmp_path / "pool.jsonl")
    assert [r.problem_id for r in read_rollouts(result.path)] == ["half"] * 4
    stats = json.loads((tmp_path / "pool_stats.json").read_text())
    assert stats["selected"] == 1 and stats["mixed"] == 3


def test_base_entropies_match_engine_scoring_and_resume_from_a_cut_cache(tiny_llama, tmp_path):
    from engine.core.models import load_model
    from engine.recipes.pool import base_entropies
    from engine.core.scoring import score

    model = load_model(ModelSpec(str(tiny_llama), dtype="float32"))
    rollouts = [Rollout("p", i, (5, 6, 7, 8), tuple(range(20 + i, 40 + 2 * i)), "", "1", None, i % 2 == 0, "eos")
                for i in range(3)]
    cache = tmp_path / "entropies.jsonl"
    got = base_entropies(model, rollouts, chunk_elements=400, cache=cache)  # ~1 position per chunk
    reference = score(model, [(r.prompt_ids, r.completion_ids) for r in rollouts])
    for mine, scored in zip(got, reference):
        assert mine == pytest.approx([t.entropy for t in scored.tokens], abs=1e-5)
    lines = cache.read_text().splitlines()
    assert len(lines) == 4  # header + one line per rollout
    cache.write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])  # killed in the middle of the second line
    calls = []
    again = base_entropies(model, rollouts, chunk_elements=400, cache=cache,
                           progress=lambda done, total: calls.append(done))
    assert again == got and calls == [1, 2, 3]
    readable = []
    for line in cache.read_text().splitlines():
        try:
            readable.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the cut line stays, unreadable and ignored
    assert len(readable) == 4  # the header and a whole record for each rollout


def test_pool_stats_survive_a_json_round_trip():
    from engine.recipes.pool import PoolSpec, PoolStats, pool_stats, select_pool

    rollouts = _rollouts(PATTERN)
    plain = pool_stats(rollouts, PoolSpec("r.jsonl", keep_shortest=0.5))
    pool = select_pool(rollouts, PoolSpec("r.jsonl"))
    scored = pool_stats(rollouts, PoolSpec("r.jsonl"), [[0.25 * (i % 9) for i in range(len(r.completion_ids))]
                                                        for r in pool], taus=("1.0", "q0.97"))
    for stats in (plain, scored):
        assert PoolStats.from_json(json.loads(json.dumps(stats.to_json()))) == stats


def test_workbench_pool_stats_match_the_cli_and_score_under_the_loaded_base(tiny_llama, tmp_path):
    from typer.testing import CliRunner

    from engine.core.models import load_model
    from engine.recipes.pool import PoolSpec, PoolStats, base_entropies, entropy_cache, pool_stats, select_pool
    from engine.core.records import read_rollouts
    from engine.service.workbench import Workbench
    from rmx_tui.cli import app as cli_app
    from tests.test_train import make_rollouts

    path = str(make_rollouts(tmp_path / "rollouts.jsonl", problems=3, k=2, completion_len=(6, 12)))
    bench = Workbench()
    plain = bench.pool_stats(path, keep_shortest=0.5)
    shown = CliRunner().invoke(cli_app, ["pool", "show", "--rollouts", path, "--keep-shortest", "0.5", "--json"])
    assert shown.exit_code == 0, shown.output
    assert PoolStats.from_json(json.loads(shown.output)) == plain and plain.decision is None
    with pytest.raises(RmxError, match="no model is loaded"):
        bench.pool_stats(path, with_base=True)
    with pytest.raises(RmxError, match="rollouts file not found"):
        bench.pool_stats(str(tmp_path / "missing.jsonl"))
    with pytest.raises(RmxError, match="neither a number"):
        bench.pool_stats(path, taus=("1.0", "high"))

    spec = ModelSpec(str(tiny_llama), dtype="float32", device="cpu")
    bench.load(spec)
    scored = bench.pool_stats(path, taus=("1.0", "q0.9"), with_base=True)
    rollouts = read_rollouts(path)
    entropies = base_entropies(load_model(spec), select_pool(rollouts, PoolSpec(path)))
    assert scored == pool_stats(rollouts, PoolSpec(path), entropies, ("1.0", "q0.9"))
    assert [row.tau for row in scored.decision] == ["1", "q0.9"]
    assert entropy_cache(path) == tmp_path / "rollouts.entropies.jsonl" and entropy_cache(path).is_file()


def test_an_adapter_gets_its_own_entropy_cache(tiny_llama, tiny_llama_adapter, tmp_path):
    from engine.core.models import load_model
    from engine.recipes.pool import base_entropies

    rollouts = [Rollout("p", 0, (5, 6, 7), tuple(range(20, 30)), "", "1", None, True, "eos")]
    cache = tmp_path / "entropies.jsonl"
    bare = base_entropies(load_model(ModelSpec(str(tiny_llama), dtype="float32")), rollouts, cache=cache)
    tuned_model = load_model(ModelSpec(str(tiny_llama), adapter=str(tiny_llama_adapter), dtype="float32"))
    tuned = base_entropies(tuned_model, rollouts, cache=cache)
    assert tuned != bare  # scored again, not read from the bare base's cache
    assert base_entropies(tuned_model, rollouts, cache=cache) == tuned
