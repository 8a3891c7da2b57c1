"""The GPU suite runs end to end on tiny CPU shapes (`--tiny`), so the one-command GPU run cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_suite_tiny_writes_every_section_and_imports_only_the_gpu_image_stack(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results_gpu.json").read_text())
    assert results["foreign_modules"] == [] and results["skipped"] == []
    assert [row["tokens"] for row in results["scoring"]] == [128, 512]
    assert all(row["ratio"] > 0 for row in results["scoring"])
    assert results["fork"]["ratio"] > 0 and results["greedy"]["ours_tok_s"] > 0
    assert set(results["lockstep"]["rows"]) == {"1", "8"} and results["lockstep"]["oracle_scaling"] > 0
    rollouts = results["rollouts"]
    for backend in ("step_decoder", "hf_generate", "paged"):
        assert rollouts[backend]["tok_s"] > 0 and rollouts[backend]["tokens"] > 0
    assert results["train"]["ratio"] > 0
    assert all(row["gpu_hours"] is not None for row in results["projection"])
    table = (tmp_path / "results_gpu.md").read_text()
    assert "Projection (not a measurement)" in table and "P6 rollouts" in table


def test_gpu_suite_refuses_a_full_run_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    sys.path.insert(0, str(ROOT))
    from benchmarks.gpu_suite import main

    assert main(["--out", str(tmp_path)]) == 2
    assert not (tmp_path / "results_gpu.json").exists()
