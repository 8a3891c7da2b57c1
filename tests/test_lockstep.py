"""Batched lockstep decoding: every row equals its one-at-a-time decode, rows leave and join, modes, bad input."""

from __future__ import annotations

import pytest
import torch

from engine.core import lockstep as lockstep_module
from engine.core.batched import ModeBatch, ModeRow, oracle_lockstep, run_rows
from engine.core.config import ModelSpec
from engine.core.decode import DecodeSession, SamplingSpec, Step
from engine.core.errors import RmxError
from engine.core.interventions import run_mode
from engine.core.lockstep import RowQueue, RowRequest, decode_rows
from engine.core.models import load_model, load_pair

TEXTS = ["Sam has 4 pencils and gets 3 more.", "What is 12 + 30?", "Let x be a number such that",
         "5 + 4 = 9", "a b c d e f g h i j k l m n o p", "hi"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def base(request, tiny_llama, tiny_gpt2):
    folder = {"llama": tiny_llama, "gpt2": tiny_gpt2}[request.param]
    return load_model(ModelSpec(str(folder), dtype="float32"))


@pytest.fixture(scope="module", params=["llama-separate", "gpt2-adapter"])
def pair(request, tiny_llama, tiny_llama_teacher, tiny_gpt2, tiny_gpt2_adapter):
    base_folder, teacher = {
        "llama-separate": (tiny_llama, ModelSpec(str(tiny_llama_teacher), dtype="float32")),
        "gpt2-adapter": (tiny_gpt2, ModelSpec(str(tiny_gpt2), adapter=str(tiny_gpt2_adapter), dtype="float32")),
    }[request.param]
    return load_pair(ModelSpec(str(base_folder), dtype="float32"), teacher)


def prompts_of(model, texts=TEXTS):
    return [model.tokenizer(text)["input_ids"] for text in texts]


def by_row(steps) -> dict[int, list[Step]]:
    rows: dict[int, list[Step]] = {}
    for step in steps:
        rows.setdefault(step.row, []).append(step)
    return rows


def same_steps(batched: list[Step], single: list[Step]) -> None:
    assert [(s.pos, s.id, s.source, s.end) for s in batched] == [(s.pos, s.id, s.source, s.end) for s in single]
    assert [s.entropy for s in batched] == pytest.approx([s.entropy for s in single], abs=1e-4)
    assert [s.logprob for s in batched] == pytest.approx([s.logprob for s in single], abs=1e-4)
    assert [[t.id for t in s.top] for s in batched] == [[t.id for t in s.top] for s in single]


def test_rows_equal_single_decodes_while_rows_leave_and_join(base):
    """Left padding, different prompt lengths, rows ending at different steps, and refill from the queue."""
    prompts = prompts_of(base)
    eos = min(base.eos_ids)
    # Forced EOS makes rows end at chosen, different steps, so slots free up mid-run.
    force = [[(2, eos)], [], [(5, eos)], [], [(0, 7), (1, eos)], []]
    spec = SamplingSpec(max_new_tokens=9)
    steps = list(decode_rows(base, RowQueue(RowRequest(prompt=p, force=f) for p, f in zip(prompts, force)), spec,
                             batch_size=3))
    rows = by_row(steps)
    for row, (prompt, forced) in enumerate(zip(prompts, force)):
        same_steps(rows[row], list(DecodeSession(base).decode(prompt, spec, force=forced)))
    assert [len(rows[i]) for i in (0, 2, 4)] == [3, 6, 2]
    # Never more than three rows at once, and a waiting row starts right after the first one ends.
    active, most = set(), 0
    for step in steps:
        active.add(step.row)
        most = max(most, len(active))
        if step.end is not None:
            active.discard(step.row)
    assert most == 3
    first_end = next(i for i, s in enumerate(steps) if s.end is not None)
    joined = next(i for i, s in enumerate(steps) if s.row == 3)
    assert steps[first_end].row == 0 and joined == first_end + 5 and steps[joined - 2].pos == 3


def test_a_row_at_the_context_limit_ends_alone_and_the_rest_go_on(base):
    short, other = prompts_of(base, TEXTS[1:3])
    full = [short[0]] * (base.context_length - 2)
    spec = SamplingSpec(max_new_tokens=6)
    rows = by_row(decode_rows(base, [RowRequest(prompt=full), RowRequest(prompt=short), RowRequest(prompt=other)],
                              spec, batch_size=2))
    assert len(rows[0]) == 2 and rows[0][-1].end == "context"
    same_steps(rows[1], list(DecodeSession(base).decode(short, spec)))
    same_steps(rows[2], list(DecodeSession(base).decode(other, spec)))


def test_sampled_rows_do_not_depend_on_their_neighbours(base):
    spec = SamplingSpec(greedy=False, temperature=0.8, top_p=0.9, seed=3, max_new_tokens=8)
    prompts = prompts_of(base)[:4]
    rows = by_row(decode_rows(base, [RowRequest(prompt=p) for p in prompts], spec, batch_size=2))
    for row, prompt in enumerate(prompts):
        assert [s.id for s in rows[row]] == [s.id for s in DecodeSession(base).decode(prompt, spec)]


@pytest.mark.parametrize("mode", ["base", "teacher", "oracle", "random", "gated", "manual"])
def test_every_mode_in_a_batch_equals_its_one_at_a_time_run(pair, mode):
    base, teacher = pair
    prompts = prompts_of(base)[:5]
    spec = SamplingSpec(max_new_tokens=10)
    force = ((1, 9), (4, 11)) if mode == "manual" else ()
    rows = [ModeRow(mode, tuple(p), gold="7", tau_nats=0.5 if mode == "gated" else None, force=force)
            for p in prompts]
    batched = run_rows(base, teacher, rows, spec, batch_size=2)
    touched = 0
    for prompt, result in zip(prompts, batched):
        from engine.core.config import Tau

        single = run_mode(DecodeSession(base, teacher), mode, prompt, spec, force=force, gold="7",
                          tau=Tau(0.5) if mode == "gated" else None)[0]
        same_steps(list(result.steps), list(single.steps))
        assert (result.text, result.touched, result.correct, result.answer) == (
            single.text, single.touched, single.correct, single.answer)
        touched += len(result.touched)
    if mode not in ("base", "teacher"):
        assert touched, "the tiny teacher should disagree somewhere, or this test proves nothing"


def test_oracle_lockstep_over_many_prompts(pair):
    base, teacher = pair
    prompts = prompts_of(base)
    spec = SamplingSpec(max_new_tokens=8)
    results = oracle_lockstep(base, teacher, prompts, spec, batch_size=4)
    assert [r.mode for r in results] == ["oracle"] * len(prompts)
    for prompt, result in zip(prompts, results):
        single = run_mode(DecodeSession(base, teacher), "oracle", prompt, spec)[0]
        assert result.completion_ids == single.completion_ids and result.touched == single.touched


def test_rows_put_while_the_batch_runs_join_it(pair):
    """A row put from a finished row's result (the random control after its oracle) joins the running batch."""
    base, teacher = pair
    prompts = prompts_of(base)[:3]
    spec = SamplingSpec(max_new_tokens=6)
    batch = ModeBatch(base, teacher, spec, follow=True, batch_size=2)
    for prompt in prompts:
        batch.put(ModeRow("oracle", tuple(prompt), tag="first"))
    seen = []
    for number, row, _result in batch.run():
        seen.append((row.mode, row.tag))
        if row.tag == "first" and number == 0:
            batch.put(ModeRow("base", tuple(prompts[0]), tag="later"))
    assert sorted(seen) == [("base", "later"), ("oracle", "first"), ("oracle", "first"), ("oracle", "first")]


def test_no_quadratic_refeed(base, monkeypatch):
    """Each step feeds one token per row; a joining row's prompt is fed once."""
    widths: list[int] = []
    original = lockstep_module._Track._forward

    def spy(track, ids, mask, fresh):
        widths.append(int(ids.shape[1]))
        return original(track, ids, mask, fresh)

    monkeypatch.setattr(lockstep_module._Track, "_forward", spy)
    prompts = prompts_of(base)[:3]
    list(decode_rows(base, [RowRequest(prompt=p) for p in prompts], SamplingSpec(max_new_tokens=5), batch_size=2))
    prefills = [w for w in widths if w > 1]
    assert sorted(prefills) == sorted([max(len(p) for p in prompts[:2]), len(prompts[2])])
    assert len(widths) - len(prefills) == 4 + 4  # continuations of rows 0–1, then of row 2 alone


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), "--batch-size must be a positive integer"),
    (dict(top=0), "alternatives must be between 1"),
])
def test_bad_lockstep_input_is_a_one_line_error(base, kwargs, message):
    with pytest.raises(RmxError, match=message):
        decode_rows(base, [RowRequest(prompt=prompts_of(base)[0])], SamplingSpec(), **kwargs)


def test_bad_rows_are_refused_before_a_step(pair):
    base, teacher = pair
    with pytest.raises(RmxError, match="empty prompt"):
        decode_rows(base, [RowRequest(prompt=())])
    with pytest.raises(RmxError, match="needs a batch the teacher follows"):
        ModeBatch(base, teacher).put(ModeRow("oracle", (1, 2)))
    with pytest.raises(RmxError, match="needs its oracle's positions"):
        ModeBatch(base, teacher, follow=True).put(ModeRow("random", (1, 2)))
    with pytest.raises(RmxError, match="gated intervention needs τ"):
        ModeRow("gated", (1, 2))


def test_modes_mixed_in_one_batch_equal_their_one_at_a_time_runs(pair):
    """Base, teacher and lockstep rows share one batch; each row's driver and rule are its own."""
    from engine.core.config import Tau

    base, teacher = pair
    prompts = prompts_of(base)[:2]
    spec = SamplingSpec(max_new_tokens=7)
    modes = ["base", "teacher", "oracle", "random", "gated", "manual"]
    rows = [ModeRow(mode, tuple(p), tau_nats=0.5 if mode == "gated" else None,
                    force=((2, 5),) if mode == "manual" else ()) for p in prompts for mode in modes]
    for row, result in zip(rows, run_rows(base, teacher, rows, spec, batch_size=4)):
        single = run_mode(DecodeSession(base, teacher), row.mode, list(row.prompt), spec, force=row.force,
                          tau=Tau(0.5) if row.mode == "gated" else None)[0]
        same_steps(list(result.steps), list(single.steps))
        assert result.touched == single.touched and result.mode == row.mode


def test_a_row_may_bring_its_own_sampling(base):
    """A greedy reference row inside a sampled batch decodes greedily, and stops at its own length."""
    sampled = SamplingSpec(greedy=False, temperature=0.7, seed=5, max_new_tokens=6)
    greedy = SamplingSpec(max_new_tokens=4)
    prompts = prompts_of(base)[:2]
    rows = by_row(decode_rows(base, [RowRequest(prompt=prompts[0]), RowRequest(prompt=prompts[1], sampling=greedy)],
                              sampled, batch_size=2))
    assert [s.id for s in rows[0]] == [s.id for s in DecodeSession(base).decode(prompts[0], sampled)]
    assert [s.id for s in rows[1]] == [s.id for s in DecodeSession(base).decode(prompts[1], greedy)]
    assert rows[1][-1].end == "length" and len(rows[1]) == 4


PROBLEM_TEXTS = TEXTS[:4]


def figure2_by_hand(base, teacher, prompt, spec, tau):
    """Today's one-at-a-time Figure 2 for one problem: each mode through run_mode, in its order."""
    from engine.core.config import Tau
    from engine.core.interventions import oracle_positions

    session = DecodeSession(base, teacher)
    results = {m: run_mode(session, m, prompt, spec, gold="7")[0] for m in ("base", "teacher", "oracle")}
    results["random"] = run_mode(session, "random", prompt, spec, gold="7",
                                 budget=[oracle_positions(results["oracle"])])[0]
    reference = results["base"] if spec.greedy else run_mode(session, "base", prompt,
                                                              SamplingSpec(max_new_tokens=spec.max_new_tokens))[0]
    results["gated"] = run_mode(session, "gated", prompt, spec, gold="7", tau=Tau(tau.resolve(reference.entropies)))[0]
    return results


@pytest.mark.parametrize("spec", [SamplingSpec(max_new_tokens=7),
                                  SamplingSpec(greedy=False, temperature=0.9, seed=4, max_new_tokens=6)],
                         ids=["greedy", "sampled"])
def test_figure2_rows_equal_one_at_a_time_runs_at_any_batch_size(pair, spec, tmp_path):
    """Every mode's row of every problem, batched 3 at a time, is the one-at-a-time run; lines stay in problem order."""
    import json

    from engine.core.config import Tau
    from engine.core.data import Problem
    from engine.recipes.experiments import FIGURE2_MODES, read_results, run_figure2

    base, teacher = pair
    problems = [Problem(id=f"p{i}", problem=text, answer="7", source="test") for i, text in enumerate(PROBLEM_TEXTS)]
    tau = Tau.parse("q0.6")
    out = tmp_path / "fig2.jsonl"
    events = []
    run_figure2(base, teacher, problems, out, sampling=spec, tau=tau, template="raw", batch_size=3,
                on_event=events.append)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [p.id for p in problems]
    assert [e["intervene/done"] for e in events] == [0, 1, 2, 3, 4]
    records = read_results(out)
    for problem in problems:
        expected = figure2_by_hand(base, teacher, base.tokenizer(problem.problem)["input_ids"], spec, tau)
        for mode in FIGURE2_MODES:
            got, want = records[problem.id]["modes"][mode], expected[mode]
            assert (got["text"], got["touched"], got["tokens"], got["end"], got["correct"]) == (
                want.text, list(want.touched), len(want.steps), want.steps[-1].end, want.correct), (problem.id, mode)
            if mode == "gated":
                assert got["tau"] == pytest.approx(want.tau, abs=1e-5)


def test_figure2_a_stop_keeps_what_finished_and_a_resume_completes_it(pair, tmp_path):
    from engine.core.config import Tau
    from engine.core.data import Problem
    from engine.recipes.experiments import read_results, run_figure2

    base, teacher = pair
    problems = [Problem(id=f"p{i}", problem=text, answer="7", source="test") for i, text in enumerate(TEXTS)]
    out = tmp_path / "fig2.jsonl"
    modes = ("base", "oracle", "random")
    run = dict(modes=modes, sampling=SamplingSpec(max_new_tokens=5), tau=Tau(1.2), template="raw", batch_size=2)
    figure = run_figure2(base, teacher, problems, out, should_stop=lambda: True, **run)
    assert figure.problems == 0 and read_results(out) == {}  # stopped before the first problem started
    asked = []
    figure = run_figure2(base, teacher, problems, out, should_stop=lambda: asked.append(1) or len(asked) > 25, **run)
    records = read_results(out)
    complete = [r for r in records.values() if set(r["modes"]) == set(modes)]
    assert 1 <= figure.problems == len(complete) < len(problems)
    assert len(records) > len(complete), "a problem in flight should have left a partial line"
    whole = run_figure2(base, teacher, problems, out, **run)
    merged = read_results(out)
    assert whole.problems == len(problems) and all(set(r["modes"]) == set(modes) for r in merged.values())
    fresh = tmp_path / "fresh.jsonl"
    run_figure2(base, teacher, problems, fresh, **run)
    assert {i: {m: r["modes"][m]["text"] for m in modes} for i, r in merged.items()} == {
        i: {m: r["modes"][m]["text"] for m in modes} for i, r in read_results(fresh).items()}


def test_batch_memory_formula_and_choice(base):
    from engine.core import batch_memory
    from engine.core.batch_memory import BatchFit, choose_batch_size, kv_bytes_per_token, measure_fit

    config = base.core.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    assert kv_bytes_per_token(base) == 2 * config.num_hidden_layers * kv_heads * (config.hidden_size // heads) * 4
    fit = measure_fit([base, base], longest_prompt=10, max_new_tokens=20)
    assert fit.tokens == 30 and fit.row_bytes == 2 * (kv_bytes_per_token(base) * 30 + 32 * base.vocab_size)
    assert fit.where == "available RAM" and fit.free_bytes > 0
    small = BatchFit(row_bytes=1000, free_bytes=10_000, where="available RAM", tokens=30)
    assert small.fits == 8
    assert choose_batch_size(None, small, rows=100) == 8 and choose_batch_size(None, small, rows=3) == 3
    assert choose_batch_size(5, small, rows=100) == 5
    big = BatchFit(row_bytes=1, free_bytes=10**9, where="available RAM", tokens=30)
    assert choose_batch_size(None, big, rows=1000) == batch_memory.DEFAULT_CAP
    for bad in (0, 9):
        with pytest.raises(RmxError, match="the largest that fits is 8 "):
            choose_batch_size(bad, small, rows=100)
    with pytest.raises(RmxError, match="not even one row fits"):
        choose_batch_size(None, BatchFit(row_bytes=10**6, free_bytes=10, where="available RAM", tokens=30), rows=1)
