"""The engine's CUDA paths on tiny models: scoring, decoding, batched lockstep, the paged sampler and training."""

from __future__ import annotations

import pytest

from engine.core.config import ModelSpec

pytestmark = pytest.mark.gpu


def _cuda(folder, **extra) -> ModelSpec:
    return ModelSpec(str(folder), dtype="float32", device="cuda", **extra)


def _prompts():
    return [(1, 20, 30, 40, 41, 42, 43), (1, 50, 60), (7,), tuple(range(5, 40))]


def test_scoring_on_cuda_matches_the_cpu(tiny_llama):
    from engine.core.models import load_model
    from engine.core.scoring import score

    pair = ((1, 20, 30, 40), tuple(range(50, 90)))
    on_gpu = score(load_model(_cuda(tiny_llama)), [pair])[0]
    on_cpu = score(load_model(ModelSpec(str(tiny_llama), dtype="float32", device="cpu")), [pair])[0]
    assert [t.rank for t in on_gpu.tokens] == [t.rank for t in on_cpu.tokens]
    for gpu, cpu in zip(on_gpu.tokens, on_cpu.tokens):
        assert gpu.entropy == pytest.approx(cpu.entropy, abs=1e-3)
        assert gpu.logprob == pytest.approx(cpu.logprob, abs=1e-3)


def test_greedy_decoding_on_cuda_equals_hf_generate(tiny_llama):
    import torch

    from engine.core.decode import DecodeSession, SamplingSpec
    from engine.core.models import load_model

    model = load_model(_cuda(tiny_llama))
    for prompt in _prompts():
        steps = list(DecodeSession(model).decode(prompt, SamplingSpec(greedy=True, max_new_tokens=24)))
        ids = torch.tensor([prompt], device="cuda")
        out = model.module.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=24,
                                    pad_token_id=model.tokenizer.pad_token_id)
        assert [s.id for s in steps] == out[0, len(prompt):].tolist()[: len(steps)]
        assert all(s.entropy >= 0 for s in steps)


def test_batched_oracle_on_cuda_equals_one_problem_at_a_time(tiny_llama, tiny_llama_teacher):
    from engine.core.batched import oracle_lockstep
    from engine.core.decode import DecodeSession, SamplingSpec
    from engine.core.interventions import run_mode
    from engine.core.models import load_pair

    base, teacher = load_pair(_cuda(tiny_llama), _cuda(tiny_llama_teacher))
    sampling = SamplingSpec(greedy=True, max_new_tokens=16)
    batched = oracle_lockstep(base, teacher, _prompts(), sampling, batch_size=3)
    alone = [run_mode(DecodeSession(base, teacher), "oracle", p, sampling)[0] for p in _prompts()]
    assert [[s.id for s in r.steps] for r in batched] == [[s.id for s in r.steps] for r in alone]
    assert [r.touched for r in batched] == [r.touched for r in alone]


def test_paged_sampler_on_cuda_equals_the_step_decoder(tiny_llama):
    from engine.core.backends import SampleRequest, make_sampler
    from engine.core.backends.hf import HFSampler
    from engine.core.backends.paged import PagedSampler

    requests = [SampleRequest(p, 1, seed=i, greedy=True) for i, p in enumerate(_prompts())]
    settings = dict(temperature=0.6, top_p=0.95, max_new_tokens=24)
    paged = PagedSampler(_cuda(tiny_llama), **settings)
    step = HFSampler(_cuda(tiny_llama), **settings)
    assert paged.sample(requests) == [step.sample([r])[0] for r in requests]
    sampled = paged.sample([SampleRequest(_prompts()[0], 4, seed=3)])
    assert len(sampled[0]) == 4 and sampled == paged.sample([SampleRequest(_prompts()[0], 4, seed=3)])
    assert make_sampler("auto", _cuda(tiny_llama), **settings).name == "paged"


def test_training_on_cuda_writes_an_adapter(tiny_llama, tmp_path):
    from engine.recipes.train import train
    from tests.test_train import _spec, make_rollouts

    rollouts = make_rollouts(tmp_path / "r.jsonl")
    result = train(_cuda(tiny_llama), _spec(rollouts), tmp_path / "out")
    assert result.state == "done" and result.step == result.total
    assert (tmp_path / "out").exists() and result.adapter


def test_figure2_on_cuda_runs_base_and_teacher_on_the_paged_sampler_with_the_lockstep_results(
        tiny_llama, tiny_llama_teacher, tmp_path):
    import json

    from engine.core.config import Tau
    from engine.core.data import Problem
    from engine.core.decode import SamplingSpec
    from engine.core.models import load_pair
    from engine.recipes.experiments import run_figure2

    base, teacher = load_pair(_cuda(tiny_llama), _cuda(tiny_llama_teacher))
    problems = [Problem(id=f"p{i}", problem=text, answer="7", source="test")
                for i, text in enumerate(["Sam has 4 pencils and gets 3 more.", "What is 12 + 30?"])]
    lines = {}
    for backend in ("hf", "auto"):  # auto is paged on CUDA
        out = tmp_path / f"{backend}.jsonl"
        run_figure2(base, teacher, problems, out, sampling=SamplingSpec(max_new_tokens=10), tau=Tau.parse("1.0"),
                    template="raw", backend=backend, batch_size=4)
        lines[backend] = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines["auto"] == lines["hf"]
