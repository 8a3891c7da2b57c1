"""ReasonMaxxer training: the loss math, LoRA targets, the loop, the alarm, checkpoints and exact resume."""

from __future__ import annotations

import errno
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.core.config import ModelSpec
from engine.core.errors import RmxError
from engine.core.records import Rollout

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from a second thread, and a busy 2-core machine makes two spin-wait."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_rollouts(path: Path, problems: int = 6, k: int = 4, vocab: int = 380, prompt_len: int = 12,
                  completion_len: tuple[int, int] = (20, 40), seed: int = 0, mixed: bool = True) -> Path:
    """Synthetic graded rollouts: random token ids, every other sample correct (or none when not mixed)."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        for p in range(problems):
            prompt = tuple(rng.randrange(4, vocab) for _ in range(prompt_len))
            for s in range(k):
                completion = tuple(rng.randrange(4, vocab) for _ in range(rng.randint(*completion_len)))
                correct = mixed and (s + p) % 2 == 0
                rollout = Rollout(f"p{p}", s, prompt, completion, "", "1", None, correct, "eos")
                handle.write(json.dumps(rollout.to_json()) + "\n")
    return path


def _spec(rollouts: Path, **overrides):
    from engine.recipes.train import TrainSpec

    settings = dict(tau="q0.7", grad_accum=2, lr=1e-3, lora_r=4, lora_alpha=8)
    settings.update(overrides)
    return TrainSpec(str(rollouts), **settings)


# --- the loss math -------------------------------------------------------------------------------------------


def test_advantages_are_normalised_per_problem_and_clipped():
    from engine.recipes.train import advantages

    one_of_four = advantages([True, False, False, False])
    std = math.sqrt(0.25 * 0.75)
    assert one_of_four[0] == pytest.approx(0.75 / std, rel=1e-5)
    assert one_of_four[1] == pytest.approx(-0.25 / std, rel=1e-5)
    assert sum(one_of_four) == pytest.approx(0.0, abs=1e-5)
    one_of_twenty = advantages([True] + [False] * 19)
    assert one_of_twenty[0] == 2.5  # 0.95 / 0.218 = 4.36, clipped
    assert one_of_twenty[1] == pytest.approx(-0.05 / math.sqrt(0.05 * 0.95), rel=1e-5)
    assert advantages([True] * 19 + [False], clip=1.0)[-1] == -1.0


def test_bounded_negative_term_is_bounded_below_and_signed_is_not():
    import torch

    from engine.recipes.train import decision_terms

    logp = torch.tensor([0.0, -1e-3, -0.7, -5.0, -50.0, -1e4])
    bounded = decision_terms(logp, -2.0, "bounded")
    assert torch.all(bounded >= 0) and torch.isfinite(bounded).all()
    p = logp.double().exp()
    expected = 2.0 * -torch.log((1 - p).clamp_min(1e-6))  # |A|·(−log(1 − p)), in float64
    assert torch.allclose(bounded.double(), expected, rtol=1e-3)
    signed = decision_terms(logp, -2.0, "signed")
    assert signed[-1] == pytest.approx(-2e4)  # −A·log p = 2·(−1e4): no lower bound as p → 0
    # Positive advantages are the same cross-entropy under both variants.
    assert torch.equal(decision_terms(logp, 1.5, "bounded"), decision_terms(logp, 1.5, "signed"))
    # Minimising the bounded term lowers p: its gradient w.r.t. log p is positive.
    x = torch.tensor([-0.5], requires_grad=True)
    decision_terms(x, -1.0, "bounded").sum().backward()
    assert x.grad.item() > 0


def test_loss_terms_equal_a_float64_hand_computation():
    import numpy as np
    import torch

    from engine.recipes.train import loss_terms

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 7, generator=generator)
    base = torch.randn(6, 7, generator=generator)
    targets = torch.tensor([1, 4, 0, 6, 2, 3])
    decision = torch.tensor([False, True, False, False, True, False])
    anchor = torch.tensor([True, False, True, False, False, True])  # row 3: prompt row excluded from both
    advantage = -1.3
    terms = loss_terms(logits, base, targets, decision, anchor, advantage, kl_weight=0.2)

    lg, bs = logits.double().numpy(), base.double().numpy()
    logp = lg - np.log(np.exp(lg).sum(1, keepdims=True))
    blogp = bs - np.log(np.exp(bs).sum(1, keepdims=True))
    dec = np.mean([-advantage * logp[t, targets[t]] for t in (1, 4)])
    kl = np.mean([np.sum(np.exp(blogp[t]) * (blogp[t] - logp[t])) for t in (0, 2, 5)])
    assert (terms.n_dec, terms.n_anchor) == (2, 3)
    assert float(terms.dec) == pytest.approx(dec, rel=1e-6)
    assert float(terms.anchor) == pytest.approx(kl, rel=1e-5)
    assert float(terms.loss) == pytest.approx(dec + 0.2 * kl, rel=1e-6)
    same = loss_terms(base, base, targets, decision, anchor, advantage)
    assert float(same.anchor) == pytest.approx(0.0, abs=1e-6)  # KL of a distribution to itself


@pytest.mark.parametrize("softcap, head_bias", [(None, False), (None, True), (3.0, False)])
def test_chunked_backward_matches_the_full_logits_reference(tiny_llama, softcap, head_bias):
    """Chunked loss + one body backward gives the same gradients as autograd over full logits: with a linear head
    through the base's reduced rows (entropy, Σ p_b·W, Σ p_b·b with a biased head), with a soft-capping one through
    its hidden states."""
    import torch

    from engine.core.models import load_model
    from engine.core.scoring import logit_transform, hidden_states
    from engine.recipes.basepass import ChunkedHead
    from engine.recipes.train import Example, _Sequence, _sequence_backward, lora_model, loss_terms

    loaded = load_model(ModelSpec(str(tiny_llama), dtype="float32"))
    loaded.core.config.final_logit_softcapping = softcap  # read by logit_transform on both sides
    spec = _loss_only_spec()
    model = lora_model(loaded.module, spec, str(tiny_llama))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    core = model.get_base_model()
    head, transform = core.get_output_embeddings(), logit_transform(core.config)
    if head_bias:
        head.bias = torch.nn.Parameter(torch.randn(head.weight.shape[0], generator=torch.Generator().manual_seed(5)),
                                       requires_grad=False)
    rng = random.Random(1)
    ids = tuple(rng.randrange(4, 380) for _ in range(30))
    ex = Example("p", 0, ids, 10, -1.2, False, tuple(rng.uniform(0, 3) for _ in range(20)))
    seq = _Sequence(ex, 1.5, "all", "cpu")
    params = [p for p in model.parameters() if p.requires_grad]

    chunked_head = ChunkedHead(core, 3 * int(head.weight.shape[0]))  # 3 rows a chunk
    stats = _sequence_backward(model, chunked_head, seq, ex.advantage, spec, 0.5)
    chunked = [p.grad.clone() for p in params]
    model.zero_grad()

    mask = torch.ones_like(seq.ids)
    with torch.no_grad(), model.disable_adapter():
        base_logits = transform(head(hidden_states(model, seq.ids, mask)[0]))[:-1]
    logits = transform(head(hidden_states(model, seq.ids, mask)[0]))[:-1]
    decision = torch.zeros(29, dtype=torch.bool)
    decision[9:] = torch.tensor(ex.decision(1.5))
    terms = loss_terms(logits, base_logits, seq.ids[0, 1:], decision, ~decision, ex.advantage, 0.2, "bounded")
    (terms.loss * 0.5).backward()
    for got, want in zip(chunked, (p.grad for p in params)):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)
    assert stats["dec"] == pytest.approx(terms.dec.item(), rel=1e-5)
    assert stats["anchor"] == pytest.approx(terms.anchor.item(), rel=1e-4)
    assert stats["delta_n"] == sum(ex.decision(1.5))


def _loss_only_spec():
    from engine.recipes.train import TrainSpec

    return TrainSpec("unused.jsonl", negative="bounded", lora_r=4, lora_alpha=8)


# --- LoRA targets --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch, expected", [
    ("llama", {"q_proj", "k_proj", "v_proj", "o_proj"}),
    ("gpt2", {"c_attn", "c_proj"}),
])
def test_lora_targets_only_attention_projections(arch, expected, request):
    from transformers import AutoModelForCausalLM

    from engine.recipes.train import attention_targets, lora_model

    folder = request.getfixturevalue(f"tiny_{arch}")
    core = AutoModelForCausalLM.from_pretrained(folder)
    regex = attention_targets(core)
    model = lora_model(core, _loss_only_spec(), "base-name")
    adapted = {n.split(".lora_A")[0].replace("base_model.model.", "")
               for n, _ in model.named_parameters() if "lora_A" in n}
    assert {n.rsplit(".", 1)[1] for n in adapted} == expected
    assert all(".attn." in n or ".self_attn." in n for n in adapted)  # GPT-2's mlp.c_proj is left alone
    assert len(adapted) == 2 * len(expected)  # both layers
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    assert model.peft_config["default"].base_model_name_or_path == "base-name"
    assert model.peft_config["default"].target_modules == regex  # a regex over full module paths


def test_lora_targets_matching_nothing_is_a_clear_error(tiny_llama):
    from transformers import AutoModelForCausalLM

    from engine.recipes.train import TrainSpec, lora_model

    core = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with pytest.raises(RmxError, match="matches no module"):
        lora_model(core, TrainSpec("x.jsonl", lora_targets=r".*\.nonexistent_proj"), "b")
    with pytest.raises(RmxError, match="not a valid regex"):
        TrainSpec("x.jsonl", lora_targets="(")


# --- the loop ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_train_writes_a_peft_adapter_the_loader_accepts(arch, request, tmp_path):
    import torch

    from engine.core.models import load_model
    from engine.recipes.train import train

    folder = request.getfixturevalue(f"tiny_{arch}")
    rollouts = make_rollouts(tmp_path / "r.jsonl")
    events: list[dict] = []
    result = train(ModelSpec(str(folder), dtype="float32"), _spec(rollouts), tmp_path / "out", emit=events.append)
    assert result.state == "done" and result.step == result.total == 12
    steps = [e for e in events if "train/loss" in e and "train/alarm" not in e]
    assert len(steps) == 12
    for key in ("train/loss", "train/loss_dec", "train/loss_anchor", "train/decision_frac", "train/dlogp_pos",
                "train/dlogp_neg", "train/lr", "train/tok_s", "train/grad_norm", "train/step", "train/total"):
        assert key in steps[-1]
    # B = 0 at init: policy = base. The anchor is lse − E_b[z] − H_b per row, three fp32 terms of the logits' size,
    # so "zero" is zero to fp32 rounding (~1e-7), not bit for bit.
    assert steps[0]["train/loss_anchor"] == pytest.approx(0.0, abs=1e-6)
    assert steps[0]["train/lr"] == 0.0 and max(e["train/lr"] for e in steps) == pytest.approx(1e-3)
    config = json.loads((Path(result.adapter) / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(folder) and config["r"] == 4
    assert (Path(result.adapter) / "adapter_model.safetensors").exists()
    base = load_model(ModelSpec(str(folder), dtype="float32"))
    tuned = load_model(ModelSpec(str(folder), dtype="float32", adapter=result.adapter))
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad(), tuned.active() as module:
        tuned_logits = module(ids).logits
    with torch.no_grad():
        assert not torch.allclose(base.module(ids).logits, tuned_logits)


def test_no_mixed_success_is_an_error_and_leaves_no_run(tiny_llama, tmp_path):
    from engine.recipes.train import train

    rollouts = make_rollouts(tmp_path / "r.jsonl", mixed=False, k=8)
    with pytest.raises(RmxError, match=r"no training signal: 0 of 6 problems have mixed success at K=8"):
        train(ModelSpec(str(tiny_llama)), _spec(rollouts), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_train_job_without_signal_is_refused_before_its_run_dir_exists(tiny_llama, tmp_path):
    from dataclasses import asdict

    import engine.jobs.kinds  # noqa: F401  (registers the job kinds)
    from engine.jobs.store import list_runs, submit_job

    rollouts = make_rollouts(tmp_path / "r.jsonl", mixed=False, k=8)
    model = asdict(ModelSpec(str(tiny_llama)))
    with pytest.raises(RmxError, match=r"no training signal: 0 of 6 problems have mixed success at K=8"):
        submit_job("train", {"model": model, "train": asdict(_spec(rollouts))})
    with pytest.raises(RmxError, match="rollouts file not found"):
        submit_job("pool", {"pool": {"rollouts": str(tmp_path / "missing.jsonl")}})
    assert list_runs() == []


def test_tau_above_every_entropy_warns_with_quantiles(tiny_llama, tmp_path):
    from engine.recipes.train import train

    events: list[dict] = []
    result = train(ModelSpec(str(tiny_llama), dtype="float32"), _spec(make_rollouts(tmp_path / "r.jsonl"), tau="50",
                                                                       max_steps=2),
                   tmp_path / "out", emit=events.append)
    warnings = [e["train/warning"] for e in events if "train/warning" in e]
    assert warnings and "marks no decision point" in warnings[0] and "p97" in warnings[0]
    assert result.decision_frac == 0.0


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_llama, tmp_path, monkeypatch):
    import engine.recipes.train as train_module

    calls = {"n": 0}
    real = train_module.decision_terms

    def poisoned(target_logp, advantage, negative="signed"):
        calls["n"] += 1
        out = real(target_logp, advantage, negative)
        return out * float("nan") if calls["n"] > 10 else out  # sequences 11+ (step 6 on) go NaN

    monkeypatch.setattr(train_module, "decision_terms", poisoned)
    events: list[dict] = []
    result = train_module.train(ModelSpec(str(tiny_llama), dtype="float32"),
                                _spec(make_rollouts(tmp_path / "r.jsonl"), checkpoint_every=2),
                                tmp_path / "out", emit=events.append)
    assert result.state == "diverged" and "nan" in result.reason
    assert result.step == 5 and result.adapter is None
    assert result.last_checkpoint.endswith("step-000004")
    assert any("train/alarm" in e for e in events)
    assert not (tmp_path / "out" / "adapter").exists()


def test_signed_loss_runs_away_where_the_bounded_one_does_not(tiny_llama, tmp_path):
    """Repeating one problem's wrong rollouts drives −A·log p down without bound; unlikelihood stays ≥ 0."""
    from engine.recipes.train import train

    rollouts = make_rollouts(tmp_path / "r.jsonl", problems=1, k=4, completion_len=(10, 14))
    settings = dict(lr=0.05, warmup_ratio=0.0, epochs=30, grad_accum=4, tau="q0.5", alarm_abs=4.5)
    model = ModelSpec(str(tiny_llama), dtype="float32")
    signed = train(model, _spec(rollouts, negative="signed", **settings), tmp_path / "signed")
    assert signed.state == "diverged" and "alarm-abs" in signed.reason and signed.step < 10
    losses: list[float] = []
    bounded = train(model, _spec(rollouts, negative="bounded", max_steps=8, **settings), tmp_path / "bounded",
                    emit=lambda e: losses.append(e["train/loss"]) if "train/step" in e else None)
    assert bounded.state == "done" and all(loss >= 0 for loss in losses)


def test_alarm_rules():
    from engine.recipes.loop import divergence
    from engine.recipes.train import TrainSpec

    def _alarm(loss, grad_norm, history, spec):
        return divergence(loss, grad_norm, history, spec.alarm_abs, spec.alarm_ratio)

    spec = TrainSpec("x.jsonl")
    calm = [1.0, -0.5, 0.8, 1.2, -1.1, 0.9, 1.0, 0.7, -0.6, 1.3]
    assert _alarm(0.9, 1.0, calm, spec) is None
    assert "nan" in _alarm(float("nan"), 1.0, calm, spec)
    assert "gradient norm is inf" in _alarm(1.0, float("inf"), calm, spec)
    assert "running median" in _alarm(-25.0, 1.0, calm, spec)  # 25 > 20 × max(median |loss|, 1)
    assert _alarm(-25.0, 1.0, calm[:5], spec) is None  # too little history for the relative test
    assert "alarm-abs" in _alarm(-414.0, 1.0, calm[:5], spec)  # the public fork's divergence
    off = TrainSpec("x.jsonl", alarm_abs=0, alarm_ratio=0)
    assert _alarm(-414.0, 1.0, calm, off) is None


def test_orders_and_positive_only(tiny_llama, tmp_path):
    from engine.recipes.train import _order, _prepare, Example

    rollouts_path = make_rollouts(tmp_path / "r.jsonl")
    from engine.core.records import read_rollouts

    rollouts = read_rollouts(rollouts_path)
    chosen, counts = _prepare(rollouts, _spec(rollouts_path, objective="positive-only"), 512)
    assert chosen and all(adv > 0 for _, adv in chosen) and all(r.correct for r, _ in chosen)
    examples = [Example("p", i, (1, 2, 3, 4), 2, adv, adv > 0, ent)
                for i, (adv, ent) in enumerate([(1.0, (0.1, 0.1)), (-2.0, (3.0, 0.1)), (0.5, (3.0, 3.0))])]
    assert _order(examples, _spec(rollouts_path, order="clarity"), (1.0, 1.0)) == [1, 2, 0]
    shuffled = _order(examples, _spec(rollouts_path, epochs=2), (1.0, 1.0))
    assert sorted(shuffled) == [0, 0, 1, 1, 2, 2]
    assert shuffled == _order(examples, _spec(rollouts_path, epochs=2), (1.0, 1.0))  # seeded


def test_completion_only_anchor_skips_prompt_rows():
    from engine.recipes.train import Example, _Sequence

    ex = Example("p", 0, tuple(range(4, 14)), 4, 1.0, True, (0.1, 2.0, 0.1, 0.1, 0.1, 0.1))
    everywhere = _Sequence(ex, 1.0, "all", "cpu")
    completion = _Sequence(ex, 1.0, "completion", "cpu")
    assert (everywhere.n_dec, everywhere.n_anchor) == (1, 8)
    assert (completion.n_dec, completion.n_anchor) == (1, 5)


# --- checkpoints and resume ----------------------------------------------------------------------------------


_RUN = """
import sys
from engine.core.config import ModelSpec
from engine.recipes.train import TrainSpec, train
spec = TrainSpec(sys.argv[2], tau="q0.7", grad_accum=2, lr=1e-3, lora_r=4, lora_alpha=8, checkpoint_every=2)
train(ModelSpec(sys.argv[1], dtype="float32"), spec, sys.argv[3], resume=sys.argv[4] == "1")
"""


def _run(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", _RUN, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_resume_after_sigkill_is_bit_identical(tiny_llama, tmp_path):
    """Kill a training process mid-run, resume it, and get the uninterrupted run's adapter byte for byte."""
    from engine.recipes.train import train

    rollouts = make_rollouts(tmp_path / "r.jsonl", problems=10, k=6)  # 60 sequences → 30 steps
    victim = _run([str(tiny_llama), str(rollouts), str(tmp_path / "cut"), "0"])
    checkpoints = tmp_path / "cut" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and victim.poll() is None:
        if checkpoints.is_dir() and any(p.name >= "step-000006" for p in checkpoints.iterdir()):
            break
        time.sleep(0.005)
    assert victim.poll() is None, "training finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "cut" / "adapter").exists()
    model = ModelSpec(str(tiny_llama), dtype="float32")
    spec = _spec(rollouts, checkpoint_every=2)
    events: list[dict] = []
    resumed = train(model, spec, tmp_path / "cut", resume=True, emit=events.append)
    assert resumed.state == "done" and resumed.step == 30
    assert [e["train/resumed_from"] for e in events if "train/resumed_from" in e][0] >= 6
    reference = train(model, spec, tmp_path / "ref")
    want = (Path(reference.adapter) / "adapter_model.safetensors").read_bytes()
    got = (Path(resumed.adapter) / "adapter_model.safetensors").read_bytes()
    assert got == want


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tiny_llama, tmp_path, monkeypatch):
    import engine.recipes.loop as loop_module
    import engine.recipes.train as train_module

    real = loop_module._write_trainer_state
    calls = {"n": 0}

    def full_disk(state, path):
        calls["n"] += 1
        if calls["n"] == 2:
            path.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(state, path)

    monkeypatch.setattr(loop_module, "_write_trainer_state", full_disk)
    out = tmp_path / "out"
    rollouts = make_rollouts(tmp_path / "r.jsonl")
    with pytest.raises(RmxError, match=r"^no space left on .* while writing \S*step-000004 \(\S+ MB needed, \S+ MB "
                                       r"free\); the last good checkpoint is step-000002; free space and rerun with "
                                       r"--resume$"):
        train_module.train(ModelSpec(str(tiny_llama), dtype="float32"), _spec(rollouts, checkpoint_every=2), out)
    kept = out / "checkpoints" / "step-000002"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]  # no temp dir left
    assert (kept / "trainer_state.pt").stat().st_size > 1000
    assert train_module.latest_checkpoint(out) == kept
    monkeypatch.setattr(loop_module, "_write_trainer_state", real)
    result = train_module.train(ModelSpec(str(tiny_llama), dtype="float32"), _spec(rollouts, checkpoint_every=2),
                                out, resume=True)
    assert result.state == "done" and result.step == 12


def test_resume_guards(tiny_llama, tmp_path):
    from engine.recipes.train import train

    rollouts = make_rollouts(tmp_path / "r.jsonl")
    out = tmp_path / "out"
    spec = ModelSpec(str(tiny_llama), dtype="float32")
    first = train(spec, _spec(rollouts, max_steps=3), out)
    with pytest.raises(RmxError, match="already holds a training run"):
        train(spec, _spec(rollouts, max_steps=3), out)
    assert train(spec, _spec(rollouts, max_steps=3), out, resume=True) == first  # finished: nothing to redo
    with pytest.raises(RmxError, match="different config"):
        train(spec, _spec(rollouts, max_steps=3, lr=5e-4), out, resume=True)


def test_cached_base_pass_trains_the_same_adapter_as_recomputing_the_base(tiny_llama, tmp_path):
    from engine.recipes.train import train

    rollouts = make_rollouts(tmp_path / "r.jsonl")
    model = ModelSpec(str(tiny_llama), dtype="float32")
    cached = train(model, _spec(rollouts, max_steps=4), tmp_path / "cached")
    fresh = train(model, _spec(rollouts, max_steps=4, cache_base=False), tmp_path / "fresh")
    assert (tmp_path / "cached" / "base_pass" / "expected.npy").exists()
    assert not (tmp_path / "fresh" / "base_pass" / "expected.npy").exists()
    want = (Path(fresh.adapter) / "adapter_model.safetensors").read_bytes()
    assert (Path(cached.adapter) / "adapter_model.safetensors").read_bytes() == want
