"""Figure 2: pass@1 of base, teacher, oracle, random and entropy-gated decoding over problems, resumable JSON lines."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from engine.core.config import Tau
from engine.core.data import Problem
from engine.core.batch_memory import choose_batch_size, measure_fit
from engine.core.batched import ModeBatch, ModeRow
from engine.core.decode import SamplingSpec
from engine.core.errors import RmxError
from engine.core.interventions import InterventionResult, Interrupted, _result, oracle_positions
from engine.core.models import LoadedModel
from engine.core.prompts import TemplateChoice, choose_template, prompt_ids

FIGURE2_MODES = ("base", "teacher", "oracle", "random", "gated")
"""The bars of the paper's Figure 2, in the order they run (base first: a τ quantile reuses its entropies)."""
PAPER_TAU = Tau(1.2)
"""The gate the paper's Figure 2 uses (§3.3), in nats."""
NEEDS_TEACHER = frozenset({"teacher", "oracle", "random", "gated"})


@dataclass(frozen=True)
class ModeSummary:
    """One bar of Figure 2."""

    mode: str
    problems: int
    """Problems counted (those with a result for every mode of the run)."""
    pass_at_1: float | None
    """Share of problems answered correctly (one sample each), in [0, 1]; None without problems."""
    touched_pct: float | None
    """Touched tokens over decoded tokens, pooled over problems, 0–100; None for base and teacher."""
    recovered: float | None
    """(mode − base) / (teacher − base) of pass@1; None without both, or when teacher equals base."""
    touched: int | None = None
    """Touched tokens summed over problems; None for base and teacher."""

    def __post_init__(self) -> None:
        if self.mode not in FIGURE2_MODES:
            raise RmxError(f"unknown Figure 2 mode '{self.mode}': use one of {', '.join(FIGURE2_MODES)}")
        if self.problems < 0:
            raise RmxError(f"problem count must be ≥ 0, got {self.problems}")
        if self.pass_at_1 is not None and not 0.0 <= self.pass_at_1 <= 1.0:
            raise RmxError(f"pass@1 must be in [0, 1], got {self.pass_at_1}")


@dataclass(frozen=True)
class Figure2:
    """The summary of a Figure 2 run: one bar per mode, over the problems every mode has finished."""

    modes: tuple[ModeSummary, ...]
    problems: int
    """Problems counted in every bar."""
    tau: str | None
    """The gate's τ as given (`1.2` nats or `q0.97`), None without one; resolved values are in the JSON lines."""
    path: str
    """The JSON-lines file holding the per-problem results."""
    touches: tuple[dict[str, Any], ...] = ()
    """Per counted problem with a random run: {"id", "oracle", "random"}, the two touch counts (always equal)."""
    template: TemplateChoice | None = None
    """The prompt template this run posed its problems with, and why; None when no run resolved one."""

    def __post_init__(self) -> None:
        if len({m.mode for m in self.modes}) != len(self.modes):
            raise RmxError("a Figure 2 summary lists each mode once")

    def mode(self, name: str) -> ModeSummary:
        for summary in self.modes:
            if summary.mode == name:
                return summary
        raise RmxError(f"mode '{name}' is not part of this run: it has {', '.join(m.mode for m in self.modes)}")

    def to_json(self) -> dict[str, Any]:
        return {"problems": self.problems, "tau": self.tau, "path": self.path,
                "modes": [asdict(m) for m in self.modes], "touches": [dict(t) for t in self.touches],
                **(self.template.to_json() if self.template is not None else {})}


def _check_modes(modes: Sequence[str], teacher: LoadedModel | None, tau: Tau | None) -> tuple[str, ...]:
    if not modes:
        raise RmxError(f"no modes to run: choose from {', '.join(FIGURE2_MODES)}")
    unknown = [m for m in modes if m not in FIGURE2_MODES]
    if unknown:
        raise RmxError(f"unknown mode '{unknown[0]}': use one of {', '.join(FIGURE2_MODES)}")
    if len(set(modes)) != len(modes):
        raise RmxError("each mode may be listed once")
    needing = [m for m in modes if m in NEEDS_TEACHER]
    if needing and teacher is None:
        raise RmxError(f"mode {needing[0]} needs a teacher model: pass --teacher")
    if "gated" in modes and tau is None:
        raise RmxError("the gated mode needs τ: give nats (1.2) or a quantile (q0.97)")
    return tuple(m for m in FIGURE2_MODES if m in modes)


def read_results(path: str | Path) -> dict[str, dict[str, Any]]:
    """Per-problem records of a results file by problem id, later lines adding modes to earlier ones.

    A truncated last line (a run killed mid-write) is cut off the file, so appending resumes cleanly.
    """
    file = Path(path)
    if not file.exists():
        return {}
    raw = file.read_bytes()
    *complete, tail = raw.split(b"\n")
    records: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(complete, 1):
        if line.strip():
            _merge(records, _parse(line, f"{file}:{number}"))
    if tail.strip():
        try:
            record = _parse(tail, f"{file}:{len(complete) + 1}")
        except RmxError:
            with file.open("r+b") as handle:
                handle.truncate(len(raw) - len(tail))
        else:
            _merge(records, record)
            with file.open("ab") as handle:
                handle.write(b"\n")
    return records


def _parse(line: bytes, where: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RmxError(f"{where}: not a JSON line ({error})") from None
    if not (isinstance(record, dict) and isinstance(record.get("id"), str) and isinstance(record.get("modes"), dict)):
        raise RmxError(f"{where}: not a Figure 2 record (needs an 'id' string and a 'modes' object)")
    return record


def _merge(records: dict[str, dict[str, Any]], record: dict[str, Any]) -> None:
    known = records.setdefault(record["id"], {**record, "modes": {}})
    known["modes"].update(record["modes"])


def _has(record: dict[str, Any], mode: str) -> bool:
    """Whether a problem's record holds a current result for `mode`.

    A random run recorded before the control was budget-matched (no `oracle_touched`) is stale: it runs again.
    """
    result = record["modes"].get(mode)
    return result is not None and (mode != "random" or "oracle_touched" in result)


def _mode_record(result: InterventionResult) -> dict[str, Any]:
    return {
        "answer": result.answer,
        "correct": result.correct,
        "reason": result.grade_reason,
        "tokens": len(result.steps),
        "touched": list(result.touched),
        "touched_frac": result.touched_frac,
        "tau": result.tau,
        "end": result.steps[-1].end if result.steps else None,
        "text": result.text,
    }


def summarize(records: dict[str, dict[str, Any]], problem_ids: Sequence[str], modes: Sequence[str],
              tau: Tau | None, path: str | Path) -> Figure2:
    """Figure 2's bars over the listed problems that have a result for every mode."""
    done = [records[i] for i in problem_ids if i in records and all(_has(records[i], m) for m in modes)]
    passes: dict[str, float | None] = {}
    for mode in modes:
        verdicts = [bool(r["modes"][mode]["correct"]) for r in done]
        passes[mode] = sum(verdicts) / len(verdicts) if verdicts else None
    base, teacher = passes.get("base"), passes.get("teacher")
    bars = []
    for mode in modes:
        touched_pct = touched = None
        if mode not in ("base", "teacher") and done:
            tokens = sum(r["modes"][mode]["tokens"] for r in done)
            touched = sum(len(r["modes"][mode]["touched"]) for r in done)
            touched_pct = 100.0 * touched / tokens if tokens else 0.0
        recovered = None
        if base is not None and teacher is not None and teacher != base and passes[mode] is not None:
            recovered = (passes[mode] - base) / (teacher - base)
        bars.append(ModeSummary(mode=mode, problems=len(done), pass_at_1=passes[mode], touched_pct=touched_pct,
                                recovered=recovered, touched=touched))
    touches = tuple({"id": r["id"], "oracle": r["modes"]["random"]["oracle_touched"],
                     "random": len(r["modes"]["random"]["touched"])} for r in done if "random" in modes)
    return Figure2(modes=tuple(bars), problems=len(done), tau=str(tau) if tau is not None else None, path=str(path),
                   touches=touches)


def run_figure2(
    base: LoadedModel,
    teacher: LoadedModel | None,
    problems: Sequence[Problem],
    out: str | Path,
    *,
    modes: Sequence[str] = FIGURE2_MODES,
    sampling: SamplingSpec = SamplingSpec(),
    tau: Tau | None = PAPER_TAU,
    template: str | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    batch_size: int | None = None,
    backend: str = "auto",
) -> Figure2:
    """Run every mode on every problem, one JSON line per problem appended to `out`, and summarise.

    With `backend` paged (auto: on CUDA), greedy base and teacher rows are decoded by the paged sampler
    (engine.core.backends.paged, the same tokens) and scored in one forward for their statistics; the
    lockstep batch then holds only the rows that need both models.

    Problems whose modes are all in `out` already are skipped; missing modes of a problem are run
    and appended. The rows of every mode of every problem decode together, `batch_size` at a
    time (None: as many as fit in free memory, engine.core.batch_memory), a finished row's slot
    going to the next one waiting; each row's result is the one-at-a-time run's. A τ quantile
    is resolved per problem against the base's own greedy-rollout entropies (the base run's,
    when it is greedy). Lines are written in problem order as problems complete. Events after
    each problem carry `intervene/done`, `intervene/total` and per mode `intervene/pass@1/<mode>`,
    `intervene/touched_pct/<mode>` and `intervene/recovered/<mode>`. `should_stop` is asked after
    every step; once it says True decoding stops there, and the finished modes of problems in
    flight are written as partial lines that a resumed run completes.
    """
    order = _check_modes(modes, teacher, tau)
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise RmxError("problem ids must be unique: a results file is keyed by them")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = read_results(path)
    emit = on_event or (lambda event: None)
    choice = choose_template(template, base.tokenizer, base.template_facts)
    other = next((r for r in records.values() if r.get("template", choice.template) != choice.template), None)
    if other is not None:
        raise RmxError(f"{path} holds results posed with template '{other['template']}', and this run resolves to "
                       f"'{choice.template}' ({choice.reason}): pass --template {other['template']} or another --out")

    def progress(problem_id: str | None) -> Figure2:
        figure = replace(summarize(records, ids, order, tau, path), template=choice)
        event: dict[str, Any] = {"intervene/done": figure.problems, "intervene/total": len(ids)}
        if problem_id is not None:
            event["intervene/problem"] = problem_id
        for bar in figure.modes:
            event[f"intervene/pass@1/{bar.mode}"] = bar.pass_at_1
            event[f"intervene/touched_pct/{bar.mode}"] = bar.touched_pct
            event[f"intervene/recovered/{bar.mode}"] = bar.recovered
        emit(event)
        return figure

    figure = progress(None)
    pending = []
    for problem in problems:
        known = records.get(problem.id, {"modes": {}})
        missing = [m for m in order if not _has(known, m)]
        if missing:
            oracle = known["modes"].get("oracle") if "oracle" not in missing else None
            pending.append(_Pending(problem, prompt_ids(base.tokenizer, problem.problem, choice.template), missing,
                                    budget=tuple(oracle["touched"]) if oracle is not None else None))
    held = _HeldRows()
    if pending and _paged_solo_rows(backend, base, sampling):
        _solo_rows(base, teacher, pending, sampling, _Figure2Rows(held, pending, sampling, tau))
    follow = teacher is not None and any(m in NEEDS_TEACHER and m not in p.results for p in pending for m in p.missing)
    fit = measure_fit([base, teacher] if follow else [base], max((len(p.prompt) for p in pending), default=1),
                      sampling.max_new_tokens)
    size = choose_batch_size(batch_size, fit, max(1, sum(len(p.missing) for p in pending)))
    if not pending:
        return figure
    batch = ModeBatch(base, teacher, sampling, follow=follow, batch_size=size)
    for row, first, row_sampling in held.rows:  # rows that waited on a solo row's result (gated after base)
        batch.put(row, first=first, sampling=row_sampling)
    rows = _Figure2Rows(batch, pending, sampling, tau)
    written = 0
    with path.open("a", encoding="utf-8") as handle:

        def write(state: _Pending) -> None:
            record = {"id": state.problem.id, "gold": state.problem.answer, "template": choice.template,
                      "modes": {m: state.results[m] for m in state.missing if m in state.results}}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            state.written = True
            _merge(records, record)

        try:
            rows.feed(should_stop)
            for _, row, result in batch.run(should_stop):
                rows.finished(row, result)
                rows.feed(should_stop)
                while written < len(pending) and pending[written].complete:
                    write(pending[written])
                    figure = progress(pending[written].problem.id)
                    written += 1
        except Interrupted:
            pass  # rows in flight are dropped; what they finished is kept below
        finally:
            # Nothing finished is lost: complete problems out of order if need be, and the finished modes of
            # problems in flight as partial lines, which a resumed run completes.
            for state in pending:
                if not state.written and (state.complete or state.results):
                    write(state)
                    if state.complete:
                        figure = progress(state.problem.id)
    return figure


def _paged_solo_rows(backend: str, base: LoadedModel, sampling: SamplingSpec) -> bool:
    """Whether base and teacher rows run on the paged sampler rather than in the lockstep batch."""
    from engine.core.backends import resolve_backend

    if backend not in ("auto", "hf", "paged"):
        raise RmxError(f"--backend must be auto, hf or paged for Figure 2, got '{backend}'")
    if resolve_backend(backend, base.spec) != "paged":
        return False
    if not sampling.greedy or sampling.stop:
        if backend == "paged":
            raise RmxError("the paged backend runs Figure 2's base and teacher greedily without stop strings: "
                           "use --backend hf for sampled or stopped runs")
        return False
    return True


class _HeldRows:
    """Stands in for the batch while solo rows finish: keeps the rows they release, in order, for the real one."""

    batch_size = 1 << 30

    def __init__(self):
        self.rows: list[tuple[ModeRow, bool, SamplingSpec | None]] = []

    @property
    def waiting(self) -> int:
        return len(self.rows)

    def put(self, row: ModeRow, *, first: bool = False, sampling: SamplingSpec | None = None) -> None:
        self.rows.append((row, first, sampling))


def _solo_rows(base: LoadedModel, teacher: LoadedModel | None, pending: list[_Pending], sampling: SamplingSpec,
               rows: _Figure2Rows) -> None:
    """Base and teacher rows on the paged sampler, all problems in one call per model, each scored in one forward
    for the per-token statistics the lockstep decoder would have given."""
    from engine.core.backends import SampleRequest
    from engine.core.backends.paged import PagedSampler

    for mode, view in (("base", base), ("teacher", teacher)):
        todo = [state for state in pending if mode in state.missing and mode not in state.results]
        if view is None or not todo:
            continue
        sampler = PagedSampler(None, loaded=view, temperature=1.0, top_p=1.0, max_new_tokens=sampling.max_new_tokens)
        samples = sampler.sample([SampleRequest(tuple(state.prompt), 1, seed=0, greedy=True) for state in todo])
        for state, (sample,) in zip(todo, samples):
            steps = _scored_steps(view, state.prompt, sample.completion_ids, mode, sampling.max_new_tokens)
            result = _result(view, mode, [], steps, None, state.problem.answer)
            rows.finished(ModeRow(mode, tuple(state.prompt), gold=state.problem.answer, tag=(state, mode)), result)


def _scored_steps(view: LoadedModel, prompt: list[int], ids: Sequence[int], mode: str, max_new_tokens: int) -> list:
    """A completion's steps as the step decoder yields them: exact statistics from one scoring forward."""
    from engine.core.decode import Step
    from engine.core.scoring import score

    tokens = score(view, [(prompt, ids)])[0].tokens
    end = ("eos" if ids[-1] in view.eos_ids else "length" if len(ids) == max_new_tokens
           else "context" if len(prompt) + len(ids) >= view.context_length else "length")
    source = "teacher" if mode == "teacher" else "base"
    return [Step(pos=t.pos, id=t.id, text=t.text, logprob=t.logprob, entropy=t.entropy, top=t.top, source=source,
                 end=end if index == len(tokens) - 1 else None) for index, t in enumerate(tokens)]


@dataclass
class _Pending:
    """A problem with modes still to run: its prompt, the results so far, and what later rows wait on."""

    problem: Problem
    prompt: list[int]
    missing: list[str]
    budget: tuple[int, ...] | None = None
    """The oracle's changed positions on this problem, which budget its random control."""
    results: dict[str, Any] = field(default_factory=dict)
    started: bool = False
    written: bool = False

    @property
    def complete(self) -> bool:
        return self.started and all(m in self.results for m in self.missing)


class _Figure2Rows:
    """Puts each problem's rows into the batch, and the rows that wait on another's result once it ends."""

    def __init__(self, batch: ModeBatch, pending: list[_Pending], sampling: SamplingSpec, tau: Tau | None):
        self.batch = batch
        self.pending = pending
        self.sampling = sampling
        self.tau = tau
        self.next = 0
        self.stopped = False

    def feed(self, should_stop: Callable[[], bool] | None) -> None:
        """Start problems until a batch's worth of rows waits, unless `should_stop` says to start no more."""
        while self.next < len(self.pending) and self.batch.waiting < self.batch.batch_size:
            if self.stopped or (should_stop is not None and should_stop()):
                self.stopped = True
                return
            self._start(self.pending[self.next])
            self.next += 1

    def _put(self, state: _Pending, mode: str, role: str, *, first: bool = False, tau_nats: float | None = None,
             sampling: SamplingSpec | None = None) -> None:
        gold = state.problem.answer if role == mode else None
        self.batch.put(ModeRow(mode, tuple(state.prompt), gold=gold, tau_nats=tau_nats, budget=state.budget
                               if mode == "random" else None, tag=(state, role)), first=first, sampling=sampling)

    def _start(self, state: _Pending) -> None:
        state.started = True
        missing = state.missing
        for mode in ("base", "teacher", "oracle"):
            if mode in missing and mode not in state.results:  # base and teacher may have run solo already
                self._put(state, mode, mode)
        if "random" in missing:
            if state.budget is not None:
                self._put(state, "random", "random")
            elif "oracle" not in missing:
                # The oracle's positions set the control's budget, even when the oracle bar is not asked for.
                self._put(state, "oracle", "budget")
        if "gated" in missing:
            if not self.tau.quantile:
                self._put(state, "gated", "gated", tau_nats=self.tau.value)
            elif not ("base" in missing and self.sampling.greedy):
                # The quantile is over the base's own greedy rollout: decode one when the base run is not it.
                self._put(state, "base", "reference", sampling=replace(self.sampling, greedy=True))

    def finished(self, row: ModeRow, result: InterventionResult) -> None:
        """File a row's result, and put the rows that waited on it at the front of the queue."""
        state, role = row.tag
        if role == row.mode:
            state.results[role] = _mode_record(result)
            if role == "random":
                state.results[role]["oracle_touched"] = len(state.budget)
        if role in ("oracle", "budget") and "random" in state.missing and state.budget is None:
            state.budget = oracle_positions(result)
            self._put(state, "random", "random", first=True)
        # The τ quantile's reference rollout: the reference row, or the base row itself when it is greedy.
        if "gated" in state.missing and (role == "reference" or (role == "base" and self.sampling.greedy
                                                                  and self.tau.quantile)):
            self._put(state, "gated", "gated", first=True, tau_nats=self.tau.resolve(result.entropies))
