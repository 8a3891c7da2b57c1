"""Interventions and the Figure 2 runner on tiny models: oracle = teacher, controls, gate, forcing, forks, resume."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from engine.core.config import ModelSpec, Tau
from engine.core.data import Problem
from engine.core.decode import DecodeSession, SamplingSpec, StepContext
from engine.core.errors import RmxError
from engine.recipes.experiments import FIGURE2_MODES, read_results, run_figure2, summarize
from engine.core.interventions import (RANDOM_POOL, InterventionResult, Interrupted, base_greedy_entropies, fork,
                                      generate, random_rule, run_mode, wilson)
from engine.core.models import load_model, load_pair
from engine.core.scoring import score
from engine.service.workbench import Workbench

PROMPTS = ["Sam has 4 pencils and gets 3 more.", "What is 12 + 30?", "Let x be a number such that"]
SPEC = SamplingSpec(max_new_tokens=16)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; on a busy CPU, OpenMP spin-waits make two threads crawl."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module", params=["llama-separate", "llama-adapter", "gpt2-adapter"])
def pair(request, tiny_llama, tiny_llama_teacher, tiny_llama_adapter, tiny_gpt2, tiny_gpt2_adapter):
    base_folder, teacher = {
        "llama-separate": (tiny_llama, ModelSpec(str(tiny_llama_teacher), dtype="float32")),
        "llama-adapter": (tiny_llama, ModelSpec(str(tiny_llama), adapter=str(tiny_llama_adapter), dtype="float32")),
        "gpt2-adapter": (tiny_gpt2, ModelSpec(str(tiny_gpt2), adapter=str(tiny_gpt2_adapter), dtype="float32")),
    }[request.param]
    return load_pair(ModelSpec(str(base_folder), dtype="float32"), teacher)


@pytest.fixture(scope="module")
def llama_pair(tiny_llama, tiny_llama_adapter):
    return load_pair(ModelSpec(str(tiny_llama), dtype="float32"),
                     ModelSpec(str(tiny_llama), adapter=str(tiny_llama_adapter), dtype="float32"))


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def base(request, tiny_llama, tiny_gpt2):
    folder = {"llama": tiny_llama, "gpt2": tiny_gpt2}[request.param]
    return load_model(ModelSpec(str(folder), dtype="float32"))


def ids_of(model, text):
    return model.tokenizer(text)["input_ids"]


def hf_greedy(model, ids, max_new_tokens):
    with model.active() as module, torch.inference_mode():
        out = module.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              max_new_tokens=max_new_tokens, do_sample=False,
                              eos_token_id=sorted(model.eos_ids), pad_token_id=model.tokenizer.pad_token_id)
    return out[0, len(ids):].tolist()


def completion(result: InterventionResult) -> list[int]:
    return [s.id for s in result.steps]


def disagreements(base, teacher, prompt, result):
    """Positions where the teacher's argmax differs from the base's, by teacher-forced scoring of the result."""
    scored = score(base, [(prompt, completion(result))], teacher=teacher)[0]
    return tuple(t.pos for t in scored.tokens if t.cls != "unshifted"), scored


@pytest.mark.parametrize("text", PROMPTS)
def test_greedy_oracle_equals_the_teachers_own_greedy_decode(pair, text):
    base, teacher = pair
    prompt = ids_of(base, text)
    oracle = generate(base, teacher, prompt, SPEC, intervene="oracle")[0]
    assert completion(oracle) == hf_greedy(teacher, prompt, SPEC.max_new_tokens)
    alone = run_mode(DecodeSession(base, teacher), "teacher", prompt, SPEC)[0]
    assert completion(oracle) == completion(alone) and alone.touched == ()
    assert oracle.touched, "the tiny teacher should disagree somewhere, or this test proves nothing"


def test_oracle_touches_exactly_where_the_teacher_disagrees(pair):
    base, teacher = pair
    prompt = ids_of(base, PROMPTS[0])
    oracle = generate(base, teacher, prompt, SPEC, intervene="oracle")[0]
    expected, _ = disagreements(base, teacher, prompt, oracle)
    assert oracle.touched == expected
    assert all(s.source == ("teacher" if s.pos in expected else "base") for s in oracle.steps)
    assert oracle.touched_frac == pytest.approx(len(expected) / len(oracle.steps))


@pytest.mark.parametrize("text", PROMPTS)
def test_random_control_touches_as_many_tokens_as_the_oracle_never_the_teacher_nor_the_argmax(pair, text):
    base, teacher = pair
    prompt = ids_of(base, text)
    spec = SamplingSpec(max_new_tokens=16, seed=4)
    oracle = run_mode(DecodeSession(base, teacher), "oracle", prompt, spec)[0]
    result = run_mode(DecodeSession(base, teacher), "random", prompt, spec, top=20)[0]
    assert oracle.touched, "the tiny teacher should disagree somewhere, or this test proves nothing"
    assert len(result.touched) == len(oracle.touched)
    # Both runs are the base's greedy decode up to the oracle's first change: the first draw lands on that decision point.
    assert result.touched[0] == oracle.touched[0]
    scored = score(base, [(prompt, completion(result))], teacher=teacher)[0]
    for step, ref in zip(result.steps, scored.tokens, strict=True):
        if step.pos in result.touched:
            assert step.source == "random"
            assert 2 <= ref.rank <= 20, "a draw from the base top-20 minus its argmax"
            assert step.id != ref.teacher.id, "the control must never emit the teacher's own correction"
        else:
            assert step.source == "base" and ref.rank == 1
    again = run_mode(DecodeSession(base, teacher), "random", prompt, spec, top=20)[0]
    assert completion(again) == completion(result)


def test_random_control_over_many_seeds_keeps_the_budget_and_avoids_the_teachers_token(llama_pair):
    base, teacher = llama_pair
    prompt = ids_of(base, PROMPTS[0])
    spec = SamplingSpec(max_new_tokens=12)
    budget = run_mode(DecodeSession(base, teacher), "oracle", prompt, spec)[0].touched
    runs = [run_mode(DecodeSession(base, teacher), "random", prompt, replace(spec, seed=seed), budget=[budget])[0]
            for seed in range(12)]
    assert len({tuple(completion(r)) for r in runs}) > 1, "different seeds draw different substitutes"
    for result in runs:
        assert len(result.touched) == len(budget)
        scored = score(base, [(prompt, completion(result))], teacher=teacher)[0]
        assert all(ref.id != ref.teacher.id and ref.rank >= 2 for ref in scored.tokens if ref.pos in result.touched)


def test_random_control_substitutes_where_the_base_would_stop_while_draws_are_owed():
    stop_token, eos = 5, frozenset({5, 6})
    logits = torch.arange(40, dtype=torch.float32).flip(0)  # token 0 most likely, then 1, 2, ...
    rule = random_rule(0, [(7, 9)], eos)

    def ctx(pos: int, pick: int, teacher: int) -> StepContext:
        return StepContext(row=0, pos=pos, logits=logits, entropy=1.0, argmax=0, pick=pick,
                           teacher_logits=lambda: torch.nn.functional.one_hot(torch.tensor(teacher), 40).float())

    assert rule(ctx(1, pick=0, teacher=3)) is None, "no draw away from the oracle's positions"
    token, source = rule(ctx(2, pick=stop_token, teacher=3))
    assert source == "random" and token not in {0, 3, *eos} and token < RANDOM_POOL
    token, _ = rule(ctx(7, pick=0, teacher=2))
    assert token not in {0, 2} and token < RANDOM_POOL
    assert rule(ctx(9, pick=0, teacher=3)) is None, "the budget of two is spent"


def test_random_control_draws_uniformly_from_the_base_top20_minus_argmax_and_teacher():
    logits = torch.tensor([9.0, 1.0, 3.0, 2.0, 5.0] + [-50.0] * 30)  # argmax 0; top-20 holds 0..4 and 15 more
    context = StepContext(row=0, pos=4, logits=logits, entropy=1.0, argmax=0, pick=0,
                          teacher_logits=lambda: torch.nn.functional.one_hot(torch.tensor(4), 35).float())
    pool = set(torch.topk(logits, RANDOM_POOL).indices.tolist()) - {0, 4}
    drawn = [random_rule(seed, [(4,)])(context) for seed in range(200)]
    assert all(source == "random" for _, source in drawn)
    assert {token for token, _ in drawn} == pool, "every other top-20 token, and only those, can be drawn"


def test_random_control_needs_one_budget_per_row(llama_pair):
    base, teacher = llama_pair
    with pytest.raises(RmxError, match="each of its 2 rows"):
        run_mode(DecodeSession(base, teacher), "random", ids_of(base, PROMPTS[0]), SPEC, n=2, budget=[(1,)])


def test_gated_emits_the_teacher_argmax_above_tau_only(pair):
    base, teacher = pair
    prompt = ids_of(base, PROMPTS[2])
    entropies = base_greedy_entropies(DecodeSession(base), prompt, SPEC)
    tau = sorted(entropies)[len(entropies) // 2]
    result = generate(base, teacher, prompt, SPEC, intervene="gated", tau=Tau(tau))[0]
    assert result.tau == tau
    _, scored = disagreements(base, teacher, prompt, result)
    for step, ref in zip(result.steps, scored.tokens, strict=True):
        if step.entropy > tau:
            assert step.id == ref.teacher.id
            assert step.source == ("base" if ref.cls == "unshifted" else "teacher")
        else:
            assert step.source == "base" and ref.rank == 1
    assert set(result.touched) == {t.pos for t in scored.tokens if t.entropy > tau and t.cls != "unshifted"}


def test_a_tau_quantile_resolves_against_the_bases_own_greedy_rollout(llama_pair):
    base, teacher = llama_pair
    prompt = ids_of(base, PROMPTS[0])
    entropies = [s.entropy for s in generate(base, None, prompt, SPEC)[0].steps]
    gated = generate(base, teacher, prompt, SPEC, intervene="gated", tau=Tau.parse("q0.75"))[0]
    assert gated.tau == pytest.approx(Tau.parse("q0.75").resolve(entropies))


def test_with_teacher_equal_to_base_nothing_is_touched(base):
    prompt = ids_of(base, PROMPTS[0])
    plain = generate(base, None, prompt, SPEC)[0]
    for mode, tau in (("oracle", None), ("random", None), ("gated", Tau(0.0))):
        result = generate(base, base, prompt, SPEC, intervene=mode, tau=tau)[0]
        assert result.touched == () and result.touched_frac == 0.0
        assert completion(result) == completion(plain)


def test_manual_forcing_touches_the_forced_positions_only(base):
    prompt = ids_of(base, PROMPTS[1])
    plain = completion(generate(base, None, prompt, SPEC)[0])
    a, b = (plain[1] + 1) % base.vocab_size, (plain[4] + 7) % base.vocab_size
    result = generate(base, None, prompt, SPEC, force=[(4, b), (1, a)], intervene="manual")[0]
    assert result.touched == (1, 4)
    assert [(s.pos, s.id, s.source) for s in result.steps if s.source != "base"] == [(1, a, "forced"), (4, b, "forced")]
    assert completion(result)[:1] == plain[:1]
    assert completion(result)[5:] == hf_greedy(base, prompt + completion(result)[:5], SPEC.max_new_tokens - 5)


def test_generate_json_has_exactly_the_public_shape(llama_pair):
    base, teacher = llama_pair
    prompt = ids_of(base, PROMPTS[0])
    result = generate(base, teacher, prompt, SPEC, intervene="oracle", gold="7")[0]
    data = result.to_json()
    assert list(data) == ["tokens", "text", "touched", "touched_frac", "answer"]
    assert all(list(t) == ["pos", "id", "text", "source", "entropy"] for t in data["tokens"])
    assert [t["pos"] for t in data["tokens"]] == list(range(len(result.steps)))
    shown = completion(result)[:-1] if result.steps[-1].end == "eos" else completion(result)
    assert data["text"] == base.tokenizer.decode(shown, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert json.loads(json.dumps(data)) == data
    assert set(result.grade_json()) == {"correct", "gold", "reason", "grader"}
    assert generate(base, None, prompt, SPEC)[0].grade_json() is None


def test_n_results_per_prompt(llama_pair):
    base, teacher = llama_pair
    prompt = ids_of(base, PROMPTS[0])
    spec = SamplingSpec(greedy=False, seed=2, max_new_tokens=8)
    plain = generate(base, teacher, prompt, spec, n=3)
    assert len(plain) == 3 and len({tuple(completion(r)) for r in plain}) > 1
    assert all(r.touched == () and r.mode == "base" for r in plain)
    steered = generate(base, teacher, prompt, spec, intervene="oracle", n=3)
    assert len(steered) == 3 and all(r.mode == "oracle" for r in steered)
    assert all(set(r.touched) == {s.pos for s in r.steps if s.source == "teacher"} for r in steered)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(intervene="oracle", teacher=None), "oracle needs a teacher"),
        (dict(intervene="random", teacher=None), "random needs a teacher"),
        (dict(intervene="gated"), "needs τ"),
        (dict(intervene="manual"), "at least one forced"),
        (dict(intervene="shout"), "unknown intervention"),
        (dict(n=0), "n must be a positive integer"),
        (dict(force=[(16, 5)]), r"outside \[0, 15\]"),
        (dict(force=[(0, 10**6)]), "outside the vocabulary"),
        (dict(prompt=[5] * 600), "context"),
    ],
)
def test_bad_generate_input_is_a_one_line_error(llama_pair, kwargs, message):
    base, teacher = llama_pair
    call = dict(teacher=teacher, prompt=ids_of(base, PROMPTS[0]))
    call.update(kwargs)
    with pytest.raises(RmxError, match=message) as error:
        generate(base, call.pop("teacher"), call.pop("prompt"), SPEC, **call)
    assert "\n" not in str(error.value)


def test_a_session_of_another_pair_is_refused(llama_pair):
    base, teacher = llama_pair
    with pytest.raises(RmxError, match="another base/teacher"):
        generate(base, teacher, ids_of(base, PROMPTS[0]), SPEC, session=DecodeSession(base))


def test_wilson_interval():
    assert wilson(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-4)
    with pytest.raises(RmxError):
        wilson(3, 0)


def test_fork_grades_n_continuations_and_bounds_p(llama_pair):
    base, teacher = llama_pair
    prompt = ids_of(base, PROMPTS[0])
    answer = base.tokenizer(" The answer is \\boxed{7}.", add_special_tokens=False)["input_ids"]
    session = DecodeSession(base, teacher)
    rollout = answer + completion(generate(base, None, prompt + answer, SPEC)[0])
    spec = SamplingSpec(greedy=False, temperature=0.6, top_p=0.95, seed=0, max_new_tokens=6)
    estimate = fork(session, prompt, rollout, len(answer), rollout[len(answer)], "7", spec, n=4)
    assert estimate.n == 4 and len(estimate.continuations) == 4
    assert estimate.correct == sum(c.correct for c in estimate.continuations)
    assert (estimate.low, estimate.high) == wilson(estimate.correct, 4)
    assert all(c.completion_ids[: len(answer) + 1] == tuple(rollout[: len(answer) + 1]) for c in estimate.continuations)
    assert all(c.steps[0].pos == len(answer) and c.steps[0].source == "forced" for c in estimate.continuations)
    assert estimate.correct >= 1, "the kept prefix already boxes the gold answer"
    with pytest.raises(RmxError, match="gold"):
        fork(session, prompt, rollout, 2, 5, "", spec, n=2)


class StopAfter:
    """A should_stop that says True on its k-th question, and counts the questions."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked >= self.k


def loaded_workbench(tiny_llama, tiny_llama_teacher) -> Workbench:
    workbench = Workbench()
    workbench.load(ModelSpec(str(tiny_llama), dtype="float32", device="cpu"),
                   ModelSpec(str(tiny_llama_teacher), dtype="float32", device="cpu"))
    return workbench


def same_run(a: InterventionResult, b: InterventionResult) -> bool:
    """The same tokens, touches and verdict; floats to rounding, as a reused cache may add in another order."""
    return ((a.completion_ids, a.touched, a.correct) == (b.completion_ids, b.touched, b.correct)
            and (a.tau, *a.entropies) == pytest.approx((b.tau, *b.entropies), abs=1e-4))


@pytest.mark.parametrize("mode, tau, k", [("oracle", None, 1), ("oracle", None, 5), ("gated", "q0.5", 3),
                                          ("gated", "q0.5", 30)])
def test_should_stop_ends_an_intervention_and_the_workbench_carries_on(tiny_llama, tiny_llama_teacher, mode, tau, k):
    """k = 1 stops before decoding, 3 within the τ reference rollout, 5 and 30 within the run itself."""
    spec = SamplingSpec(max_new_tokens=24)
    fresh = loaded_workbench(tiny_llama, tiny_llama_teacher)
    prompt = fresh.prompt_ids(PROMPTS[0])
    expected = fresh.intervene(prompt, mode, spec, tau=tau, gold="7")
    assert len(expected.steps) == 24, "the run outlasts every k"
    workbench = loaded_workbench(tiny_llama, tiny_llama_teacher)
    stop = StopAfter(k)
    with pytest.raises(Interrupted, match="^intervention stopped$"):
        workbench.intervene(prompt, mode, spec, tau=tau, gold="7", should_stop=stop)
    assert stop.asked == k, "it stops at the first True"
    assert same_run(workbench.intervene(prompt, mode, spec, tau=tau, gold="7"), expected)
    # A run that is never stopped asks after every step, and gives what it gives without asking.
    never = StopAfter(10**9)
    assert same_run(workbench.intervene(prompt, mode, spec, tau=tau, gold="7", should_stop=never), expected)
    assert never.asked == 1 + len(expected.steps) + (len(expected.steps) if mode == "gated" else 0)


def test_should_stop_ends_a_fork_estimate_between_its_samples(tiny_llama, tiny_llama_teacher):
    spec = SamplingSpec(greedy=False, temperature=0.6, top_p=0.95, seed=0, max_new_tokens=12)
    fresh = loaded_workbench(tiny_llama, tiny_llama_teacher)
    prompt = fresh.prompt_ids(PROMPTS[0])
    answer = fresh.tokenize(" The answer is \\boxed{7}.")
    rollout = answer + list(fresh.intervene(prompt + answer, "base", SPEC).completion_ids)
    pos = len(answer)
    expected = fresh.fork_outcomes(prompt, rollout, pos, rollout[pos], "7", 4, spec)
    workbench = loaded_workbench(tiny_llama, tiny_llama_teacher)
    workbench.intervene(prompt + answer, "base", SPEC)  # the same cache history as the fresh one
    stop = StopAfter(7)  # one question before decoding, then one per row and step: the 7th follows row 1's 2nd step
    with pytest.raises(Interrupted):
        workbench.fork_outcomes(prompt, rollout, pos, rollout[pos], "7", 4, spec, should_stop=stop)
    assert stop.asked == 7
    estimate = workbench.fork_outcomes(prompt, rollout, pos, rollout[pos], "7", 4, spec)
    assert (estimate.correct, estimate.low, estimate.high) == (expected.correct, expected.low, expected.high)
    assert all(same_run(a, b) for a, b in zip(estimate.continuations, expected.continuations, strict=True))


PROBLEMS = [Problem(id=f"p{i}", problem=text, answer="7", source="test") for i, text in enumerate(PROMPTS)]


def test_figure2_runner_streams_resumes_and_summarises(llama_pair, tmp_path):
    base, teacher = llama_pair
    out = tmp_path / "figure2.jsonl"
    events: list[dict] = []
    spec = SamplingSpec(max_new_tokens=8)
    figure = run_figure2(base, teacher, PROBLEMS[:2], out, sampling=spec, tau=Tau.parse("q0.5"),
                         template="raw", on_event=events.append)
    lines = out.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["p0", "p1"]
    assert all(set(json.loads(line)["modes"]) == set(FIGURE2_MODES) for line in lines)
    assert figure.problems == 2 and [m.mode for m in figure.modes] == list(FIGURE2_MODES)
    assert figure.mode("oracle").pass_at_1 == figure.mode("teacher").pass_at_1
    assert figure.mode("base").touched_pct is None and figure.mode("oracle").touched_pct > 0
    assert [e["intervene/done"] for e in events] == [0, 1, 2]
    assert all(e["intervene/total"] == 2 for e in events)
    assert all("/" in key for e in events for key in e)
    assert "intervene/pass@1/gated" in events[-1]
    for line in lines:
        modes = json.loads(line)["modes"]
        assert len(modes["random"]["touched"]) == modes["random"]["oracle_touched"] == len(modes["oracle"]["touched"])
    assert [(t["oracle"], t["random"]) for t in figure.touches] == [
        (len(json.loads(line)["modes"]["oracle"]["touched"]),) * 2 for line in lines]
    assert figure.mode("random").touched == figure.mode("oracle").touched > 0
    assert figure.to_json()["touches"] == [dict(t) for t in figure.touches]
    record = json.loads(lines[0])
    assert record["modes"]["gated"]["tau"] is not None
    assert record["modes"]["oracle"]["touched_frac"] == pytest.approx(
        len(record["modes"]["oracle"]["touched"]) / record["modes"]["oracle"]["tokens"])

    # A killed writer leaves half a line: it is cut off, and only the problems not on file run.
    out.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    events.clear()
    again = run_figure2(base, teacher, PROBLEMS, out, sampling=spec, tau=Tau.parse("q0.5"), template="raw",
                        on_event=events.append)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == ["p0", "p1", "p2"]
    assert [e["intervene/done"] for e in events] == [1, 2, 3]
    assert again.problems == 3
    # p1 ran again, now batched with p2: the same record, its resolved τ up to float noise of batch shapes.
    rerun, first = json.loads(out.read_text().splitlines()[1]), json.loads(lines[1])
    assert rerun["modes"]["gated"].pop("tau") == pytest.approx(first["modes"]["gated"].pop("tau"), abs=1e-5)
    assert rerun == first

    # Everything on file: nothing runs, the summary is read back.
    before = out.read_text()
    third = run_figure2(base, teacher, PROBLEMS, out, sampling=spec, tau=Tau.parse("q0.5"), template="raw")
    assert out.read_text() == before and third == again


def test_figure2_runs_only_missing_modes_and_refuses_bad_input(llama_pair, tmp_path):
    base, teacher = llama_pair
    out = tmp_path / "partial.jsonl"
    spec = SamplingSpec(max_new_tokens=4)
    run_figure2(base, teacher, PROBLEMS[:1], out, modes=("base",), sampling=spec, template="raw")
    run_figure2(base, teacher, PROBLEMS[:1], out, modes=("base", "oracle"), sampling=spec, template="raw")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [sorted(line["modes"]) for line in lines] == [["base"], ["oracle"]]
    assert sorted(read_results(out)["p0"]["modes"]) == ["base", "oracle"]
    # random alone still gets the oracle's budget; a random record without one (older rmx) is stale and runs again.
    alone = tmp_path / "random.jsonl"
    alone.write_text(json.dumps({"id": "p0", "modes": {"random": {"correct": False, "tokens": 4, "touched": [0, 1, 2]}}})
                     + "\n")
    figure = run_figure2(base, teacher, PROBLEMS[:1], alone, modes=("random",), sampling=spec, template="raw")
    budget = lines[1]["modes"]["oracle"]["touched"]
    assert figure.touches == ({"id": "p0", "oracle": len(budget), "random": len(budget)},)
    assert read_results(alone)["p0"]["modes"]["random"]["oracle_touched"] == len(budget)
    with pytest.raises(RmxError, match="needs a teacher"):
        run_figure2(base, None, PROBLEMS, out, modes=("oracle",), sampling=spec)
    with pytest.raises(RmxError, match="unknown mode"):
        run_figure2(base, teacher, PROBLEMS, out, modes=("best",), sampling=spec)
    with pytest.raises(RmxError, match="needs τ"):
        run_figure2(base, teacher, PROBLEMS, out, modes=("gated",), sampling=spec, tau=None)
    out.write_text('{"id": "p0", "modes": {}}\nnot json\n{"id": "p1", "modes": {}}\n')
    with pytest.raises(RmxError, match="partial.jsonl:2"):
        read_results(out)


def test_figure2_summary_shares_of_the_teachers_gain():
    def record(pid, **correct):
        return {"id": pid, "modes": {m: {"correct": c, "tokens": 10, "touched": [1] if m in ("oracle", "random") else [],
                                         **({"oracle_touched": 1} if m == "random" else {})}
                                     for m, c in correct.items()}}

    records = {r["id"]: r for r in (record("a", base=False, teacher=True, oracle=True, random=False),
                                    record("b", base=False, teacher=True, oracle=False, random=False),
                                    record("c", base=True, teacher=True, oracle=True, random=True))}
    figure = summarize(records, ["a", "b", "c"], ("base", "teacher", "oracle", "random"), None, "x")
    assert figure.mode("base").pass_at_1 == pytest.approx(1 / 3)
    assert figure.mode("teacher").recovered == 1.0 and figure.mode("base").recovered == 0.0
    assert figure.mode("oracle").recovered == pytest.approx(0.5)
    assert figure.mode("random").recovered == 0.0
    assert figure.mode("oracle").touched_pct == pytest.approx(10.0)
    assert figure.touches == tuple({"id": i, "oracle": 1, "random": 1} for i in "abc")
    same = {"a": record("a", base=True, teacher=True, oracle=True)}
    assert summarize(same, ["a"], ("base", "teacher", "oracle"), None, "x").mode("oracle").recovered is None
