"""The shipped demo teacher: its weights match their recorded hash, it loads on the demo base, and it disagrees."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path

import pytest

from engine.core.config import ModelSpec
from engine.core.models import DEMO_TEACHER_SHA256, demo_teacher_path
from tests.test_pipeline import coin_grader  # noqa: F401  (a fixture: a random model's rollouts get mixed success)

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_adapter_matches_the_hash_in_the_code_and_in_the_data_readme():
    weights = demo_teacher_path() / "adapter_model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert digest == DEMO_TEACHER_SHA256
    readme = (ROOT / "engine" / "data" / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"sha256[^\n]*{digest}", readme), "the data README records another hash"
    assert weights.stat().st_size < 4 << 20  # a few MB: bf16 at a small rank
    config = json.loads((demo_teacher_path() / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "demo"
    assert "data/demo_teacher/*" in (ROOT / "pyproject.toml").read_text()  # shipped in the wheel too


FIRST_TOKENS = 12
"""How much of the base's greedy answer to smoke_0 the disagreement test decodes (the teacher's first real
disagreement there is inside it: engine/data/README.md)."""


def test_the_demo_teacher_shares_the_base_weights_and_disagrees_on_the_first_smoke_problem():
    """In fp32, on the held-out smoke_0: a position where the teacher's argmax is not the base's, and the base's
    two best candidates are not tied (the last teacher's only edits were bf16 ties)."""
    import torch

    from engine.core.config import ScoreSpec
    from engine.core.data import load_problems
    from engine.core.models import load_pair
    from engine.core.prompts import prompt_ids
    from engine.core.scoring import score
    from engine.recipes.analysis import greedy_rollouts

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        base, teacher = load_pair(ModelSpec("demo", dtype="float32"),
                                  ModelSpec("demo", dtype="float32", adapter=str(demo_teacher_path())))
        assert teacher.module is base.module  # one copy of the weights
        [first] = load_problems("smoke", limit=1)
        prompt = prompt_ids(base.tokenizer, first.problem, "chat")
        [(_, completion, _)] = list(greedy_rollouts(base, [prompt], FIRST_TOKENS, 1))
        [rollout] = score(base, [(prompt, completion)], teacher, ScoreSpec(top_k=2))
    finally:
        torch.set_num_threads(threads)
    real = [t.pos for t in rollout.tokens
            if t.cls != "unshifted" and t.top[0].logprob - t.top[1].logprob > 1e-3]
    assert real, [(t.pos, t.cls, t.top[0].logprob - t.top[1].logprob) for t in rollout.tokens if t.cls != "unshifted"]


@pytest.mark.usefixtures("coin_grader")
def test_the_example_config_runs_a_few_steps_on_a_tiny_model(tiny_llama, tmp_path):
    """examples/demo-teacher.toml as written (every key it sets), shrunk to a tiny model and a few tokens."""
    import torch

    from engine.recipes.pipeline import check_pipeline, load_pipeline, run_pipeline

    config = load_pipeline(ROOT / "examples" / "demo-teacher.toml")
    assert config["model"]["base"] == "demo" and config["train"]["lora_r"] <= 16
    config["model"] = {"base": str(tiny_llama), "dtype": "float32"}
    config["rollouts"].update(limit=3, k=4, max_new_tokens=6, template="raw")
    config["train"].update(max_steps=2)
    config["eval"].update(limit=2, max_new_tokens=4, template="raw")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_pipeline(check_pipeline(config), tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    assert result.stages["train"]["state"] == "done" and result.stages["train"]["step"] == 2
    assert (Path(result.adapter) / "adapter_model.safetensors").exists()
    assert tomllib.loads((ROOT / "examples" / "demo-teacher.toml").read_text())["train"]["seed"] == 0


@pytest.mark.parametrize("args, adapter", [([], True), (["--teacher", "none"], False)])
def test_rmx_demo_opens_on_the_shipped_teacher_unless_told_none(args, adapter, capsys, monkeypatch):
    """What `rmx demo` asks the app for (the app itself is not run: the TUI tests drive it)."""
    from rmx_tui.app import RmxApp
    from tests.test_cli_score import run_cli

    opened = []
    monkeypatch.setattr(RmxApp, "run", lambda self: opened.append(self.settings))
    code, out, err = run_cli(["demo", *args], capsys, monkeypatch)
    assert code == 0, err
    [settings] = opened
    # fp32 by default: bf16 (auto on a CPU with native bf16) reorders near-ties, and the README's story with them.
    assert settings.base == ModelSpec("demo", dtype="float32") and settings.tour
    if adapter:
        assert settings.teacher == ModelSpec("demo", adapter=str(demo_teacher_path()), dtype="float32")
    else:
        assert settings.teacher == settings.base


def test_rmx_demo_refuses_none_with_a_teacher_adapter(capsys, monkeypatch):
    from tests.test_cli_score import run_cli

    code, out, err = run_cli(["demo", "--teacher", "none", "--teacher-adapter", "x"], capsys, monkeypatch)
    assert code == 2 and "contradict" in err
