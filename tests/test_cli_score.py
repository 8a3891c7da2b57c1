"""`rmx score` end to end through the real entry point: JSON shape, and one-line errors for bad input."""

from __future__ import annotations

import json
import sys

import pytest

from rmx_tui.cli import main


def run_cli(argv, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["rmx", *argv])
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def test_score_json_shape(tiny_llama, tiny_llama_adapter, capsys, monkeypatch):
    code, out, err = run_cli(
        ["score", "--base", str(tiny_llama), "--teacher-adapter", str(tiny_llama_adapter), "--dtype", "float32",
         "--prompt-text", "What is 2+3?", "--completion-text", " 2+3 = 5", "--json", "--tau", "q0.5"],
        capsys, monkeypatch,
    )
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"prompt_tokens", "tokens", "summary", "template", "template_reason"}
    assert data["template"] == "raw"
    assert data["prompt_tokens"] > 0
    token = data["tokens"][0]
    assert set(token) == {"pos", "id", "text", "logprob", "entropy", "rank", "top", "teacher", "class"}
    assert set(token["top"][0]) == {"id", "text", "logprob"} and len(token["top"]) == 5
    assert set(token["teacher"]) == {"id", "rank_in_base", "entropy"}
    assert token["class"] in {"unshifted", "reranked", "shifted"}
    assert data["summary"]["tokens"] == len(data["tokens"])


def test_score_from_dataset_and_files(tiny_gpt2, tmp_path, capsys, monkeypatch):
    completion = tmp_path / "completion.txt"
    completion.write_text("4 + 3 = 7. The answer is \\boxed{7}.")
    code, out, err = run_cli(["score", "--base", str(tiny_gpt2), "--dataset", "smoke", "--index", "0",
                              "--template", "mistral", "--completion-file", str(completion), "--json"],
                             capsys, monkeypatch)
    assert code == 0, err
    data = json.loads(out)
    assert data["tokens"][0]["teacher"] is None and data["tokens"][0]["class"] is None


def test_score_human_output(tiny_llama, capsys, monkeypatch):
    code, out, err = run_cli(["score", "--base", str(tiny_llama), "--prompt-text", "Hi", "--completion-text",
                              " there\n friend"], capsys, monkeypatch)
    assert code == 0, err
    assert "⏎" in out and "entropy" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--base", "/no/such/dir", "--prompt-text", "a", "--completion-text", "b"], "model path not found"),
        (["--prompt-text", "a", "--completion-text", ""], "empty completion"),
        (["--prompt-text", "a", "--completion-text", "b", "--top-k", "0"], "--top-k must be a positive"),
        (["--prompt-text", "a", "--completion-text", "b", "--top-k", "100000"], "larger than the vocabulary"),
        (["--prompt-text", "a", "--completion-text", "b " * 600], "longer than the model's context"),
        (["--dataset", "nope", "--completion-text", "b"], "unknown dataset"),
        (["--prompt-text", "a"], "no completion"),
        (["--prompt-text", "a", "--completion-text", "b", "--tau", "lots"], "neither a number"),
        (["--prompt-text", "a", "--completion-text", "b", "--template", "fancy"], "unknown template"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, message, tiny_llama, capsys, monkeypatch):
    if "--base" not in args:
        args = ["--base", str(tiny_llama), *args]
    code, out, err = run_cli(["score", *args], capsys, monkeypatch)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_malformed_dataset_line_names_file_and_line(tiny_llama, tmp_path, capsys, monkeypatch):
    data = tmp_path / "mine.jsonl"
    data.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": oops}\n')
    code, out, err = run_cli(["score", "--base", str(tiny_llama), "--dataset", str(data), "--index", "0",
                              "--completion-text", "2"], capsys, monkeypatch)
    assert code == 2 and "mine.jsonl:2" in err


def test_teacher_vocab_mismatch_via_cli(tiny_llama, tiny_other_vocab, capsys, monkeypatch):
    code, out, err = run_cli(["score", "--base", str(tiny_llama), "--teacher", str(tiny_other_vocab),
                              "--prompt-text", "a", "--completion-text", "b"], capsys, monkeypatch)
    assert code == 2 and "differs from base vocabulary" in err


def test_datasets_lists_the_bundled_benchmarks(capsys, monkeypatch):
    code, out, err = run_cli(["datasets", "--json"], capsys, monkeypatch)
    assert code == 0, err
    rows = {row["name"]: row["rows"] for row in json.loads(out)}
    assert rows["math500"] == 500 and rows["smoke"] == 20 and rows["aime24"] == 30


def test_extract_and_template_misfits_are_one_line_errors(tiny_llama, tmp_path, capsys, monkeypatch):
    """`--extract` on rollouts/eval maps onto the spec's field; a Qwen template on a Llama is refused with the reason."""
    for argv in (["rollouts", "--dataset", "smoke", "--base", str(tiny_llama), "--out", str(tmp_path / "r.jsonl")],
                 ["eval", "--model", str(tiny_llama), "--out", str(tmp_path / "eval")]):
        code, out, err = run_cli([*argv, "--extract", "loose"], capsys, monkeypatch)
        assert code == 2 and "--extract must be one of strict, lenient, got 'loose'" in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, out, err = run_cli(["score", "--base", str(tiny_llama), "--dataset", "smoke", "--index", "0",
                              "--completion-text", "7", "--template", "qwen3"], capsys, monkeypatch)
    assert code == 2 and "template 'qwen3' is for qwen3 / qwen3_moe models, and this model's model_type is llama" in err
    assert len(err.strip().splitlines()) == 1
