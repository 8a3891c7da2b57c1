"""Exact scoring against an independent float64 reference, on two architectures, plus Table 2 arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from engine.core.config import ModelSpec, ScoreSpec, Tau
from engine.core.models import load_model, load_pair
from engine.core.prompts import completion_ids, prompt_ids
from engine.core.records import ScoredRollout, TeacherPick, TokenScore, TopToken
from engine.core.scoring import lse_entropy, classify, gate_quality, score, summarize

PROBLEM = "What is 12 + 30?"
COMPLETION = "12 + 30 = 42, so the answer is \\boxed{42}."


def reference(model_dir, prompt, completion, top_k=5, adapter=None):
    """Full float64 logits from a fresh fp64 copy of the model: the ground truth for every number."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0].double()
    rows = logits[len(prompt) - 1 : len(prompt) + len(completion) - 1]
    logp = torch.log_softmax(rows, -1)
    entropy = -(logp.exp() * logp).sum(-1)
    target = torch.tensor(completion)
    token_logp = logp[torch.arange(len(completion)), target]
    top = torch.topk(logp, top_k, -1)
    return dict(entropy=entropy, logprob=token_logp, top_ids=top.indices, top_logp=top.values, logits=rows)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_entropy_logprob_rank_topk_match_float64_reference(fixture, request):
    folder = request.getfixturevalue(fixture)
    model = load_model(ModelSpec(str(folder), dtype="float32"))
    prompt = prompt_ids(model.tokenizer, PROBLEM, "chat")
    completion = completion_ids(model.tokenizer, COMPLETION)
    rollout = score(model, [(prompt, completion)], spec=ScoreSpec(top_k=5, chunk_elements=model.vocab_size * 3))[0]
    ref = reference(folder, prompt, completion)
    assert len(rollout.tokens) == len(completion)
    for pos, token in enumerate(rollout.tokens):
        assert token.pos == pos and token.id == completion[pos]
        assert token.entropy == pytest.approx(ref["entropy"][pos].item(), abs=1e-4)
        assert token.logprob == pytest.approx(ref["logprob"][pos].item(), abs=1e-4)
        expected_rank = int((ref["logits"][pos] > ref["logits"][pos, completion[pos]]).sum()) + 1
        assert token.rank == expected_rank
        assert [t.id for t in token.top] == ref["top_ids"][pos].tolist()
        for alt, ref_lp in zip(token.top, ref["top_logp"][pos].tolist()):
            assert alt.logprob == pytest.approx(ref_lp, abs=1e-4)


def test_known_entropies_in_bits():
    for probs, bits in (([0.94, 0.04, 0.01, 0.01], 0.4025), ([0.28, 0.27, 0.25, 0.15, 0.05], 2.1509)):
        logits = torch.log(torch.tensor([probs], dtype=torch.float32)) + 3.0  # shift: entropy is shift-invariant
        _, entropy = lse_entropy(logits)
        assert entropy.item() / math.log(2) == pytest.approx(bits, abs=5e-4)


def test_chunk_size_and_batching_do_not_change_results(tiny_llama):
    model = load_model(ModelSpec(str(tiny_llama), dtype="float32"))
    tok = model.tokenizer
    pairs = [
        (prompt_ids(tok, PROBLEM, "chat"), completion_ids(tok, COMPLETION)),
        (prompt_ids(tok, "2x + 3 = 11", "qwen"), completion_ids(tok, "So x = 4.")),
        (prompt_ids(tok, "A box holds 6 eggs.", "raw"), completion_ids(tok, "6 * 2 = 12 eggs in two boxes")),
    ]
    one_by_one = score(model, pairs, spec=ScoreSpec(chunk_elements=1 << 24))
    batched = score(model, pairs, spec=ScoreSpec(chunk_elements=model.vocab_size), batch_size=3)
    for a, b in zip(one_by_one, batched):
        assert [t.id for t in a.tokens] == [t.id for t in b.tokens]
        for x, y in zip(a.tokens, b.tokens):
            assert x.entropy == pytest.approx(y.entropy, abs=1e-5)
            assert x.rank == y.rank and [t.id for t in x.top] == [t.id for t in y.top]


def test_should_stop_is_asked_between_chunks_and_stops_the_scoring(tiny_llama):
    from engine.core.errors import Interrupted

    model = load_model(ModelSpec(str(tiny_llama), dtype="float32"))
    tok = model.tokenizer
    pair = (prompt_ids(tok, PROBLEM, "chat"), completion_ids(tok, COMPLETION))
    asked: list[int] = []

    def stop_on_third() -> bool:
        asked.append(1)
        return len(asked) == 3

    spec = ScoreSpec(chunk_elements=model.vocab_size)  # one position a chunk
    with pytest.raises(Interrupted, match="scoring stopped"):
        score(model, [pair], spec=spec, should_stop=stop_on_third)
    assert len(asked) == 3  # after the forward pass (twice: base, teacher slot) and before the first chunk
    everything = score(model, [pair], spec=spec, should_stop=lambda: asked.append(1) or False)
    assert len(asked) == 3 + 2 + len(pair[1])  # then once per chunk
    assert len(everything[0].tokens) == len(pair[1])


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_teacher_equal_to_base_is_all_unshifted(fixture, request):
    folder = str(request.getfixturevalue(fixture))
    base, teacher = load_pair(ModelSpec(folder, dtype="float32"), ModelSpec(folder, dtype="float32"))
    tok = base.tokenizer
    rollout = score(base, [(prompt_ids(tok, PROBLEM, "chat"), completion_ids(tok, COMPLETION))], teacher)[0]
    assert {t.cls for t in rollout.tokens} == {"unshifted"}
    table = summarize([rollout])
    assert table.unshifted_pct == 100.0 and table.reranked_pct == 0.0 and table.shifted_pct == 0.0


@pytest.mark.parametrize(("fixture", "adapter"), [("tiny_llama", "tiny_llama_adapter"), ("tiny_gpt2", "tiny_gpt2_adapter")])
def test_teacher_as_base_plus_adapter_shares_weights_and_matches_reference(fixture, adapter, request):
    folder = str(request.getfixturevalue(fixture))
    adapter_dir = str(request.getfixturevalue(adapter))
    base, teacher = load_pair(ModelSpec(folder, dtype="float32"), ModelSpec(folder, adapter=adapter_dir, dtype="float32"))
    assert base.module is teacher.module  # one copy of the weights, the adapter toggled per call
    tok = base.tokenizer
    prompt, completion = prompt_ids(tok, PROBLEM, "chat"), completion_ids(tok, COMPLETION)
    rollout = score(base, [(prompt, completion)], teacher)[0]
    base_ref = reference(folder, prompt, completion)
    teacher_ref = reference(folder, prompt, completion, adapter=adapter_dir)
    for pos, token in enumerate(rollout.tokens):
        assert token.entropy == pytest.approx(base_ref["entropy"][pos].item(), abs=1e-4)
        assert token.teacher.entropy == pytest.approx(teacher_ref["entropy"][pos].item(), abs=1e-4)
        teacher_id = int(teacher_ref["logits"][pos].argmax())
        assert token.teacher.id == teacher_id
        expected_rank = int((base_ref["logits"][pos] > base_ref["logits"][pos, teacher_id]).sum()) + 1
        assert token.teacher.rank_in_base == expected_rank
        assert token.cls == classify(teacher_id, int(base_ref["logits"][pos].argmax()), expected_rank)


def test_classify():
    assert classify(5, 5, 1) == "unshifted"
    assert classify(5, 6, 2) == "reranked"
    assert classify(5, 6, 5) == "reranked"
    assert classify(5, 6, 6) == "shifted"


def _token(pos, entropy, cls, rank_in_base=1):
    return TokenScore(pos=pos, id=pos, text="x", logprob=-1.0, entropy=entropy, rank=1,
                      top=(TopToken(0, "x", -1.0),), teacher=TeacherPick(pos, rank_in_base, 1.0), cls=cls)


def test_table2_arithmetic():
    tokens = (
        _token(0, 0.1, "unshifted"), _token(1, 0.3, "unshifted"), _token(2, 2.0, "reranked", 2),
        _token(3, 3.0, "reranked", 4), _token(4, 5.0, "shifted", 9),
    )
    table = summarize([ScoredRollout(prompt_ids=(1,), tokens=tokens)], Tau(1.0))
    assert table.tokens == 5
    assert table.reranked_pct == pytest.approx(40.0)
    assert table.shifted_pct == pytest.approx(20.0)
    assert table.mean_teacher_rank_reranked == pytest.approx(3.0)
    assert table.mean_entropy_reranked == pytest.approx(2.5)
    assert table.mean_entropy_unshifted == pytest.approx(0.2)
    assert table.entropy_ratio == pytest.approx(12.5)
    assert table.above_tau_pct == pytest.approx(60.0)
    quality = gate_quality(tokens, 1.0)
    assert (quality.gated, quality.disagreements, quality.hits) == (3, 3, 3)
    assert quality.precision == 1.0 and quality.recall == 1.0


def test_tau_parsing_and_quantiles():
    assert Tau.parse("1.4") == Tau(1.4)
    assert Tau.parse("q0.5").resolve([1.0, 2.0, 3.0]) == pytest.approx(2.0)
    assert Tau.parse("q0.75").resolve([0.0, 1.0, 2.0, 3.0, 4.0]) == pytest.approx(3.0)
    from engine.core.errors import RmxError

    for bad in ("abc", "q1.5", "q", "-1", "nan"):
        with pytest.raises(RmxError):
            Tau.parse(bad)


def test_memory_bound_chunk_never_holds_full_logits():
    from engine.core.scoring import chunk_positions

    spec = ScoreSpec()
    positions = chunk_positions(152_064, spec)
    assert positions * 152_064 <= spec.chunk_elements
    assert positions * 152_064 * 4 < 80 * 2**20  # under 80 MB of fp32 per chunk at a Qwen vocabulary


def test_ranks_count_strictly_greater_logits_including_ties_and_infinities():
    import torch

    from engine.core.scoring import _ranks

    logits = torch.tensor([[0.5, 2.0, 2.0, -1.0, float("-inf")],
                           [1e-30, 0.0, -1e-30, 3.0, 3.0],
                           [float("-inf"), 1.0, float("-inf"), 0.0, 2.0]])
    for k in (1, 2, 5):  # k-th largest above, at and below the reference: counted among the top-k or in full
        top_values = torch.topk(logits, k, dim=-1).values
        for column in range(5):
            reference = logits[:, column:column + 1]
            want = (logits > reference).sum(-1) + 1
            assert _ranks(logits, reference, top_values, torch.empty_like(logits)).tolist() == want.tolist()


def test_ranks_among_the_top_k_equal_full_counts_on_rows_with_ties():
    import torch

    from engine.core.scoring import _ranks

    generator = torch.Generator().manual_seed(0)
    logits = torch.randint(-6, 6, (64, 300), generator=generator).float() / 2  # many ties
    references = logits.gather(1, torch.randint(0, 300, (64, 1), generator=generator))
    held = torch.arange(64) % 3 != 0
    references[held] = logits.amax(-1, keepdim=True)[held]  # two thirds of the rows hold their argmax
    want = (logits > references).sum(-1) + 1
    top_values = torch.topk(logits, 5, dim=-1).values
    outside = int((references[:, 0] < top_values[:, -1]).sum())
    assert 0 < 2 * outside <= 64  # counted among the top-5 for most rows, in full for the rest
    assert _ranks(logits, references, top_values, torch.empty_like(logits)).tolist() == want.tolist()
