"""`rmx overlap`: a teacher's and an adapter's argmax edits on the base's greedy rollouts, compared."""

from __future__ import annotations

import json

import pytest

from engine.core.config import ModelSpec, ScoreSpec
from tests.test_cli_score import run_cli


def _overlap(args, capsys, monkeypatch):
    return run_cli(["overlap", "--dtype", "float32", "--dataset", "smoke", "--limit", "3", "--max-new-tokens", "12",
                    "--template", "raw", *args], capsys, monkeypatch)


def test_an_adapter_compared_with_itself_edits_the_same_positions_the_same_way(tiny_llama, tiny_llama_adapter,
                                                                                capsys, monkeypatch):
    code, out, err = _overlap(["--base", str(tiny_llama), "--teacher-adapter", str(tiny_llama_adapter),
                               "--adapter", str(tiny_llama_adapter), "--json"], capsys, monkeypatch)
    assert code == 0, err
    data = json.loads(out)
    assert data["teacher_edits"] == data["adapter_edits"] == data["both"] >= 1
    assert data["jaccard"] == 1.0 and data["agreement"] == 1.0
    assert {edit["kind"] for edit in data["edits"]} == {"both"}


@pytest.fixture(scope="module")
def weak_adapters(tiny_root, tiny_llama):
    """Two small random adapters: each changes some of the base's argmaxes, some of them the same ones."""
    from tests.tiny import build_adapter

    return (build_adapter(tiny_root / "weak-1", tiny_llama, seed=1, scale=0.05),
            build_adapter(tiny_root / "weak-2", tiny_llama, seed=2, scale=0.05))


def test_counts_match_each_models_own_scoring(tiny_llama, weak_adapters, capsys, monkeypatch):
    from engine.core.data import load_problems
    from engine.core.models import load_pair, load_views
    from engine.core.prompts import prompt_ids
    from engine.core.scoring import score
    from engine.recipes.analysis import greedy_rollouts

    first, second = weak_adapters
    code, out, err = _overlap(["--base", str(tiny_llama), "--teacher-adapter", str(first),
                               "--adapter", str(second), "--tau", "q0.5", "--json"], capsys, monkeypatch)
    assert code == 0, err
    data = json.loads(out)
    # The same questions asked one model at a time, through the scorer's own classes.
    base_spec = ModelSpec(str(tiny_llama), dtype="float32")
    picks: dict[str, dict] = {"teacher": {}, "adapter": {}}
    tokens = 0
    for name, adapter in (("teacher", first), ("adapter", second)):
        base, other = load_pair(base_spec, ModelSpec(str(tiny_llama), adapter=str(adapter), dtype="float32"))
        tokens = 0
        for problem in load_problems("smoke", limit=3):
            prompt = prompt_ids(base.tokenizer, problem.problem, "raw")
            [(_, completion, _)] = list(greedy_rollouts(base, [prompt], 12, 1))
            tokens += len(completion)
            for token in score(base, [(prompt, completion)], other, ScoreSpec(top_k=1))[0].tokens:
                if token.teacher.id != token.id:  # on a greedy rollout, the base's own pick is its argmax
                    assert token.cls != "unshifted"  # fp32 tiny models have no ties to tell these apart
                    picks[name][(problem.id, token.pos)] = token.teacher.id
    teacher, adapter = picks["teacher"], picks["adapter"]
    both = set(teacher) & set(adapter)
    assert 0 < len(both) < min(len(teacher), len(adapter))  # the fixture really gives partial overlap
    assert data["tokens"] == tokens
    assert (data["teacher_edits"], data["adapter_edits"], data["both"]) == (len(teacher), len(adapter), len(both))
    assert data["jaccard"] == pytest.approx(len(both) / len(set(teacher) | set(adapter)))
    assert data["same_token"] == sum(teacher[key] == adapter[key] for key in both)
    profiles = data["profiles"]
    assert profiles["all"]["count"] == tokens
    assert profiles["teacher_only"]["count"] == len(set(teacher) - both)
    assert profiles["adapter_only"]["count"] == len(set(adapter) - both)
    gated_edits = sum(e["entropy"] > data["tau"] for e in data["edits"] if e["kind"] in ("teacher", "both"))
    assert profiles["teacher"]["gated"] == gated_edits
    views = load_views(base_spec, {"teacher": ModelSpec(str(tiny_llama), adapter=str(first), dtype="float32"),
                                   "adapter": ModelSpec(str(tiny_llama), adapter=str(second), dtype="float32")})
    assert views["teacher"].module is views["adapter"].module is views["base"].module  # one copy of the weights


def test_the_table_names_every_set(tiny_llama, tiny_llama_teacher, tiny_llama_adapter, capsys, monkeypatch):
    code, out, err = _overlap(["--base", str(tiny_llama), "--teacher", str(tiny_llama_teacher),
                               "--adapter", str(tiny_llama_adapter)], capsys, monkeypatch)
    assert code == 0, err
    assert "Jaccard" in out and "same new token" in out
    for name in ("all", "teacher_only", "adapter_only", "both", "covered"):
        assert name in out


def test_an_adapter_for_another_base_is_one_line_exit_2(tiny_llama, tiny_llama_adapter, tiny_gpt2_adapter, capsys,
                                                         monkeypatch):
    code, out, err = _overlap(["--base", str(tiny_llama), "--teacher-adapter", str(tiny_llama_adapter),
                               "--adapter", str(tiny_gpt2_adapter)], capsys, monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not for base" in err


def test_a_teacher_with_another_vocabulary_is_one_line_exit_2(tiny_llama, tiny_other_vocab, tiny_llama_adapter,
                                                               capsys, monkeypatch):
    code, out, err = _overlap(["--base", str(tiny_llama), "--teacher", str(tiny_other_vocab),
                               "--adapter", str(tiny_llama_adapter)], capsys, monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "vocabulary" in err


def test_overlap_needs_a_teacher(tiny_llama, tiny_llama_adapter, capsys, monkeypatch):
    code, out, err = _overlap(["--base", str(tiny_llama), "--adapter", str(tiny_llama_adapter)], capsys, monkeypatch)
    assert code == 2 and "teacher" in err
