"""Sampling backends for rollouts: one interface, HF (default, via engine.core.decode) and vLLM (optional)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from engine.core.errors import RmxError

BACKENDS = ("hf", "vllm")


@dataclass(frozen=True)
class Sample:
    """One sampled completion."""

    completion_ids: tuple[int, ...]
    finish: str
    """eos, length or stop."""


@dataclass(frozen=True)
class SampleRequest:
    """K samples of one prompt, drawn with their own seed so a resumed run redraws the same ones."""

    prompt_ids: tuple[int, ...]
    n: int
    seed: int
    greedy: bool = False
    """Take the argmax instead of sampling (pass@1 evaluation)."""


class Sampler(Protocol):
    """What `engine.recipes.rollouts` and `engine.recipes.evaluate` ask of a backend."""

    name: str
    tokenizer: object
    """The model's tokenizer: prompts are built and completions decoded with it."""
    problems_per_call: int
    """How many sampled requests one `sample` call takes: results are written (and resumable) per call."""
    greedy_batch: int
    """How many greedy single-sample requests one `sample` call takes."""
    template_facts: object
    """What `--template auto` reads off the model (an engine.core.prompts.ModelFacts)."""

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]: ...


def make_sampler(name: str, spec, *, temperature: float, top_p: float, max_new_tokens: int) -> Sampler:
    """Load `spec` (an `engine.core.config.ModelSpec`, adapter included) into the sampler of backend `name`."""
    settings = dict(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    if name == "hf":
        from engine.core.backends.hf import HFSampler

        return HFSampler(spec, **settings)
    if name == "vllm":
        from engine.core.backends.vllm import VLLMSampler

        return VLLMSampler(spec, **settings)
    raise RmxError(f"unknown backend '{name}': use one of {', '.join(BACKENDS)}")
