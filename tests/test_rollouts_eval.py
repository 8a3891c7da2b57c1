"""Rollouts (K graded samples per problem, resumable) and evaluation (pass@1, avg@k, grader disagreements)."""

from __future__ import annotations

import json

import pytest

from engine.core.config import ModelSpec
from engine.core.errors import RmxError


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _spec(**overrides):
    from engine.recipes.rollouts import RolloutSpec

    settings = dict(dataset="smoke", limit=3, k=3, max_new_tokens=6, template="raw")
    settings.update(overrides)
    return RolloutSpec(**settings)


def test_rollouts_write_k_graded_samples_per_problem(tiny_llama, tmp_path):
    from engine.core.records import read_rollouts
    from engine.recipes.rollouts import sample_rollouts

    events: list[dict] = []
    result = sample_rollouts(ModelSpec(str(tiny_llama), dtype="float32"), _spec(template="auto"), tmp_path / "r.jsonl",
                             emit=events.append)
    rollouts = read_rollouts(result.path)
    assert (result.problems, result.samples, len(rollouts)) == (3, 9, 9)
    assert [r.problem_id for r in rollouts] == ["smoke_0"] * 3 + ["smoke_1"] * 3 + ["smoke_2"] * 3
    assert [r.sample for r in rollouts[:3]] == [0, 1, 2]
    first = rollouts[0]
    assert first.gold == "7" and first.finish in ("eos", "length") and 1 <= len(first.completion_ids) <= 6
    assert first.prompt_ids and first.correct is False  # a random-weight model does not do arithmetic
    assert len({r.completion_ids for r in rollouts[:3]}) > 1  # K samples, not one repeated
    assert result.tok_s > 0 and any("rollouts/tok_s" in e for e in events)
    meta = json.loads((tmp_path / "r.jsonl.meta.json").read_text())
    assert meta["spec"]["k"] == 3
    # auto on a tiny Llama base (its tokenizer has a chat template): raw text, recorded with the reason.
    assert meta["template"]["template"] == result.template == "raw" and "llama" in result.template_reason


def test_rollouts_refuse_to_resume_a_file_posed_with_another_template(tiny_llama, tmp_path):
    from engine.recipes.rollouts import sample_rollouts

    model = ModelSpec(str(tiny_llama), dtype="float32")
    out = tmp_path / "chat.jsonl"
    sample_rollouts(model, _spec(template="chat", limit=1), out)
    meta = tmp_path / "chat.jsonl.meta.json"
    # A file from before templates were recorded: its settings said auto, which then meant the chat template.
    old = json.loads(meta.read_text())
    old["spec"]["template"] = "auto"
    del old["template"]
    meta.write_text(json.dumps(old))
    with pytest.raises(RmxError, match="another template than 'raw'"):
        sample_rollouts(model, _spec(template="auto", limit=1), out, resume=True)


def test_rollouts_resume_after_a_cut_redraws_the_same_samples(tiny_llama, tmp_path):
    from engine.recipes.rollouts import sample_rollouts

    model = ModelSpec(str(tiny_llama), dtype="float32")
    whole = tmp_path / "whole.jsonl"
    sample_rollouts(model, _spec(), whole)
    cut = tmp_path / "cut.jsonl"
    lines = whole.read_text().splitlines(keepends=True)
    cut.write_text("".join(lines[:4]) + lines[4][:30])  # problem 1 complete, problem 2 cut mid-line
    (tmp_path / "cut.jsonl.meta.json").write_text((tmp_path / "whole.jsonl.meta.json").read_text())
    with pytest.raises(RmxError, match="already exists: pass --resume"):
        sample_rollouts(model, _spec(), cut)
    events: list[dict] = []
    result = sample_rollouts(model, _spec(), cut, resume=True, emit=events.append)
    assert cut.read_bytes() == whole.read_bytes()
    assert [e["rollouts/problem"] for e in events if "rollouts/problem" in e] == ["smoke_1", "smoke_2"]
    assert result.samples == 9
    with pytest.raises(RmxError, match="other settings"):
        sample_rollouts(model, _spec(k=4), cut, resume=True)


def test_rollouts_grade_with_the_extract_mode_asked_for_and_resume_only_with_it(tiny_llama, tmp_path):
    from engine.core.grading import extract_answer
    from engine.core.records import read_rollouts
    from engine.recipes.rollouts import sample_rollouts

    model = ModelSpec(str(tiny_llama), dtype="float32")
    spec = dict(k=4, max_new_tokens=16)
    strict = read_rollouts(sample_rollouts(model, _spec(**spec), tmp_path / "strict.jsonl").path)
    lenient_out = tmp_path / "lenient.jsonl"
    lenient = read_rollouts(sample_rollouts(model, _spec(extract="lenient", **spec), lenient_out).path)
    assert [r.completion_ids for r in strict] == [r.completion_ids for r in lenient]  # same seeds, same samples
    for mode, rollouts in (("strict", strict), ("lenient", lenient)):
        assert [r.answer for r in rollouts] == [extract_answer(r.text, r.finish, mode)[0] for r in rollouts]
    # The random model's cut-off completions carry stray digits: only lenient takes one as the answer.
    assert sum(r.answer is not None for r in lenient) > sum(r.answer is not None for r in strict)
    meta = json.loads((tmp_path / "lenient.jsonl.meta.json").read_text())
    assert meta["spec"]["extract"] == "lenient"
    with pytest.raises(RmxError, match="was graded with --extract lenient, and this run asks for --extract strict"):
        sample_rollouts(model, _spec(**spec), lenient_out, resume=True)
    # A meta file from before --extract existed holds no key: it was graded strict, and resumes as such.
    old_meta = tmp_path / "strict.jsonl.meta.json"
    old = json.loads(old_meta.read_text())
    del old["spec"]["extract"]
    old_meta.write_text(json.dumps(old))
    assert sample_rollouts(model, _spec(**spec), tmp_path / "strict.jsonl", resume=True).samples == 12
    with pytest.raises(RmxError, match="was graded with --extract strict"):
        sample_rollouts(model, _spec(extract="lenient", **spec), tmp_path / "strict.jsonl", resume=True)


def test_rollout_spec_refuses_bad_settings():
    with pytest.raises(RmxError, match="--k"):
        _spec(k=0)
    with pytest.raises(RmxError, match="--top-p"):
        _spec(top_p=1.5)
    with pytest.raises(RmxError, match="--backend"):
        _spec(backend="tgi")
    with pytest.raises(RmxError, match="--extract must be one of strict, lenient, got 'loose'"):
        _spec(extract="loose")


def test_vllm_backend_without_vllm_is_a_clear_error(monkeypatch):
    import sys

    from engine.core.backends import make_sampler

    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    with pytest.raises(RmxError, match="pip install 'rmx\\[vllm\\]'"):
        make_sampler("vllm", ModelSpec("some/model"), temperature=0.6, top_p=0.95, max_new_tokens=8)


@pytest.mark.gpu
def test_vllm_backend_samples_like_the_hf_one(tiny_llama, tmp_path):
    pytest.importorskip("vllm")
    from engine.recipes.rollouts import sample_rollouts

    result = sample_rollouts(ModelSpec(str(tiny_llama)), _spec(backend="vllm"), tmp_path / "r.jsonl")
    assert result.samples == 9 and result.backend == "vllm"


def test_eval_pass_at_1_and_avg_at_k_with_items_and_tables(tiny_llama, tmp_path):
    from engine.recipes.evaluate import EvalSpec, evaluate, load_result, markdown_table

    spec = EvalSpec(benchmarks=("smoke", "gsm8k"), limit=2, max_new_tokens=5, template="raw", avg_k=3,
                    avg_benchmarks=("gsm8k",))
    result = evaluate(ModelSpec(str(tiny_llama), dtype="float32"), spec, tmp_path / "ev")
    smoke, gsm = result.scores
    assert (smoke.metric, smoke.problems, smoke.samples) == ("pass@1", 2, 2)
    assert (gsm.metric, gsm.problems, gsm.samples) == ("avg@3", 2, 6)
    assert smoke.score == 0.0 and result.grader == "math-verify"
    items = [json.loads(line) for line in (tmp_path / "ev" / "items.jsonl").read_text().splitlines()]
    assert len(items) == 8 and {"correct", "correct_sympy", "extracted", "gold"} <= set(items[0])
    assert load_result(tmp_path / "ev") == result
    assert "| smoke | pass@1 | 0.000 |" in markdown_table(result)


def test_eval_shows_where_the_graders_disagree():
    from engine.recipes.evaluate import BenchmarkScore, Disagreement, EvalResult, markdown_table

    flagged = Disagreement("p7", 0, "\\frac{1}{2}", "0.5", True, False)
    result = EvalResult("m", None, "math-verify", [BenchmarkScore("math500", "pass@1", 0.5, 0.25, 4, 4, [flagged])],
                        1.0, 10)
    table = markdown_table(result)
    assert "Where the graders disagree" in table and "| math500 | p7 | 0 | `\\frac{1}{2}` | `0.5` | True | False |" in table
    assert EvalResult.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_eval_compare_lines_runs_up():
    from engine.recipes.evaluate import BenchmarkScore, EvalResult, compare, comparison_table

    base = EvalResult("base", None, "math-verify", [BenchmarkScore("gsm8k", "pass@1", 0.5, 0.5, 10, 10),
                                                    BenchmarkScore("aime24", "avg@8", 0.1, 0.1, 30, 240)], 1, 1)
    tuned = EvalResult("base+a", "a", "math-verify", [BenchmarkScore("gsm8k", "pass@1", 0.7, 0.7, 10, 10)], 1, 1)
    comparison = compare([("base", base), ("tuned", tuned)])
    assert comparison.rows[0]["delta"] == pytest.approx(0.2)
    assert comparison.rows[1]["scores"] == [0.1, None] and comparison.rows[1]["delta"] is None
    assert "| gsm8k | pass@1 | 0.500 | 0.700 | +0.200 |" in comparison_table(comparison)
    with pytest.raises(RmxError, match="at least two"):
        compare([("base", base)])


def test_eval_cli_json_and_compare(tiny_llama, tmp_path):
    from typer.testing import CliRunner

    from rmx_tui.cli import app

    runner = CliRunner()
    args = ["eval", "--model", str(tiny_llama), "--dtype", "float32", "--benchmarks", "smoke", "--limit", "1",
            "--max-new-tokens", "4", "--template", "raw", "--json"]
    first = runner.invoke(app, args + ["--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout.strip().splitlines()[-1])["scores"][0]["benchmark"] == "smoke"
    runner.invoke(app, args + ["--out", str(tmp_path / "b")])
    compared = runner.invoke(app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b" / "eval.json")])
    assert compared.exit_code == 0 and "| smoke | pass@1 |" in compared.stdout
    missing = runner.invoke(app, ["eval"])
    assert missing.exit_code != 0


def test_greedy_prompts_batched_together_decode_as_they_do_alone(tiny_llama):
    from engine.core.backends import SampleRequest
    from engine.core.backends.hf import HFSampler

    sampler = HFSampler(ModelSpec(str(tiny_llama), dtype="float32"), temperature=0.6, top_p=0.95, max_new_tokens=6)
    requests = [SampleRequest((1, 20 + i, 30, 40 + 2 * i), 1, seed=i, greedy=True) for i in range(3)]
    requests.append(SampleRequest((1, 50, 60), 1, seed=9, greedy=True))  # a shorter prompt: left padding
    together = sampler.sample(requests)
    alone = [sampler.sample([r])[0] for r in requests]
    assert together == alone


def test_an_interrupted_eval_resumes_to_the_uninterrupted_scores(tiny_llama, tmp_path):
    from engine.recipes.evaluate import EvalSpec, evaluate

    model = ModelSpec(str(tiny_llama), dtype="float32")
    spec = EvalSpec(benchmarks=("smoke", "gsm8k"), limit=3, max_new_tokens=5, template="raw", avg_k=2,
                    avg_benchmarks=("gsm8k",))
    whole = evaluate(model, spec, tmp_path / "whole")
    calls = iter(range(100))
    with pytest.raises(RmxError, match="resume it to go on"):
        evaluate(model, spec, tmp_path / "cut", should_stop=lambda: next(calls) >= 1)
    items = tmp_path / "cut" / "items.jsonl"
    kept = items.read_text().splitlines()
    assert 0 < len(kept) < 3 + 3 * 2
    items.write_text("\n".join(kept) + "\n" + kept[-1][: len(kept[-1]) // 2])  # a write cut short by a kill
    with pytest.raises(RmxError, match="already exists: pass --resume"):
        evaluate(model, spec, tmp_path / "cut")
    resumed = evaluate(model, spec, tmp_path / "cut", resume=True)
    assert resumed.scores == whole.scores
    assert items.read_text().splitlines()[: len(kept)] == kept
    assert sorted(items.read_text().splitlines()) == sorted((tmp_path / "whole" / "items.jsonl").read_text().splitlines())
    with pytest.raises(RmxError, match="other settings"):
        evaluate(model, EvalSpec(benchmarks=("smoke",), limit=3, max_new_tokens=5, template="raw"),
                 tmp_path / "cut", resume=True)


def test_eval_grades_with_the_extract_mode_asked_for_and_resumes_only_with_it(tiny_llama, tmp_path):
    from engine.recipes.evaluate import EvalSpec, evaluate

    model = ModelSpec(str(tiny_llama), dtype="float32")
    settings = dict(benchmarks=("smoke",), limit=3, max_new_tokens=16, template="raw")
    evaluate(model, EvalSpec(**settings), tmp_path / "strict")
    evaluate(model, EvalSpec(extract="lenient", **settings), tmp_path / "lenient")
    read = lambda name: [json.loads(line) for line in (tmp_path / name / "items.jsonl").read_text().splitlines()]  # noqa: E731
    strict, lenient = read("strict"), read("lenient")
    assert [i["text"] for i in strict] == [i["text"] for i in lenient]
    assert sum(i["extracted"] is not None for i in lenient) > sum(i["extracted"] is not None for i in strict)
    assert json.loads((tmp_path / "lenient" / "eval.meta.json").read_text())["spec"]["extract"] == "lenient"
    with pytest.raises(RmxError, match="was evaluated with --extract lenient"):
        evaluate(model, EvalSpec(**settings), tmp_path / "lenient", resume=True)
    meta = tmp_path / "strict" / "eval.meta.json"
    old = json.loads(meta.read_text())
    del old["spec"]["extract"]  # from before --extract existed: graded strict
    meta.write_text(json.dumps(old))
    evaluate(model, EvalSpec(**settings), tmp_path / "strict", resume=True)
    with pytest.raises(RmxError, match="--extract"):
        EvalSpec(extract="loose", **settings)
