"""Sampling backends for rollouts and eval: one interface; the step decoder (hf), paged continuous batching, vLLM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from engine.core.errors import RmxError

BACKENDS = ("auto", "hf", "paged", "vllm")
"""auto: paged on CUDA (where transformers has it), hf elsewhere."""


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
    return sampler_class(resolve_backend(name, spec))(spec, temperature=temperature, top_p=top_p,
                                                      max_new_tokens=max_new_tokens)


def sampler_class(name: str) -> type:
    """The sampler of a resolved backend name, not loaded: its call sizes are class attributes, so a run can plan
    its calls (and a sharded run its shard bounds) before any model loads."""
    if name == "paged":
        from engine.core.backends.paged import PagedSampler

        return PagedSampler
    if name == "hf":
        from engine.core.backends.hf import HFSampler

        return HFSampler
    if name == "vllm":
        from engine.core.backends.vllm import VLLMSampler

        return VLLMSampler
    raise RmxError(f"unknown backend '{name}': use one of {', '.join(BACKENDS)}")


def resolve_backend(name: str, spec) -> str:
    """The backend `auto` stands for on this machine: paged on CUDA when transformers has it, else the step decoder."""
    if name != "auto":
        return name
    from engine.core.models import resolve_device

    if not resolve_device(spec.device).startswith("cuda"):
        return "hf"
    from engine.core.backends.paged import continuous_batching_config_class

    try:
        continuous_batching_config_class()
    except RmxError:
        return "hf"
    return "paged"
