"""`rmx generate` and `rmx intervene` through the real entry point on tiny models."""

from __future__ import annotations

import json

import pytest

from tests.test_cli_score import run_cli


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_generate_json_shape_and_forcing(tiny_llama, capsys, monkeypatch):
    base_args = ["generate", "--base", str(tiny_llama), "--dtype", "float32", "--prompt-text", "What is 2+3?",
                 "--max-new-tokens", "6", "--json"]
    code, out, err = run_cli(base_args, capsys, monkeypatch)
    assert code == 0, err
    (plain,) = _lines(out)
    assert set(plain) == {"tokens", "text", "touched", "touched_frac", "answer", "template", "template_reason"}
    assert plain["template"] == "raw" and "llama" in plain["template_reason"]  # a tiny Llama base: raw text
    assert set(plain["tokens"][0]) == {"pos", "id", "text", "source", "entropy"}
    assert plain["touched"] == [] and plain["touched_frac"] == 0.0
    forced_id = (plain["tokens"][2]["id"] + 1) % 300
    code, out, err = run_cli(base_args + ["--force", f"2:{forced_id}"], capsys, monkeypatch)
    assert code == 0, err
    (forced,) = _lines(out)
    assert [t["id"] for t in forced["tokens"][:2]] == [t["id"] for t in plain["tokens"][:2]]
    assert forced["tokens"][2]["id"] == forced_id and forced["tokens"][2]["source"] == "forced"
    assert forced["touched"] == [2]


def test_a_forced_position_past_the_end_is_an_error_unless_eos_is_ignored(tiny_llama, capsys, monkeypatch):
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(tiny_llama).eos_token_id
    args = ["generate", "--base", str(tiny_llama), "--dtype", "float32", "--prompt-text", "What is 2+3?",
            "--max-new-tokens", "6", "--json", "--force", f"0:{eos}", "--force", "3:7"]
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 2 and out == ""
    assert "forced position 3 is past the end: the model stopped at 0; use --ignore-eos" in err
    assert "Traceback" not in err
    code, out, err = run_cli(args + ["--ignore-eos"], capsys, monkeypatch)
    assert code == 0, err
    (result,) = _lines(out)
    assert result["touched"] == [0, 3] and result["tokens"][3]["id"] == 7 and len(result["tokens"]) == 6


def test_generate_oracle_with_teacher_equal_to_base_touches_nothing(tiny_gpt2, capsys, monkeypatch):
    code, out, err = run_cli(["generate", "--base", str(tiny_gpt2), "--teacher", str(tiny_gpt2), "--dtype", "float32",
                              "--prompt-text", "1+1=", "--max-new-tokens", "5", "--intervene", "oracle", "--json"],
                             capsys, monkeypatch)
    assert code == 0, err
    assert _lines(out)[0]["touched"] == []


def test_generate_n_samples_one_line_each(tiny_llama, capsys, monkeypatch):
    code, out, err = run_cli(["generate", "--base", str(tiny_llama), "--prompt-text", "Hi", "--max-new-tokens", "4",
                              "--temperature", "1.0", "--seed", "3", "--n", "3", "--json"], capsys, monkeypatch)
    assert code == 0, err
    assert len(_lines(out)) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--force", "3"], "--force expects POS:ID"),
        (["--force", "a:b"], "--force expects POS:ID"),
        (["--force", "0:999999"], "outside"),
        (["--force", "500:1"], "position"),
        (["--tau", "high", "--intervene", "gated", "--teacher-adapter", "x"], "neither a number"),
        (["--n", "0"], "--n must be"),
        (["--intervene", "oracle"], "needs a teacher"),
        (["--intervene", "sideways"], "unknown intervention"),
        (["--greedy", "--temperature", "0.7"], "contradict"),
        (["--prompt-text", "x " * 600], "context"),
    ],
)
def test_generate_bad_input(args, message, tiny_llama, capsys, monkeypatch):
    argv = ["generate", "--base", str(tiny_llama), "--max-new-tokens", "4"]
    if "--prompt-text" not in args:
        argv += ["--prompt-text", "Hi"]
    code, out, err = run_cli(argv + args, capsys, monkeypatch)
    assert code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_intervene_figure2_resumes(tiny_llama, tiny_llama_adapter, tmp_path, capsys, monkeypatch):
    out_file = tmp_path / "fig2.jsonl"
    argv = ["intervene", "--base", str(tiny_llama), "--teacher-adapter", str(tiny_llama_adapter), "--dtype", "float32",
            "--dataset", "smoke", "--limit", "2", "--max-new-tokens", "6", "--tau", "q0.9", "--out", str(out_file),
            "--json"]
    code, out, err = run_cli(argv, capsys, monkeypatch)
    assert code == 0, err
    figure = json.loads(out)
    assert figure["problems"] == 2
    assert {m["mode"] for m in figure["modes"]} == {"base", "teacher", "oracle", "random", "gated"}
    assert len(out_file.read_text().splitlines()) == 2
    assert [t["id"] for t in figure["touches"]] == [json.loads(line)["id"] for line in out_file.read_text().splitlines()]
    assert all(t["oracle"] == t["random"] for t in figure["touches"])
    code, out, err = run_cli(argv, capsys, monkeypatch)  # everything done: nothing appended
    assert code == 0, err
    assert len(out_file.read_text().splitlines()) == 2
    assert json.loads(out)["modes"] == figure["modes"]


@pytest.mark.parametrize("size", ["0", "1000000000"])
def test_intervene_and_analyze_refuse_a_batch_that_does_not_fit(size, tiny_llama, tiny_llama_adapter, tmp_path, capsys,
                                                                 monkeypatch):
    common = ["--base", str(tiny_llama), "--teacher-adapter", str(tiny_llama_adapter), "--dtype", "float32",
              "--dataset", "smoke", "--limit", "2", "--max-new-tokens", "4", "--batch-size", size]
    for argv in (["intervene", *common, "--out", str(tmp_path / "f.jsonl")], ["analyze", *common]):
        code, out, err = run_cli(argv, capsys, monkeypatch)
        assert code == 2, err
        assert "the largest that fits is" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "f.jsonl").exists() or not (tmp_path / "f.jsonl").read_text()
