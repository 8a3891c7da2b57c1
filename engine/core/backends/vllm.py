"""The optional vLLM sampler (`pip install rmx[vllm]`, CUDA only): many prompts per call, same interface."""

from __future__ import annotations

from typing import Sequence

from engine.core.backends import Sample, SampleRequest
from engine.core.errors import RmxError

PROBLEMS_PER_CALL = 64
"""Prompts handed to vLLM at once: large enough to keep its scheduler busy, small enough to resume often."""


class VLLMSampler:
    """vLLM's continuous batching over the resolved model folder; a LoRA adapter goes in as a LoRARequest."""

    name = "vllm"
    problems_per_call = PROBLEMS_PER_CALL
    greedy_batch = PROBLEMS_PER_CALL

    def __init__(self, spec, temperature: float, top_p: float, max_new_tokens: int):
        try:
            from vllm import LLM
        except ImportError:
            raise RmxError("the vllm backend needs vLLM on a CUDA machine: pip install 'rmx[vllm]'") from None
        from engine.core.models import resolve_source

        if spec.source.lower().endswith(".gguf") or spec.source == "demo":
            raise RmxError("the vllm backend loads safetensors folders or hub ids; use --backend hf for GGUF and demo")
        folder = resolve_source(spec).path
        dtype = "auto" if spec.dtype == "auto" else spec.dtype
        self.lora = None
        extra = {}
        if spec.adapter:
            import json
            from pathlib import Path

            from vllm.lora.request import LoRARequest

            rank = json.loads((Path(spec.adapter) / "adapter_config.json").read_text())["r"]
            extra = dict(enable_lora=True, max_lora_rank=max(8, rank))
            self.lora = LoRARequest("adapter", 1, str(spec.adapter))
        self.llm = LLM(model=str(folder), dtype=dtype, revision=spec.revision,
                       trust_remote_code=spec.trust_remote_code, **extra)
        self.tokenizer = self.llm.get_tokenizer()
        from engine.core.prompts import ModelFacts

        config = self.llm.llm_engine.model_config.hf_config
        self.template_facts = ModelFacts(model_type=getattr(config, "model_type", None),
                                         names=(spec.source, str(folder)))
        self.eos = {self.tokenizer.eos_token_id}
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens

    def sample(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        from vllm import SamplingParams

        prompts = [{"prompt_token_ids": list(r.prompt_ids)} for r in requests]
        params = [SamplingParams(n=r.n, seed=r.seed, max_tokens=self.max_new_tokens,
                                 temperature=0.0 if r.greedy else self.temperature,
                                 top_p=1.0 if r.greedy else self.top_p) for r in requests]
        outputs = self.llm.generate(prompts, params, lora_request=self.lora, use_tqdm=False)
        results = []
        for output in outputs:
            samples = []
            for choice in output.outputs:
                ids = tuple(choice.token_ids)
                finish = "length" if choice.finish_reason == "length" else (
                    "eos" if ids and ids[-1] in self.eos else "stop")
                samples.append(Sample(ids, finish))
            results.append(samples)
        return results
