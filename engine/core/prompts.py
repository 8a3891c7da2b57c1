"""The paper's prompt templates (Appendix C), the tokenizer's chat template, and raw text, as token ids."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
QWEN_MARKERS = ("<|endoftext|>", "<|im_start|>")
"""Special tokens every Qwen2, Qwen2.5 and Qwen3 vocabulary has: the qwen templates are refused without them."""
QWEN3_MARKERS = ("<think>", "</think>")
"""Qwen3's reasoning markers, one token each in its vocabulary (not in Qwen2.5's, nor in other ChatML ones such
as SmolLM2's): the qwen3 template is refused without them."""
TEMPLATE_FAMILIES = {"qwen": ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe"), "qwen3": ("qwen3", "qwen3_moe")}
"""Template → the config model_types it is written for: asked for on a model of a known other type, it is refused."""
FAMILY_TEMPLATES = {"qwen2": "qwen", "qwen3": "qwen3", "qwen3_moe": "qwen3", "mistral": "mistral"}
"""config.model_type → the raw template Appendix C gives that family's base and RL-trained models."""
_INSTRUCT = re.compile(r"instruct|chat|(?:^|[-_.])it(?:$|[-_.])", re.IGNORECASE)
_R1_DISTILL = re.compile(r"r1[-_]?distill", re.IGNORECASE)


@dataclass(frozen=True)
class ModelFacts:
    """What the `auto` rule reads off a model: its config's model_type and the names it goes by."""

    model_type: str | None = None
    """config.json's model_type (qwen2, qwen3, mistral, llama, ...); None when unknown."""
    names: tuple[str, ...] = ()
    """Hub ids, folders or aliases of the model; only their last path component is read."""


@dataclass(frozen=True)
class TemplateChoice:
    """The template a prompt was built with, and why it was chosen."""

    template: str
    """One of TEMPLATES."""
    reason: str
    """One line: the rule that picked it (or `asked for`)."""

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise RmxError(f"unknown template '{self.template}': use one of auto, {', '.join(TEMPLATES)}")

    def to_json(self) -> dict[str, str]:
        return {"template": self.template, "template_reason": self.reason}


def _has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _has_token(tokenizer, token: str) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.token_to_id(token) is not None
    return token in tokenizer.get_vocab()


def _short_names(facts: ModelFacts, tokenizer) -> list[str]:
    names = [*facts.names, str(getattr(tokenizer, "name_or_path", "") or "")]
    return [n.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] for n in names if n]


def choose_template(template: str | None, tokenizer, facts: ModelFacts | None = None) -> TemplateChoice:
    """The template for `template` (None or `auto` applies Appendix C's rule), checked against the tokenizer.

    auto: DeepSeek-R1-Distill models get r1-distill; models whose name says Instruct, Chat or -it
    get their chat template; otherwise config.model_type picks the family's raw template (qwen2 →
    qwen, qwen3 → qwen3, mistral → mistral), so base models and their RL-trained descendants are
    prompted as the paper prompts them even when their tokenizer ships a chat template; anything
    else gets raw. A chat-style choice on a tokenizer without a chat template falls back to raw.
    """
    facts = facts or ModelFacts()
    if template not in (None, "auto"):
        if template not in TEMPLATES:
            raise RmxError(f"unknown template '{template}': use one of auto, {', '.join(TEMPLATES)}")
        _check_fit(template, tokenizer, facts)
        return TemplateChoice(template, "asked for")
    names = _short_names(facts, tokenizer)
    chat = _has_chat_template(tokenizer)
    r1 = next((n for n in names if _R1_DISTILL.search(n)), None)
    if r1 is not None:
        if chat:
            return TemplateChoice("r1-distill", f"{r1} is a DeepSeek-R1-Distill model: its chat template (Appendix C)")
        return TemplateChoice("raw", f"{r1} is a DeepSeek-R1-Distill model, but its tokenizer has no chat template")
    instruct = next((n for n in names if _INSTRUCT.search(n)), None)
    if instruct is not None:
        if chat:
            return TemplateChoice("chat", f"{instruct} is an instruct/chat model: its chat template")
        return TemplateChoice("raw", f"{instruct} is an instruct/chat model, but its tokenizer has no chat template")
    family = FAMILY_TEMPLATES.get(facts.model_type or "")
    if family is not None:
        try:
            _check_fit(family, tokenizer, facts)
        except RmxError as error:
            return TemplateChoice("raw", f"model_type {facts.model_type}, but {error}")
        return TemplateChoice(family, f"model_type {facts.model_type}: the family's raw template (Appendix C)")
    kind = f"model_type {facts.model_type}" if facts.model_type else "an unknown model type"
    return TemplateChoice("raw", f"{kind}, not named instruct/chat: raw text")


def _check_fit(template: str, tokenizer, facts: ModelFacts) -> None:
    """Refuse a template written for another model family or vocabulary, with the reason in one line.

    The qwen templates need a Qwen model (its config's model_type, when known) and a Qwen vocabulary (the
    ChatML markers as single tokens; qwen3 also <think> and </think>): ChatML alone does not make a vocabulary
    Qwen's (SmolLM2 has it too). mistral and raw are plain text and fit any tokenizer; chat and r1-distill need
    the tokenizer's chat template.
    """
    family = TEMPLATE_FAMILIES.get(template)
    if family and facts.model_type and facts.model_type not in family:
        raise RmxError(f"template '{template}' is for {' / '.join(family)} models, and this model's model_type is "
                       f"{facts.model_type}: use raw, chat or auto")
    if template in ("qwen", "qwen3"):
        markers = QWEN_MARKERS + (QWEN3_MARKERS if template == "qwen3" else ())
        missing = [t for t in markers if not _has_token(tokenizer, t)]
        if missing:
            raise RmxError(f"template '{template}' is for Qwen vocabularies, and this tokenizer has no "
                           f"{' or '.join(missing)} as one token: use raw, chat or auto")
    if template in ("chat", "r1-distill") and not _has_chat_template(tokenizer):
        raise RmxError(f"template '{template}' needs a chat template, and this tokenizer has none: use qwen or raw")


def resolve_template(template: str | None, tokenizer, facts: ModelFacts | None = None) -> str:
    """The name `choose_template` picks."""
    return choose_template(template, tokenizer, facts).template


def prompt_ids(tokenizer, problem: str, template: str | None = "raw", facts: ModelFacts | None = None) -> list[int]:
    """Token ids of the prompt for `problem` under `template` (ending where the completion starts)."""
    name = resolve_template(template, tokenizer, facts)
    if name in ("chat", "r1-distill"):
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
