"""Copy a trained demo adapter into engine/data/demo_teacher/ as bf16 safetensors and print its sha256."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TARGET = Path(__file__).resolve().parent.parent / "engine" / "data" / "demo_teacher"


def main(adapter: str) -> None:
    source = Path(adapter)
    weights = {name: tensor.to(torch.bfloat16).contiguous()
               for name, tensor in load_file(source / "adapter_model.safetensors").items()}
    config = json.loads((source / "adapter_config.json").read_text(encoding="utf-8"))
    # The adapter is for the bundled demo model, whatever folder the run loaded it from.
    config["base_model_name_or_path"] = "demo"
    TARGET.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(TARGET / "adapter_model.safetensors"), metadata={"format": "pt"})
    (TARGET / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    digest = hashlib.sha256((TARGET / "adapter_model.safetensors").read_bytes()).hexdigest()
    print(f"{TARGET / 'adapter_model.safetensors'}  sha256 {digest}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/ship_demo_teacher.py RUN/train/adapter")
    main(sys.argv[1])
