"""Tiny random-weight models and a tiny BPE tokenizer, built on disk for tests and benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "Sam has 4 pencils and gets 3 more. How many pencils does Sam have now? The answer is \\boxed{7}.",
    "Mia had 10 apples and ate 2 of them. 10 - 2 = 8. So the answer is 8.",
    "Solve the following math problem step by step. Put your final answer in \\boxed{}.",
    "Problem: What is 12 + 30? Solution: 12 + 30 = 42, so the final answer is \\boxed{42}.",
    "There are 5 birds on a tree. 4 more birds land on the tree. 5 + 4 = 9 birds.",
    "A box holds 6 eggs. How many eggs are in 2 boxes? 6 * 2 = 12. Therefore the answer is 12.",
    "Let x be a number such that 2x + 3 = 11. Then 2x = 8 and x = 4. The answer is \\boxed{4}.",
    "Question: Answer: Let's think step by step. First, then, next, finally, wait, so, but, because.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 100 1000 = + - * / ( ) { } \\frac{1}{2}",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(folder: Path, vocab_size: int = 384, *, qwen_specials: bool = True, chat: bool = True,
                    think: bool = False):
    """Train a byte-level BPE tokenizer on a small math corpus and save it as a fast HF tokenizer.

    By default it has Qwen's special tokens and a ChatML chat template; `qwen_specials=False` gives
    Llama-style ones instead (a non-Qwen vocabulary), `chat=False` leaves the chat template out, and
    `think=True` adds Qwen3's <think> and </think> (a Qwen3 vocabulary).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = SPECIALS if qwen_specials else ["<unk>", "<s>", "</s>", "<pad>"]
    if think:
        specials = [*specials, "<think>", "</think>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    unk, bos, eos, pad = (specials[0], specials[1], specials[2], specials[3])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos, bos_token=bos, pad_token=pad, unk_token=unk)
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return fast


def build_model(folder: Path, arch: str = "llama", seed: int = 0, tokenizer_from: Path | None = None,
                vocab_size: int = 384, context: int = 512) -> Path:
    """Save a random-weight causal LM (`llama`, `gpt2` or `qwen2`) with a tiny tokenizer into `folder`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig, Qwen2Config

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_from is not None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
        tokenizer.save_pretrained(folder)
    else:
        tokenizer = build_tokenizer(folder, vocab_size)
    vocab = len(tokenizer)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if arch == "llama":
        config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                             initializer_range=0.2, tie_word_embeddings=False, **ids)
    elif arch == "qwen2":
        config = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                             initializer_range=0.2, tie_word_embeddings=True, **ids)
    elif arch == "gpt2":
        config = GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=context,
                            initializer_range=0.2, **ids)
    else:
        raise ValueError(f"unknown tiny arch {arch}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def build_adapter(folder: Path, base_folder: Path, seed: int = 1, scale: float = 0.5,
                  base_name: str | None = None) -> Path:
    """Save a LoRA adapter with random non-zero weights on the attention projections of `base_folder`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_folder)
    targets = ["c_attn", "c_proj"] if model.config.model_type == "gpt2" else ["q_proj", "k_proj", "v_proj", "o_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    peft_model.save_pretrained(folder, safe_serialization=True)
    config_file = Path(folder) / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base_name or str(base_folder)
    config_file.write_text(json.dumps(config, indent=2))
    return Path(folder)


ANSWERED = {"What is 3 + 4?": "7", "Sam has 5 pencils and gets 4 more. How many pencils?": "9"}
"""The synthetic task `build_answerer` learns: problem → answer."""


def build_answerer(folder: Path, base_folder: Path, problems: dict[str, str] = ANSWERED, seed: int = 0) -> Path:
    """A copy of the tiny model fine-tuned until its greedy decode answers each problem (raw prompt) with
    " The answer is \\boxed{ANSWER}." and EOS: a teacher that is actually right, so pass@1 is not 0 = 0."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    model = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    rows = []
    for problem, answer in problems.items():
        prompt = tokenizer(problem, add_special_tokens=True)["input_ids"]
        target = tokenizer(f" The answer is \\boxed{{{answer}}}.", add_special_tokens=False)["input_ids"]
        rows.append((prompt, target + [tokenizer.eos_token_id]))
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300):
        loss = 0.0
        for prompt, target in rows:
            ids = torch.tensor([prompt + target])
            labels = torch.tensor([[-100] * len(prompt) + target])
            loss = loss + model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01 * len(rows):
            break
    model.eval()
    with torch.no_grad():
        for prompt, target in rows:
            out = model.generate(torch.tensor([prompt]), max_new_tokens=len(target), do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            assert out[0, len(prompt):].tolist() == target, "the answerer did not learn its task"
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def write_answered(path: Path, problems: dict[str, str] = ANSWERED) -> Path:
    """The answerer's task as a dataset file (`problem`, `answer`, `id` per line)."""
    with Path(path).open("w") as handle:
        for index, (problem, answer) in enumerate(problems.items()):
            handle.write(json.dumps({"id": f"answered_{index}", "problem": problem, "answer": answer}) + "\n")
    return Path(path)
