"""`rmx export-adapter`: the unmerged adapter loads in plain PEFT, the merged folder in plain transformers, same logits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.core.config import ModelSpec
from engine.core.errors import RmxError
from engine.recipes.export import ExportSpec, export_adapter, find_adapter
from tests.test_train import _spec, make_rollouts

IDS = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_llama) -> Path:
    """A real ReasonMaxxer run on the tiny base: its adapter has moved off the base (LoRA B starts at 0)."""
    from engine.recipes.train import train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    result = train(ModelSpec(str(tiny_llama), dtype="float32"), _spec(make_rollouts(root / "r.jsonl"), lr=1e-2),
                   root / "run")
    assert result.state == "done"
    return root / "run"


def test_merged_and_unmerged_exports_give_the_same_logits(trained_run, tiny_llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = subprocess.run(
        [sys.executable, "-m", "rmx_tui", "export-adapter", str(trained_run), "--merge", str(tmp_path / "merged"),
         "--out", str(tmp_path / "adapter"), "--json"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["adapter"] == str(trained_run / "adapter") and summary["merged"] == str(tmp_path / "merged")

    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(IDS).logits
    unmerged = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    with torch.no_grad():
        adapter_logits = unmerged(IDS).logits
        merged_logits = merged(IDS).logits
    assert (adapter_logits - base_logits).abs().max() > 1e-3  # the adapter does something
    assert (merged_logits - adapter_logits).abs().max() < 1e-4
    assert not any((tmp_path / "merged").glob("*.bin"))
    assert (tmp_path / "merged" / "tokenizer.json").exists()
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(Path(tiny_llama).resolve())


def test_the_adapter_is_found_in_a_job_run_dir_and_in_the_adapter_folder(trained_run, tmp_path):
    assert find_adapter(str(trained_run)) == trained_run / "adapter"
    assert find_adapter(str(trained_run / "adapter")) == trained_run / "adapter"
    with pytest.raises(RmxError, match="holds no finished adapter"):
        find_adapter(str(tmp_path))


def test_bad_exports_are_refused_before_any_work(trained_run, tmp_path):
    with pytest.raises(RmxError, match="nothing to export"):
        ExportSpec(str(trained_run))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep me")
    with pytest.raises(RmxError, match="not empty"):
        ExportSpec(str(trained_run), merge=str(tmp_path / "taken"))
    with pytest.raises(RmxError, match="--dtype"):
        ExportSpec(str(trained_run), merge=str(tmp_path / "m"), dtype="int8")
    with pytest.raises(RmxError, match="no run folder"):
        export_adapter(ExportSpec(str(tmp_path / "missing"), merge=str(tmp_path / "m")))
    assert (tmp_path / "taken" / "x").read_text() == "keep me"
