"""The default sampler: engine.core.decode's batched KV-cache decoding (K samples of a prompt, or many greedy prompts)."""

from __future__ import annotations

from typing import Sequence

from engine.core.backends import Sample, SampleRequest

_FINISH = {"eos": "eos", "stop": "stop", "length": "length", "context": "length"}
"""decode's end reasons onto a rollout's finish; a full context window is a length stop."""
GREEDY_BATCH = 8
"""Greedy single-sample prompts decoded together: no seed to keep apart, so they can share a batch."""


class HFSampler:
    """Sampled requests: the n completions of one prompt as one batch sharing its prefilled cache, each request
    with its own seed. Greedy single-sample requests: up to GREEDY_BATCH prompts as one left-padded batch."""

    name = "hf"
    problems_per_call = 1
    greedy_batch = GREEDY_BATCH

    def __init__(self, spec, temperature: float, top_p: float, max_new_tokens: int, *, loaded=None):
        from engine.core.decode import DecodeSession
        from engine.core.models import load_model

        # `loaded` (an engine.core.models.LoadedModel) is used instead of loading `spec`.
        self.model = loaded if loaded is not None else load_model(spec)
        self.tokenizer = self.model.tokenizer
        self.template_facts = self.model.template_facts
        self.session = DecodeSession(self.model)
        self.settings = dict(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        greedy = [r.greedy and r.n == 1 for r in requests]
        if len(requests) > 1 and all(greedy):
            return [[sample] for sample in self._greedy_batch(requests)]
        return [self._one(request) for request in requests]

    def _collect(self, steps, rows: int) -> list[Sample]:
        ids: list[list[int]] = [[] for _ in range(rows)]
        finish = ["length"] * rows
        for step in steps:
            ids[step.row].append(step.id)
            if step.end is not None:
                finish[step.row] = _FINISH[step.end]
        return [Sample(tuple(row), end) for row, end in zip(ids, finish)]

    def _one(self, request: SampleRequest) -> list[Sample]:
        from engine.core.decode import SamplingSpec

        sampling = SamplingSpec(greedy=request.greedy, seed=request.seed, **self.settings)
        return self._collect(self.session.decode(request.prompt_ids, sampling, n=request.n, top=1), request.n)

    def _greedy_batch(self, requests: Sequence[SampleRequest]) -> list[Sample]:
        from engine.core.decode import SamplingSpec, decode_batch

        sampling = SamplingSpec(greedy=True, **self.settings)
        steps = decode_batch(self.model, [r.prompt_ids for r in requests], sampling, top=1)
        return self._collect(steps, len(requests))
