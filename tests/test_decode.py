"""The decoder against HF generate and exact scoring: greedy, forks, cache reuse, sampling, batches, stops, errors."""

from __future__ import annotations

import pytest
import torch

from engine.core import decode as decode_module
from engine.core.config import ModelSpec
from engine.core.decode import DecodeSession, SamplingSpec, Step, decode_batch
from engine.core.errors import RmxError
from engine.core.models import load_model
from engine.core.scoring import score

PROMPTS = ["Sam has 4 pencils and gets 3 more.", "What is 12 + 30?", "Let x be a number such that"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; on a busy CPU, OpenMP spin-waits make two threads crawl."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def base(request, tiny_llama, tiny_gpt2):
    folder = {"llama": tiny_llama, "gpt2": tiny_gpt2}[request.param]
    return load_model(ModelSpec(str(folder), dtype="float32"))


@pytest.fixture(scope="module")
def llama(tiny_llama):
    return load_model(ModelSpec(str(tiny_llama), dtype="float32"))


def ids_of(model, text):
    return model.tokenizer(text)["input_ids"]


def hf_greedy(model, ids, max_new_tokens):
    with model.active() as module, torch.inference_mode():
        out = module.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              max_new_tokens=max_new_tokens, do_sample=False,
                              eos_token_id=sorted(model.eos_ids), pad_token_id=model.tokenizer.pad_token_id)
    return out[0, len(ids):].tolist()


def greedy(max_new_tokens=12, **kw):
    return SamplingSpec(max_new_tokens=max_new_tokens, **kw)


def token_ids(steps):
    return [s.id for s in steps]


class FeedSpy:
    """Counts the tokens each forward pass feeds, to prove what a decode re-prefills."""

    def __init__(self, monkeypatch):
        self.widths: list[int] = []
        original = decode_module._Track._forward

        def spy(track, ids, mask, fresh):
            self.widths.append(int(ids.shape[1]))
            return original(track, ids, mask, fresh)

        monkeypatch.setattr(decode_module._Track, "_forward", spy)


@pytest.mark.parametrize("text", PROMPTS)
def test_greedy_equals_hf_generate(base, text):
    prompt = ids_of(base, text)
    steps = list(DecodeSession(base).decode(prompt, greedy(16)))
    assert token_ids(steps) == hf_greedy(base, prompt, 16)
    assert [s.pos for s in steps] == list(range(len(steps)))
    assert all(s.source == "base" and s.row == 0 for s in steps)
    assert steps[-1].end in ("eos", "length") and all(s.end is None for s in steps[:-1])


def test_force_then_continue_equals_hf_generate_from_prefix(base):
    prompt = ids_of(base, PROMPTS[0])
    rollout = token_ids(DecodeSession(base).decode(prompt, greedy(16)))
    t = 6
    session = DecodeSession(base)
    first = list(session.decode(prompt, greedy(16)))
    # A token the base would not pick: its third most likely one at position t.
    x = first[t].top[2].id
    steps = list(session.decode(prompt, greedy(10), rollout=rollout, force=[(t, x)]))
    assert steps[0].pos == t and steps[0].id == x and steps[0].source == "forced"
    assert [s.pos for s in steps] == list(range(t, t + len(steps)))
    assert token_ids(steps[1:]) == hf_greedy(base, prompt + rollout[:t] + [x], 9)[: len(steps) - 1]


def test_a_rollout_is_continued_and_later_forced_positions_wait_their_turn(llama):
    prompt = ids_of(llama, PROMPTS[0])
    rollout = [11, 12, 13]
    steps = list(DecodeSession(llama).decode(prompt, greedy(6), rollout=rollout, force=[(5, 9)]))
    assert [s.pos for s in steps] == [3, 4, 5, 6, 7, 8]
    assert [(s.pos, s.id) for s in steps if s.source == "forced"] == [(5, 9)]
    assert token_ids(steps[:2]) == hf_greedy(llama, prompt + rollout, 2)


def test_fork_reuses_the_cache_and_equals_a_fresh_decode(base, monkeypatch):
    prompt = ids_of(base, PROMPTS[1])
    session = DecodeSession(base)
    rollout = token_ids(session.decode(prompt, greedy(20)))
    assert session.cached()[: len(prompt) + 19] == tuple(prompt + rollout[:19])
    t, x = 9, rollout[9] + 1
    spy = FeedSpy(monkeypatch)
    reused = list(session.decode(prompt, greedy(8), rollout=rollout, force=[(t, x)]))
    # One token to recover the logits at the fork, then one per step: nothing cached is fed again.
    assert spy.widths == [1] * len(reused)
    fresh = list(DecodeSession(base).decode(prompt, greedy(8), rollout=rollout, force=[(t, x)]))
    assert token_ids(reused) == token_ids(fresh)
    assert [s.entropy for s in reused] == pytest.approx([s.entropy for s in fresh], abs=1e-4)
    assert [s.logprob for s in reused] == pytest.approx([s.logprob for s in fresh], abs=1e-4)


def test_prefill_then_fork_feeds_only_the_new_tokens(llama, monkeypatch):
    prompt = ids_of(llama, PROMPTS[0])
    completion = [int(t) for t in torch.randint(5, llama.vocab_size, (64,), generator=torch.Generator().manual_seed(0))]
    session = DecodeSession(llama)
    session.prefill(prompt + completion)
    assert session.cached() == tuple(prompt + completion)
    spy = FeedSpy(monkeypatch)
    steps = list(session.decode(prompt, greedy(3), rollout=completion, force=[(32, 7)]))
    assert spy.widths == [1, 1, 1] and steps[0].id == 7
    cached = list(session.cached()[len(prompt):])
    assert cached == completion[:32] + token_ids(steps[:2])
    # Back on the cached sequence nothing is fed; back on the original rollout only its uncached tail is.
    spy.widths.clear()
    list(session.decode(prompt, greedy(1), rollout=cached))
    assert spy.widths == []
    list(session.decode(prompt, greedy(1), rollout=completion))
    assert spy.widths == [len(completion) - 32]


def test_steps_carry_exact_entropy_logprob_and_top_k_at_temperature_one(base):
    prompt = ids_of(base, PROMPTS[2])
    sampled = SamplingSpec(greedy=False, temperature=0.3, seed=5, max_new_tokens=10)
    steps = list(DecodeSession(base).decode(prompt, sampled, top=5))
    scored = score(base, [(prompt, token_ids(steps))])[0].tokens
    for step, ref in zip(steps, scored, strict=True):
        assert step.entropy == pytest.approx(ref.entropy, abs=1e-4)
        assert step.logprob == pytest.approx(ref.logprob, abs=1e-4)
        assert [t.id for t in step.top] == [t.id for t in ref.top]
        assert step.text == base.token_text(step.id)
    hot = SamplingSpec(greedy=False, temperature=3.0, seed=5, max_new_tokens=1)
    first = next(iter(DecodeSession(base).decode(prompt, hot)))
    assert first.entropy == pytest.approx(steps[0].entropy, abs=1e-5)


def test_sampling_is_reproducible_and_seeded(base):
    prompt = ids_of(base, PROMPTS[0])
    spec = SamplingSpec(greedy=False, temperature=1.0, top_p=0.9, top_k=50, seed=11, max_new_tokens=12)
    session = DecodeSession(base)
    first = token_ids(session.decode(prompt, spec, n=3))
    again = token_ids(session.decode(prompt, spec, n=3))
    fresh = token_ids(DecodeSession(base).decode(prompt, spec, n=3))
    other = token_ids(DecodeSession(base).decode(prompt, SamplingSpec(**{**spec.__dict__, "seed": 12}), n=3))
    assert first == again == fresh
    assert first != other


def test_top_k_one_sampling_is_greedy(base):
    prompt = ids_of(base, PROMPTS[1])
    sampled = SamplingSpec(greedy=False, top_k=1, temperature=0.7, seed=3, max_new_tokens=10)
    tiny_nucleus = SamplingSpec(greedy=False, top_p=1e-6, seed=3, max_new_tokens=10)
    want = token_ids(DecodeSession(base).decode(prompt, greedy(10)))
    assert token_ids(DecodeSession(base).decode(prompt, sampled)) == want
    assert token_ids(DecodeSession(base).decode(prompt, tiny_nucleus)) == want


def test_n_continuations_of_one_fork_share_its_prefill(llama, monkeypatch):
    prompt = ids_of(llama, PROMPTS[0])
    session = DecodeSession(llama)
    rollout = token_ids(session.decode(prompt, greedy(12)))
    spy = FeedSpy(monkeypatch)
    spec = SamplingSpec(greedy=False, seed=1, max_new_tokens=6)
    steps = list(session.decode(prompt, spec, rollout=rollout, force=[(4, 9)], n=4))
    rows = {}
    for step in steps:
        rows.setdefault(step.row, []).append(step)
    assert sorted(rows) == [0, 1, 2, 3]
    assert all(r[0].id == 9 and r[0].source == "forced" and r[0].pos == 4 for r in rows.values())
    assert len({tuple(token_ids(r)) for r in rows.values()}) > 1
    assert spy.widths[0] == 1 and all(w == 1 for w in spy.widths)
    # The session keeps the fork's prefix cached for the next fork.
    assert session.cached() == tuple(prompt + rollout[:4])


def test_batch_rows_equal_single_decodes(base):
    prompts = [ids_of(base, text) for text in PROMPTS] + [ids_of(base, "5 + 4 = 9")]
    steps = list(decode_batch(base, prompts, greedy(10)))
    rows: dict[int, list[Step]] = {}
    for step in steps:
        rows.setdefault(step.row, []).append(step)
    for row, prompt in enumerate(prompts):
        single = list(DecodeSession(base).decode(prompt, greedy(10)))
        assert token_ids(rows[row]) == token_ids(single)
        assert [s.entropy for s in rows[row]] == pytest.approx([s.entropy for s in single], abs=1e-4)


def test_stops_on_eos_stop_string_length_and_context(llama):
    prompt = ids_of(llama, PROMPTS[0])
    eos = min(llama.eos_ids)
    steps = list(DecodeSession(llama).decode(prompt, greedy(10), force=[(0, 5), (2, eos)]))
    assert token_ids(steps)[-1] == eos and steps[-1].end == "eos" and len(steps) == 3

    rollout = list(DecodeSession(llama).decode(prompt, greedy(12)))
    ids = token_ids(rollout)
    target = next(i for i in range(3, 12) if rollout[i].text.strip())
    stop = rollout[target].text.strip()
    steps = list(DecodeSession(llama).decode(prompt, greedy(12, stop=(stop,))))
    text = llama.tokenizer.decode(token_ids(steps))
    assert steps[-1].end == "stop" and stop in text and len(steps) <= target + 1
    assert stop not in llama.tokenizer.decode(token_ids(steps[:-1]))
    assert token_ids(steps) == ids[: len(steps)]

    steps = list(DecodeSession(llama).decode(prompt, greedy(5)))
    assert len(steps) == 5 and steps[-1].end == "length"

    near = [prompt[0]] * (llama.context_length - 2)
    steps = list(DecodeSession(llama).decode(near, greedy(10)))
    assert len(steps) == 2 and steps[-1].end == "context"


def test_a_batch_row_that_fills_the_context_stops_while_the_others_go_on(base):
    short = ids_of(base, PROMPTS[1])
    full = [short[0]] * (base.context_length - 2)
    rows: dict[int, list[Step]] = {}
    for step in decode_batch(base, [full, short], greedy(5)):
        rows.setdefault(step.row, []).append(step)
    assert len(rows[0]) == 2 and rows[0][-1].end == "context"
    assert token_ids(rows[1]) == token_ids(DecodeSession(base).decode(short, greedy(5)))


def test_a_superseded_decode_stops_with_an_error(llama):
    prompt = ids_of(llama, PROMPTS[0])
    session = DecodeSession(llama)
    first = session.decode(prompt, greedy(10))
    next(first)
    list(session.decode(prompt, greedy(3), force=[(0, 9)]))
    with pytest.raises(RmxError, match="superseded"):
        list(first)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(force=[(13, 9)]), r"outside \[0, 12\]"),
        (dict(force=[(-1, 9)]), "negative"),
        (dict(force=[(1, 10_000)]), "outside the vocabulary"),
        (dict(force=[(1, -2)]), "outside the vocabulary"),
        (dict(force=[(1, 9), (1, 8)]), "forced twice"),
        (dict(force=[(1, 9), (40, 8)]), r"outside \[0, 10\]"),
        (dict(force=[("a", 9)]), "pair"),
        (dict(n=0), "n must be a positive integer"),
        (dict(n=-3), "n must be a positive integer"),
        (dict(top=0), "between 1 and the vocabulary"),
        (dict(drive="teacher"), "needs a teacher"),
    ],
)
def test_bad_decode_input_is_a_one_line_error(llama, kwargs, message):
    prompt = ids_of(llama, PROMPTS[0])
    with pytest.raises(RmxError, match=message) as error:
        DecodeSession(llama).decode(prompt, greedy(10), rollout=[11, 12, 13], **kwargs)
    assert "\n" not in str(error.value)


def test_bad_prompts_are_one_line_errors(llama):
    session = DecodeSession(llama)
    with pytest.raises(RmxError, match="longer than|no room"):
        session.decode([5] * (llama.context_length + 3), greedy())
    with pytest.raises(RmxError, match="no room"):
        session.decode([5] * 10, greedy(), rollout=[6] * llama.context_length)
    with pytest.raises(RmxError, match="empty prompt"):
        session.decode([], greedy())
    with pytest.raises(RmxError, match="outside the vocabulary"):
        session.decode([5, llama.vocab_size], greedy())
    with pytest.raises(RmxError, match="no prompts"):
        decode_batch(llama, [], greedy())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=0), "temperature"),
        (dict(top_p=0), "top-p"),
        (dict(top_p=1.5), "top-p"),
        (dict(top_k=-1), "top-k"),
        (dict(max_new_tokens=0), "max-new-tokens"),
        (dict(stop="abc"), "stop strings"),
        (dict(stop=("",)), "stop strings"),
        (dict(seed=1.5), "seed"),
    ],
)
def test_sampling_spec_validates(kwargs, message):
    with pytest.raises(RmxError, match=message):
        SamplingSpec(**kwargs)


def test_sampling_spec_keeps_stop_strings_as_a_tuple():
    assert SamplingSpec(stop=["\n\n", "</s>"]).stop == ("\n\n", "</s>")


def test_step_validates_and_serialises():
    step = Step(pos=3, id=7, text="x", logprob=-1.0, entropy=2.0, top=(), source="teacher")
    assert step.to_json() == {"pos": 3, "id": 7, "text": "x", "source": "teacher", "entropy": 2.0}
    with pytest.raises(RmxError, match="source"):
        Step(pos=0, id=1, text="", logprob=0.0, entropy=0.0, top=(), source="oracle")
    with pytest.raises(RmxError, match="end reason"):
        Step(pos=0, id=1, text="", logprob=0.0, entropy=0.0, top=(), source="base", end="done")
