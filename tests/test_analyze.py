"""`rmx analyze`: Table 2 over a benchmark on tiny models, through the real entry point."""

from __future__ import annotations

import json

import pytest

from tests.test_cli_score import run_cli


def test_analyze_json_is_table2_over_greedy_rollouts(tiny_llama, tiny_llama_adapter, capsys, monkeypatch):
    code, out, err = run_cli(
        ["analyze", "--base", str(tiny_llama), "--teacher-adapter", str(tiny_llama_adapter), "--dtype", "float32",
         "--dataset", "smoke", "--limit", "3", "--max-new-tokens", "12", "--tau", "q0.8", "--json"],
        capsys, monkeypatch,
    )
    assert code == 0, err
    data = json.loads(out)
    summary = data["summary"]
    assert summary["sequences"] == len(data["problems"]) == 3
    assert summary["tokens"] == sum(p["tokens"] for p in data["problems"])
    assert summary["reranked_pct"] + summary["shifted_pct"] + summary["unshifted_pct"] == pytest.approx(100.0)
    assert 0 <= data["pass@1"] <= 1
    assert data["gate"]["gated"] >= 1


def test_analyze_teacher_equal_to_base_touches_nothing(tiny_gpt2, capsys, monkeypatch):
    code, out, err = run_cli(
        ["analyze", "--base", str(tiny_gpt2), "--teacher", str(tiny_gpt2), "--dtype", "float32",
         "--dataset", "smoke", "--limit", "2", "--max-new-tokens", "8", "--json"],
        capsys, monkeypatch,
    )
    assert code == 0, err
    summary = json.loads(out)["summary"]
    assert summary["unshifted_pct"] == 100.0 and summary["reranked_pct"] == 0.0


def test_analyze_prints_a_table(tiny_llama, tiny_llama_adapter, capsys, monkeypatch):
    code, out, err = run_cli(
        ["analyze", "--base", str(tiny_llama), "--teacher-adapter", str(tiny_llama_adapter), "--dataset", "smoke",
         "--limit", "1", "--max-new-tokens", "6"], capsys, monkeypatch,
    )
    assert code == 0, err
    assert "Table 2" in out and "reranked" in out and "precision" in out


def test_analyze_needs_a_teacher(tiny_llama, capsys, monkeypatch):
    code, out, err = run_cli(["analyze", "--base", str(tiny_llama)], capsys, monkeypatch)
    assert code == 2 and "teacher" in err
