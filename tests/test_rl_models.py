"""Models from the RL stacks: TRL/PEFT adapters, fine-tuned folders, verl checkpoints, cached hub ids, added tokens."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.core.config import ModelSpec
from engine.core.errors import RmxError
from engine.core.models import load_model, load_pair
from engine.core.prompts import completion_ids, prompt_ids
from engine.core.scoring import score
from tests.tiny import build_adapter

PROBLEM = "What is 12 + 30?"
COMPLETION = "12 + 30 = 42, so the answer is \\boxed{42}."
ADDED = ["<think>", "</think>"]


def _pair(base):
    tok = base.tokenizer
    return prompt_ids(tok, PROBLEM, "chat"), completion_ids(tok, COMPLETION)


def _trainer_leftovers(folder: Path) -> None:
    """What TRL's trainers write beside the weights: pickled args, a model card, an intermediate checkpoint."""
    (folder / "training_args.bin").write_bytes(b"\x80\x04 pickled TrainingArguments")
    (folder / "README.md").write_text("---\nlibrary_name: peft\ntags: [trl, grpo]\n---\n")
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "trainer_state.json").write_text("{}")


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory, tiny_llama) -> Path:
    """The base under the name a hub id would give it (TRL writes the hub id it trained from into the adapter)."""
    folder = tmp_path_factory.mktemp("hub") / "Tiny-Math-1.5B"
    shutil.copytree(tiny_llama, folder)
    return folder


@pytest.fixture(scope="module")
def trl_adapter(tmp_path_factory, base_folder) -> Path:
    """A TRL GRPO LoRA output: the adapter, the tokenizer, and the trainer's leftovers, declared for a hub id."""
    folder = build_adapter(tmp_path_factory.mktemp("trl") / "grpo-lora", base_folder,
                           base_name="rmx-test/Tiny-Math-1.5B")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base_folder / name, folder / name)
    _trainer_leftovers(folder)
    return folder


@pytest.fixture(scope="module")
def added_tokens_teacher(tmp_path_factory, tiny_llama, tiny_llama_teacher) -> Path:
    """An SFT'd teacher: the base tokenizer plus <think>/</think>, its embeddings resized to fit them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("sft") / "teacher-with-think"
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_teacher)
    tokenizer.add_special_tokens({"additional_special_tokens": ADDED})
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_teacher)
    model.resize_token_embeddings(len(tokenizer))
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder, safe_serialization=True)
    _trainer_leftovers(folder)
    return folder


def test_a_trl_lora_checkpoint_is_a_teacher_adapter(base_folder, trl_adapter):
    base, teacher = load_pair(ModelSpec(str(base_folder), dtype="float32"),
                              ModelSpec(str(base_folder), adapter=str(trl_adapter), dtype="float32"))
    assert base.module is teacher.module
    rollout = score(base, [_pair(base)], teacher)[0]
    assert any(abs(t.teacher.entropy - t.entropy) > 1e-3 for t in rollout.tokens)  # the adapter is on


def test_a_full_fine_tuned_folder_is_a_teacher(tmp_path, tiny_llama, tiny_llama_teacher):
    folder = tmp_path / "grpo-full"
    shutil.copytree(tiny_llama_teacher, folder)
    _trainer_leftovers(folder)
    base, teacher = load_pair(ModelSpec(str(tiny_llama), dtype="float32"), ModelSpec(str(folder), dtype="float32"))
    assert teacher.notes == ()
    rollout = score(base, [_pair(base)], teacher)[0]
    assert any(t.teacher.id != t.top[0].id for t in rollout.tokens)


def _verl_checkpoint(root: Path, model: Path, with_weights: bool) -> Path:
    """`global_step_N/actor/` as verl writes it: FSDP shards, and a huggingface/ folder (weights if asked)."""
    actor = root / "global_step_5" / "actor"
    hf = actor / "huggingface"
    hf.mkdir(parents=True)
    for item in model.iterdir():
        if item.suffix != ".safetensors" or with_weights:
            shutil.copy(item, hf / item.name)
    (actor / "model_world_size_2_rank_0.pt").write_bytes(b"fsdp shard")
    (actor / "model_world_size_2_rank_1.pt").write_bytes(b"fsdp shard")
    (actor / "extra_state_world_size_2_rank_0.pt").write_bytes(b"rng")
    return actor.parent


def test_a_verl_checkpoint_with_hf_weights_loads_from_the_step_or_the_actor(tmp_path, tiny_llama):
    step = _verl_checkpoint(tmp_path, tiny_llama, with_weights=True)
    reference = load_model(ModelSpec(str(tiny_llama), dtype="float32"))
    for source in (step, step / "actor"):
        model = load_model(ModelSpec(str(source), dtype="float32"))
        assert torch.equal(model.core.get_output_embeddings().weight, reference.core.get_output_embeddings().weight)


def test_a_verl_fsdp_checkpoint_points_to_the_model_merger(tmp_path, tiny_llama):
    step = _verl_checkpoint(tmp_path, tiny_llama, with_weights=False)
    with pytest.raises(RmxError) as info:
        load_model(ModelSpec(str(step)))
    message = str(info.value)
    assert "\n" not in message and "verl.model_merger merge --backend fsdp" in message
    assert str(step / "actor") in message


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_llama) -> Path:
    """An HF hub cache holding rmx-test/tiny-llama at one snapshot, as `hf download` leaves it."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    repo = cache / "models--rmx-test--tiny-llama"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_llama, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_a_hub_id_in_the_local_cache_loads_offline(hub_cache, tiny_llama, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model(ModelSpec("rmx-test/tiny-llama", dtype="float32"))
    assert str(hub_cache) in str(model.aliases)
    with pytest.raises(RmxError) as info:
        load_model(ModelSpec("rmx-test/not-downloaded"))
    assert "'rmx-test/not-downloaded'" in str(info.value) and "hf download" in str(info.value)


def test_a_teacher_with_added_special_tokens_aligns_on_the_shared_ids(tiny_llama, added_tokens_teacher):
    from transformers import AutoModelForCausalLM

    base, teacher = load_pair(ModelSpec(str(tiny_llama), dtype="float32"),
                              ModelSpec(str(added_tokens_teacher), dtype="float32"))
    assert teacher.vocab_size == base.vocab_size == len(base.tokenizer)
    assert len(teacher.notes) == 1 and "<think>" in teacher.notes[0] and "2 token(s)" in teacher.notes[0]
    assert teacher.info().extra["warnings"] == list(teacher.notes)
    prompt, completion = _pair(base)
    rollout = score(base, [(prompt, completion)], teacher)[0]
    full = AutoModelForCausalLM.from_pretrained(added_tokens_teacher, dtype=torch.float64)
    with torch.no_grad():
        logits = full(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1, :base.vocab_size]
    shared = torch.log_softmax(logits, dim=-1)
    for pos, token in enumerate(rollout.tokens):
        assert token.teacher.id == int(logits[pos].argmax())
        expected = -(shared[pos].exp() * shared[pos]).sum().item()
        assert token.teacher.entropy == pytest.approx(expected, abs=1e-4)


def test_added_tokens_inside_the_base_padding_rows_are_never_picked(tmp_path, tiny_llama, added_tokens_teacher):
    """Bases padded past their tokenizer (Qwen: 151936 rows, 151665 tokens) put a teacher's added ids in range."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    padded_base = tmp_path / "padded-base"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    rows = len(AutoTokenizer.from_pretrained(tiny_llama)) + 64
    model.resize_token_embeddings(rows, mean_resizing=False)
    model.save_pretrained(padded_base, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(padded_base)
    loud_teacher = tmp_path / "loud-teacher"
    teacher_model = AutoModelForCausalLM.from_pretrained(added_tokens_teacher)
    teacher_model.resize_token_embeddings(rows, mean_resizing=False)
    with torch.no_grad():  # make <think> the teacher's favourite everywhere
        teacher_model.get_output_embeddings().weight[rows - 64] *= 0
        teacher_model.get_output_embeddings().weight[rows - 64] += 50 * teacher_model.model.norm.weight.sign()
    teacher_model.save_pretrained(loud_teacher, safe_serialization=True)
    AutoTokenizer.from_pretrained(added_tokens_teacher).save_pretrained(loud_teacher)

    base, teacher = load_pair(ModelSpec(str(padded_base), dtype="float32"), ModelSpec(str(loud_teacher), dtype="float32"))
    assert teacher.vocab_size == base.vocab_size == rows
    rollout = score(base, [_pair(base)], teacher)[0]
    picks = {t.teacher.id for t in rollout.tokens}
    assert picks and not picks & {rows - 64, rows - 63}
    assert all(t.teacher.entropy == t.teacher.entropy for t in rollout.tokens)  # no NaN


def test_a_real_vocabulary_mismatch_is_still_refused(tiny_llama, tiny_other_vocab, tmp_path):
    with pytest.raises(RmxError, match="a teacher must share the base's tokenizer"):
        load_pair(ModelSpec(str(tiny_llama)), ModelSpec(str(tiny_other_vocab)))
    # Same size, one id moved: not an addition, so not aligned.
    swapped = tmp_path / "swapped"
    shutil.copytree(tiny_llama, swapped)
    tokenizer = json.loads((swapped / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.__getitem__)[100:102]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (swapped / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(RmxError, match="differs from base tokenizer"):
        load_pair(ModelSpec(str(tiny_llama)), ModelSpec(str(swapped)))


def test_the_cli_warns_in_one_line_and_scores_with_the_aligned_teacher(tiny_llama, added_tokens_teacher):
    result = subprocess.run(
        [sys.executable, "-m", "rmx_tui", "score", "--base", str(tiny_llama), "--teacher", str(added_tokens_teacher),
         "--prompt-text", PROBLEM, "--completion-text", COMPLETION, "--json", "--dtype", "float32"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("rmx: warning:")]
    assert len(warnings) == 1 and "aligned on the" in warnings[0]
    assert json.loads(result.stdout.splitlines()[-1])
