"""Prompt templates by model (Appendix C): which template `auto` picks for each family, and what it refuses."""

from __future__ import annotations

import pytest

from engine.core.config import ModelSpec
from engine.core.errors import RmxError
from engine.core.models import load_model
from engine.core.prompts import (
    MISTRAL,
    QWEN_RAW,
    R1_DISTILL_USER,
    TEMPLATES,
    ModelFacts,
    choose_template,
    prompt_ids,
)
from tests.tiny import build_model, build_tokenizer


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """Tiny tokenizers: Qwen vocabulary with and without a chat template, and a non-Qwen one with a chat template."""
    root = tmp_path_factory.mktemp("tokenizers")
    return {
        "qwen+chat": build_tokenizer(root / "qwen-chat"),
        "qwen": build_tokenizer(root / "qwen", chat=False),
        "qwen3+chat": build_tokenizer(root / "qwen3-chat", think=True),
        "qwen3": build_tokenizer(root / "qwen3", chat=False, think=True),
        "other+chat": build_tokenizer(root / "other-chat", qwen_specials=False),
        "other": build_tokenizer(root / "other", qwen_specials=False, chat=False),
    }


CASES = [
    # The paper's main family: a Qwen2.5 base whose tokenizer ships a chat template still gets the raw prompt.
    ("qwen2", "Qwen/Qwen2.5-7B", "qwen+chat", "qwen"),
    ("qwen2", "Qwen/Qwen2.5-Math-1.5B", "qwen", "qwen"),
    ("qwen2", "hkust-nlp/Qwen-2.5-7B-SimpleRL-Zoo", "qwen+chat", "qwen"),  # an RL-trained descendant
    ("qwen2", "Qwen/Qwen2.5-7B-Instruct", "qwen+chat", "chat"),
    ("qwen2", "Qwen/Qwen2.5-7B-Instruct", "qwen", "raw"),  # instruct, but nothing to chat with
    ("qwen3", "Qwen/Qwen3-8B-Base", "qwen3+chat", "qwen3"),
    ("qwen3", "Qwen/Qwen3-4B-Base", "qwen3", "qwen3"),
    ("qwen3", "someone/tiny-qwen3", "qwen+chat", "raw"),  # a qwen3 model_type without <think> in its vocabulary
    ("mistral", "mistralai/Mistral-7B-v0.1", "other", "mistral"),
    ("mistral", "mistralai/Mistral-7B-v0.1", "other+chat", "mistral"),
    ("mistral", "mistralai/Mistral-7B-Instruct-v0.2", "other+chat", "chat"),
    ("qwen2", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "qwen+chat", "r1-distill"),
    ("llama", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "other+chat", "r1-distill"),
    ("qwen2", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "qwen", "raw"),
    ("llama", "HuggingFaceTB/SmolLM2-135M-Instruct", "other+chat", "chat"),
    ("gemma2", "google/gemma-2-2b-it", "other+chat", "chat"),
    ("llama", "meta-llama/Llama-3.1-8B", "other+chat", "raw"),  # not a paper family, not instruct
    ("gpt2", "gpt2", "other", "raw"),
    (None, "", "qwen+chat", "raw"),
    # A folder path whose parent says "chat" does not make a base model a chat model: only the name counts.
    ("qwen2", "/home/me/chat-runs/Qwen2.5-1.5B", "qwen+chat", "qwen"),
    # A qwen2 model_type on a non-Qwen vocabulary cannot take the Qwen prompt.
    ("qwen2", "someone/tiny-qwen2", "other+chat", "raw"),
]


@pytest.mark.parametrize("model_type, name, tokenizer, expected", CASES)
def test_auto_follows_appendix_c_per_family(tokenizers, model_type, name, tokenizer, expected):
    choice = choose_template("auto", tokenizers[tokenizer], ModelFacts(model_type, (name,) if name else ()))
    assert choice.template == expected, choice.reason
    assert choice.reason and "\n" not in choice.reason
    assert choose_template(None, tokenizers[tokenizer], ModelFacts(model_type, (name,))) == choice


def test_each_template_builds_the_papers_text(tokenizers):
    tok = tokenizers["qwen3+chat"]
    problem = "What is 12 + 30?"
    text = {"qwen": QWEN_RAW, "qwen3": QWEN_RAW, "mistral": MISTRAL}
    for name, template in text.items():
        expected = tok(template.format(problem=problem), add_special_tokens=True)["input_ids"]
        assert prompt_ids(tok, problem, name) == expected
    chat = tok.decode(prompt_ids(tok, problem, "r1-distill"))
    assert R1_DISTILL_USER.format(problem=problem) in chat and chat.endswith("<|im_start|>assistant\n")
    assert prompt_ids(tok, problem, "raw") == tok(problem)["input_ids"]


def test_a_qwen2_base_with_a_chat_template_is_prompted_raw_end_to_end(tmp_path):
    """A loaded Qwen2 base (tiny weights, a tokenizer with a chat template): `auto` builds the Qwen raw prompt."""
    folder = build_model(tmp_path / "Qwen2.5-0.5B", "qwen2")
    model = load_model(ModelSpec(str(folder), dtype="float32"))
    assert model.tokenizer.chat_template, "the point: this tokenizer carries a chat template"
    assert model.template_facts.model_type == "qwen2"
    choice = choose_template("auto", model.tokenizer, model.template_facts)
    assert choice.template == "qwen" and "qwen2" in choice.reason
    problem = "What is 2 + 3?"
    raw = model.tokenizer(QWEN_RAW.format(problem=problem))["input_ids"]
    assert prompt_ids(model.tokenizer, problem, "auto", model.template_facts) == raw


def test_bad_templates_are_refused_with_the_reason(tokenizers):
    with pytest.raises(RmxError) as unknown:
        choose_template("fancy", tokenizers["qwen+chat"])
    assert all(name in str(unknown.value) for name in ("auto", *TEMPLATES))
    for name in ("qwen3", "qwen"):
        with pytest.raises(RmxError, match=f"template '{name}' is for Qwen vocabularies"):
            prompt_ids(tokenizers["other+chat"], "1+1", name)
    with pytest.raises(RmxError, match="needs a chat template"):
        choose_template("chat", tokenizers["qwen"])
    with pytest.raises(RmxError, match="needs a chat template"):
        prompt_ids(tokenizers["other"], "1+1", "r1-distill")
    assert choose_template("mistral", tokenizers["qwen+chat"]).reason == "asked for"


def test_a_qwen_template_on_another_family_or_a_chatml_vocabulary_is_refused(tokenizers):
    """SmolLM2 (the demo) speaks ChatML like Qwen, but it is a Llama without <think>: qwen3 does not fit it."""
    smol = ModelFacts("llama", ("HuggingFaceTB/SmolLM2-135M-Instruct",))
    for name in ("qwen", "qwen3"):
        with pytest.raises(RmxError, match=f"template '{name}' is for qwen.* models, and this model's model_type is llama"):
            choose_template(name, tokenizers["qwen3+chat"], smol)
    # Without a model_type to go on, the vocabulary decides: ChatML markers are not enough for qwen3.
    with pytest.raises(RmxError, match="template 'qwen3' is for Qwen vocabularies, and this tokenizer has no "
                                       "<think> or </think> as one token"):
        choose_template("qwen3", tokenizers["qwen+chat"])
    with pytest.raises(RmxError, match="model_type is qwen2"):
        choose_template("qwen3", tokenizers["qwen3+chat"], ModelFacts("qwen2", ("Qwen/Qwen2.5-7B",)))
    # What fits is accepted: qwen on Qwen2.5 and Qwen3, qwen3 on Qwen3, mistral (plain text) anywhere.
    assert choose_template("qwen", tokenizers["qwen"], ModelFacts("qwen2")).template == "qwen"
    assert choose_template("qwen", tokenizers["qwen3"], ModelFacts("qwen3")).template == "qwen"
    assert choose_template("qwen3", tokenizers["qwen3"], ModelFacts("qwen3")).template == "qwen3"
    assert choose_template("mistral", tokenizers["other"], smol).template == "mistral"
