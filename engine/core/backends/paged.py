"""The paged sampler: transformers' continuous batching over a paged KV cache, many prompts per call, same interface."""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Sequence

from engine.core.backends import Sample, SampleRequest
from engine.core.errors import RmxError

NEEDED = "5.13"
"""The first transformers release whose continuous batching takes a ContinuousBatchingConfig with a seed."""
PROBLEMS_PER_CALL = 16
"""Prompts scheduled together: 16 × K=20 rows keep the scheduler full; results are written after each call."""
GREEDY_BATCH = 64
"""Greedy single-sample prompts scheduled together."""
CPU_BATCH_TOKENS = 512
"""Tokens per forward pass off CUDA: transformers would otherwise size the cache from 60% of system RAM."""


def continuous_batching_config_class():
    """transformers' ContinuousBatchingConfig, or a one-line error naming the release that has it."""
    import transformers

    try:
        from transformers.generation.configuration_utils import ContinuousBatchingConfig
        from transformers.generation.continuous_batching import ContinuousMixin
    except ImportError:
        ContinuousBatchingConfig = ContinuousMixin = None
    fields = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)} if ContinuousBatchingConfig else set()
    if ContinuousMixin is None or "seed" not in fields:
        raise RmxError(f"the paged backend needs transformers >= {NEEDED} (continuous batching with a paged KV cache), "
                       f"found {transformers.__version__}: pip install -U 'transformers>={NEEDED}'")
    return ContinuousBatchingConfig


def _accepted(function, **kwargs) -> dict:
    """The keyword arguments `function` takes: transformers' continuous-batching signatures move between releases."""
    names = inspect.signature(function).parameters
    return {key: value for key, value in kwargs.items() if key in names}


class PagedSampler:
    """`loaded` (an engine.core.models.LoadedModel) is used instead of loading `spec`.

    Every request of a call goes to one continuous-batching manager: finished rows leave and waiting ones join at
    each step, the K samples of a prompt fork its prefilled pages, and the cache is paged rather than padded. Samples
    are drawn from one seed per call (the first request's), so a call redraws the same samples; greedy rows equal
    engine.core.decode's token for token."""

    name = "paged"
    problems_per_call = PROBLEMS_PER_CALL
    greedy_batch = GREEDY_BATCH

    def __init__(self, spec, temperature: float, top_p: float, max_new_tokens: int, *, loaded=None):
        from engine.core.models import load_model

        continuous_batching_config_class()
        self.model = loaded if loaded is not None else load_model(spec)
        self.tokenizer = self.model.tokenizer
        self.template_facts = self.model.template_facts
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        from engine.core.decode import check_prompt

        for request in requests:
            check_prompt(self.model, request.prompt_ids)
        # One manager samples one way and forks one number of children: group the requests that agree.
        groups: dict[tuple[bool, int], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault((request.greedy, request.n), []).append(index)
        results: list[list[Sample]] = [[] for _ in requests]
        for (greedy, n), indices in groups.items():
            chosen = [requests[i] for i in indices]
            for index, samples in zip(indices, self._run(chosen, greedy, n)):
                results[index] = samples
        return results

    def _generation_config(self, greedy: bool, n: int):
        from transformers import GenerationConfig

        settings = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=self.temperature,
                                                             top_p=self.top_p, top_k=0)
        return GenerationConfig(max_new_tokens=self.max_new_tokens, num_return_sequences=n,
                                eos_token_id=sorted(self.model.eos_ids) or None,
                                pad_token_id=self.tokenizer.pad_token_id, **settings)

    def _cache_config(self, requests: Sequence[SampleRequest], n: int):
        config_class = continuous_batching_config_class()
        names = {f.name for f in dataclasses.fields(config_class)}
        settings: dict = {"seed": requests[0].seed, "auto_switch_to_flash": False}
        if not self.model.device.startswith("cuda"):
            # Off CUDA the cache is sized to this call's rows, all running at once, not from free memory.
            page = 64
            pages = sum(n * math.ceil((len(r.prompt_ids) + self._limit(r)) / page) for r in requests)
            settings.update(num_blocks=pages + 2, max_batch_tokens=CPU_BATCH_TOKENS,
                            max_requests_per_batch=len(requests) * n, use_cuda_graph=False)
            settings["page_size" if "page_size" in names else "block_size"] = page
        return config_class(**{key: value for key, value in settings.items() if key in names})

    def _limit(self, request: SampleRequest) -> int:
        """New tokens a row may make: max_new_tokens, or what is left of the context window (then it ends at length)."""
        return min(self.max_new_tokens, self.model.context_length - len(request.prompt_ids))

    def _run(self, requests: Sequence[SampleRequest], greedy: bool, n: int) -> list[list[Sample]]:
        import torch

        core = self.model.core
        eos = set(self.model.eos_ids)
        generation = self._generation_config(greedy, n)
        cache = self._cache_config(requests, n)
        ids: list[str] = []
        outputs: dict[str, object] = {}
        expected = len(requests) * n
        with self.model.active(), torch.inference_mode():
            context = core.continuous_batching_context_manager(**_accepted(
                core.continuous_batching_context_manager, generation_config=generation,
                continuous_batching_config=cache, block=True, timeout=30,
                warmup=self.model.device.startswith("cuda")))
            with context as manager:
                for index, request in enumerate(requests):
                    ids.append(f"r{index}")
                    manager.add_request(list(request.prompt_ids), **_accepted(
                        manager.add_request, request_id=ids[-1], max_new_tokens=self._limit(request),
                        eos_token_id=sorted(eos) or -1))
                while len(outputs) < expected:
                    result = manager.get_result(timeout=1)
                    if result is None:
                        if not manager.is_running():
                            raise RmxError("the paged sampler stopped before finishing its requests "
                                           "(transformers' continuous-batching loop ended early)")
                        continue
                    if result.is_finished():
                        if getattr(result, "error", None) is not None:
                            raise RmxError(f"the paged sampler failed on a request: {result.error}")
                        outputs[result.request_id] = result
        samples = []
        for request_id in ids:
            rows = [request_id] + [f"{request_id}__child#{i}" for i in range(n - 1)]
            group = []
            for row in rows:
                tokens = tuple(int(t) for t in outputs[row].generated_tokens)
                group.append(Sample(tokens, "eos" if tokens and tokens[-1] in eos else "length"))
            samples.append(group)
        return samples
