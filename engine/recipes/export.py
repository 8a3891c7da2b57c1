"""Adapters out: find a run's adapter, copy it as a plain PEFT folder, or merge it into a standalone HF model."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.core.config import ModelSpec
from engine.core.errors import RmxError
from engine.core.io import commit_folder

SUMMARIES = (("train_summary.json", "adapter"), ("distill_summary.json", "adapter"), ("sweep.json", "best_adapter"),
             ("pipeline.json", "adapter"), ("result.json", "adapter"), ("result.json", "best_adapter"))
"""Where each recipe records the adapter it finished with, and under which key."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "chat_template.jinja", "generation_config.json")
EXPORT_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ExportSpec:
    """What to export from a run, and where."""

    run: str
    """A run folder (train, distill, sweep, pipeline; a job's run dir), or an adapter folder itself."""
    out: str | None = None
    """Write the adapter here as a plain PEFT folder, its base named so vLLM and AutoPeft find it."""
    merge: str | None = None
    """Write the base with the adapter merged in here, as a standalone HF folder (safetensors)."""
    base: str | None = None
    """The base model to merge into; default: the one the adapter was trained on."""
    dtype: str = "auto"
    """dtype of the merged weights: auto (the base's own), float32, bfloat16 or float16. The merge runs in fp32."""

    def __post_init__(self) -> None:
        if not self.out and not self.merge:
            raise RmxError("nothing to export: give --out DIR (the adapter), --merge DIR (a merged model), or both")
        if self.dtype not in EXPORT_DTYPES:
            raise RmxError(f"--dtype must be one of {', '.join(EXPORT_DTYPES)}, got '{self.dtype}'")
        for target in (self.out, self.merge):
            if target and Path(target).exists() and any(Path(target).iterdir()):
                raise RmxError(f"{target} exists and is not empty: pick a new folder")


@dataclass(frozen=True)
class ExportResult:
    """Where the adapter came from and what was written."""

    adapter: str
    base: str
    out: str | None
    merged: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def find_adapter(run: str) -> Path:
    """The adapter folder a run finished with: the folder itself, its recorded adapter, or its adapter/."""
    root = Path(run).expanduser()
    if not root.exists():
        raise RmxError(f"no run folder or adapter at {run}")
    candidates = [root, root / "artifacts"]
    for folder in list(candidates):
        for name, key in SUMMARIES:
            try:
                recorded = json.loads((folder / name).read_text(encoding="utf-8")).get(key)
            except (OSError, ValueError, AttributeError):
                continue
            if recorded:
                candidates.append(Path(recorded))
    candidates += [root / "adapter", root / "artifacts" / "adapter", root / "train" / "adapter"]
    for folder in candidates:
        if (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file():
            return folder
    raise RmxError(f"{run} holds no finished adapter (adapter_config.json + adapter_model.safetensors): give a "
                   "finished train, distill, sweep or pipeline run, its job id, or an adapter folder")


def _declared_base(adapter: Path) -> str:
    base = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise RmxError(f"{adapter} names no base model: pass --base")
    return base


def _hub_name(source: str, resolved: Path) -> str:
    """The name serving stacks load the base by: the hub id for `demo`, else the source as given or resolved."""
    from engine.core.models import DEMO_NAME

    if source == "demo":
        return DEMO_NAME
    return str(resolved) if Path(source).expanduser().exists() else source


def export_adapter(spec: ExportSpec) -> ExportResult:
    """Copy the run's adapter (base renamed for serving stacks) and/or merge it into its base."""
    from engine.core.models import resolve_source

    adapter = find_adapter(spec.run)
    source = spec.base or _declared_base(adapter)
    resolved = resolve_source(ModelSpec(source)).path
    base_name = _hub_name(source, resolved)
    if spec.out:
        commit_folder(lambda tmp: _copy_adapter(adapter, tmp, base_name), Path(spec.out))
    if spec.merge:
        commit_folder(lambda tmp: _merge(adapter, resolved, tmp, spec.dtype), Path(spec.merge))
    return ExportResult(str(adapter), base_name, spec.out, spec.merge)


def _copy_adapter(adapter: Path, folder: Path, base_name: str) -> None:
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        if (adapter / name).exists():
            shutil.copy2(adapter / name, folder / name)
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_name
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _merge(adapter: Path, base: Path, folder: Path, dtype: str) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if dtype == "auto":
        config = json.loads((base / "config.json").read_text(encoding="utf-8"))
        dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    target = getattr(torch, dtype, None)
    if not isinstance(target, torch.dtype):
        raise RmxError(f"{base}/config.json names dtype '{dtype}': pass --dtype")
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32, use_safetensors=True)
    try:
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except Exception as error:
        raise RmxError(f"adapter {adapter} does not fit base {base}: {str(error).splitlines()[0]}") from error
    merged.to(target)
    merged.save_pretrained(str(folder), safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (base / name).exists() and not (folder / name).exists():
            shutil.copy2(base / name, folder / name)
