"""The paper's prompt templates (Appendix C), the tokenizer's chat template, and raw text, as token ids."""

from __future__ import annotations

from engine.core.errors import RmxError

QWEN_RAW = (
    "Solve the following math problem step by step. Put your final answer in \\boxed{{}}.\n\n"
    "Problem: {problem}\n\nSolution:"
)
MISTRAL = "Question:\n{problem}\nAnswer:\nLet's think step by step."
R1_DISTILL_USER = (
    "Solve the following math problem step by step. Give a concise solution and put your final answer "
    "in \\boxed{{}}.\n\nProblem: {problem}"
)
CHAT_USER = "Solve the following math problem step by step. Put your final answer in \\boxed{{}}.\n\nProblem: {problem}"

TEMPLATES: dict[str, str] = {
    "qwen": "Qwen2.5 raw completion prompt (no chat template)",
    "qwen3": "Qwen3 raw completion prompt (same text as qwen)",
    "mistral": "Mistral-7B question/answer prompt (no chat template)",
    "r1-distill": "DeepSeek-R1-Distill: the model's chat template with one user message",
    "chat": "the tokenizer's own chat template with the step-by-step instruction",
    "raw": "the text exactly as given",
}


def resolve_template(template: str | None, tokenizer) -> str:
    """`None`/`auto` → `chat` when the tokenizer has a chat template, else `qwen`."""
    if template in (None, "auto"):
        return "chat" if getattr(tokenizer, "chat_template", None) else "qwen"
    if template not in TEMPLATES:
        raise RmxError(f"unknown template '{template}': use one of auto, {', '.join(TEMPLATES)}")
    return template


def prompt_ids(tokenizer, problem: str, template: str | None = "raw") -> list[int]:
    """Token ids of the prompt for `problem` under `template` (ending where the completion starts)."""
    name = resolve_template(template, tokenizer)
    if name in ("chat", "r1-distill"):
        if not getattr(tokenizer, "chat_template", None):
            raise RmxError(f"template '{name}' needs a chat template, and this tokenizer has none: use qwen or raw")
        user = (R1_DISTILL_USER if name == "r1-distill" else CHAT_USER).format(problem=problem)
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=True, add_generation_prompt=True
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return [int(i) for i in ids]
    if name == "raw":
        text = problem
    elif name == "mistral":
        text = MISTRAL.format(problem=problem)
    else:
        text = QWEN_RAW.format(problem=problem)
    return [int(i) for i in tokenizer(text, add_special_tokens=True)["input_ids"]]


def completion_ids(tokenizer, completion: str) -> list[int]:
    """Token ids of a completion, with no special tokens added."""
    return [int(i) for i in tokenizer(completion, add_special_tokens=False)["input_ids"]]
