"""The paged sampler (transformers' continuous batching): greedy equal to the step decoder, seeded samples, errors."""

from __future__ import annotations

import pytest

from engine.core.config import ModelSpec
from engine.core.errors import RmxError

SETTINGS = dict(temperature=0.6, top_p=0.95)


def _step_decoder(spec: ModelSpec, requests, max_new_tokens: int):
    """Each request decoded alone by engine.core.decode, as (ids, finish) pairs."""
    from engine.core.backends.hf import HFSampler

    sampler = HFSampler(spec, max_new_tokens=max_new_tokens, **SETTINGS)
    return [sampler.sample([request])[0] for request in requests]


def _requests(greedy: bool = True, n: int = 1):
    from engine.core.backends import SampleRequest

    # Different lengths (a one-token prompt among them), so rows join, run and leave the batch at different steps.
    prompts = [(1, 20, 30, 40, 41, 42, 43), (1, 50, 60), (7,), tuple(range(5, 40))]
    return [SampleRequest(p, n, seed=index, greedy=greedy) for index, p in enumerate(prompts)]


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_greedy_paged_rows_equal_the_step_decoder_token_for_token(arch, request):
    from engine.core.backends.paged import PagedSampler

    spec = ModelSpec(str(request.getfixturevalue(arch)), dtype="float32")
    requests = _requests()
    paged = PagedSampler(spec, max_new_tokens=24, **SETTINGS).sample(requests)
    assert paged == _step_decoder(spec, requests, 24)
    assert all(len(samples) == 1 for samples in paged)


def test_greedy_paged_runs_the_adapter(tiny_llama, tiny_llama_adapter):
    from engine.core.backends.paged import PagedSampler

    spec = ModelSpec(str(tiny_llama), adapter=str(tiny_llama_adapter), dtype="float32")
    requests = _requests()[:2]
    paged = PagedSampler(spec, max_new_tokens=12, **SETTINGS).sample(requests)
    assert paged == _step_decoder(spec, requests, 12)
    bare = PagedSampler(ModelSpec(str(tiny_llama), dtype="float32"), max_new_tokens=12, **SETTINGS).sample(requests)
    assert bare != paged


def test_a_row_at_the_context_limit_ends_alone_at_length(tiny_llama):
    from engine.core.backends import SampleRequest
    from engine.core.backends.paged import PagedSampler

    spec = ModelSpec(str(tiny_llama), dtype="float32")
    sampler = PagedSampler(spec, max_new_tokens=20, **SETTINGS)
    context = sampler.model.context_length
    near = SampleRequest(tuple([5] * (context - 4)), 1, seed=0, greedy=True)
    short = SampleRequest((1, 50, 60), 1, seed=0, greedy=True)
    (long_row,), (short_row,) = sampler.sample([near, short])
    assert long_row.finish == "length" and len(long_row.completion_ids) == 4
    assert [long_row, short_row] == [s[0] for s in _step_decoder(spec, [near, short], 20)]


def test_sampled_rows_are_k_per_prompt_and_redrawn_from_the_seed(tiny_llama):
    from dataclasses import replace

    from engine.core.backends.paged import PagedSampler

    sampler = PagedSampler(ModelSpec(str(tiny_llama), dtype="float32"), max_new_tokens=10, **SETTINGS)
    requests = _requests(greedy=False, n=3)[:2]
    first = sampler.sample(requests)
    assert [len(samples) for samples in first] == [3, 3]
    assert all(s.finish in ("eos", "length") and 0 < len(s.completion_ids) <= 10 for g in first for s in g)
    assert all(s.finish == "length" or s.completion_ids[-1] in sampler.model.eos_ids for g in first for s in g)
    assert sampler.sample(requests) == first
    reseeded = [replace(r, seed=r.seed + 100) for r in requests]
    assert sampler.sample(reseeded) != first


def test_paged_on_an_old_transformers_names_the_version_needed(monkeypatch):
    import transformers.generation.configuration_utils as configuration

    from engine.core.backends import make_sampler

    monkeypatch.delattr(configuration, "ContinuousBatchingConfig")
    with pytest.raises(RmxError, match=r"needs transformers >= 5\.13 .*found"):
        make_sampler("paged", ModelSpec("some/model"), max_new_tokens=8, **SETTINGS)


def test_rollouts_on_the_paged_backend_and_auto_on_cpu(tiny_llama, tmp_path):
    from engine.recipes.rollouts import RolloutSpec, read_rollouts, sample_rollouts

    spec = dict(dataset="smoke", limit=3, k=2, max_new_tokens=6, template="raw")
    model = ModelSpec(str(tiny_llama), dtype="float32")
    paged = sample_rollouts(model, RolloutSpec(backend="paged", **spec), tmp_path / "p.jsonl")
    assert (paged.backend, paged.problems, paged.samples) == ("paged", 3, 6)
    assert [r.sample for r in read_rollouts(paged.path)] == [0, 1] * 3
    auto = sample_rollouts(model, RolloutSpec(**spec), tmp_path / "a.jsonl")
    assert auto.backend == "hf"  # no CUDA here: auto is the step decoder


def test_calls_keep_their_slots_across_a_resume():
    from types import SimpleNamespace

    from engine.recipes.rollouts import in_calls

    problems = [SimpleNamespace(id=str(i)) for i in range(7)]
    assert [[p.id for p in c] for c in in_calls(problems, set(), 3)] == [["0", "1", "2"], ["3", "4", "5"], ["6"]]
    assert [[p.id for p in c] for c in in_calls(problems, {"0", "1", "2", "3"}, 3)] == [["4", "5"], ["6"]]


@pytest.mark.parametrize("teacher_kind", ["separate", "adapter"])
def test_figure2_with_paged_base_and_teacher_files_the_lockstep_results(teacher_kind, tiny_llama, tiny_llama_teacher,
                                                                        tiny_llama_adapter, tmp_path):
    import json

    from engine.core.config import Tau
    from engine.core.data import Problem
    from engine.core.decode import SamplingSpec
    from engine.core.models import load_pair
    from engine.recipes.experiments import run_figure2

    teacher_spec = (ModelSpec(str(tiny_llama_teacher), dtype="float32") if teacher_kind == "separate"
                    else ModelSpec(str(tiny_llama), adapter=str(tiny_llama_adapter), dtype="float32"))
    base, teacher = load_pair(ModelSpec(str(tiny_llama), dtype="float32"), teacher_spec)
    problems = [Problem(id=f"p{i}", problem=text, answer="7", source="test")
                for i, text in enumerate(["Sam has 4 pencils and gets 3 more.", "What is 12 + 30?", "x = 4"])]
    sampling = SamplingSpec(max_new_tokens=10)
    figures, lines = {}, {}
    for backend in ("hf", "paged"):
        out = tmp_path / f"{backend}.jsonl"
        figures[backend] = run_figure2(base, teacher, problems, out, sampling=sampling, tau=Tau.parse("q0.7"),
                                       template="raw", backend=backend, batch_size=4)
        lines[backend] = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in lines["paged"]] == ["p0", "p1", "p2"]
    for lockstep, paged in zip(lines["hf"], lines["paged"]):
        for mode, want in lockstep["modes"].items():
            got = paged["modes"][mode]
            assert {k: v for k, v in got.items() if k != "tau"} == {k: v for k, v in want.items() if k != "tau"}
            assert got["tau"] == pytest.approx(want["tau"], rel=1e-5) if want["tau"] is not None else got["tau"] is None
    assert [m.pass_at_1 for m in figures["paged"].modes] == [m.pass_at_1 for m in figures["hf"].modes]
