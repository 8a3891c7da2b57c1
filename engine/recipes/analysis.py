"""The paper's Table 2 over a benchmark: greedy base rollouts scored against a teacher (§3.1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from engine.core.config import ScoreSpec, Tau
from engine.core.data import Problem
from engine.core.decode import SamplingSpec, decode_batch
from engine.core.grading import grade
from engine.core.models import LoadedModel
from engine.core.prompts import TemplateChoice, choose_template, prompt_ids
from engine.core.records import ScoredRollout, Table2
from engine.core.scoring import GateQuality, gate_quality, score, summarize


@dataclass(frozen=True)
class AnalyzedProblem:
    """One problem's greedy base rollout, graded and scored."""

    problem_id: str
    rollout: ScoredRollout
    answer: str | None
    correct: bool
    finish: str


@dataclass(frozen=True)
class Analysis:
    """Table 2 for a benchmark, the base's pass@1, and how well the entropy gate finds disagreements."""

    table: Table2
    gate: GateQuality | None
    pass_at_1: float
    problems: tuple[AnalyzedProblem, ...]
    template: TemplateChoice | None = None
    """The prompt template the problems were posed with, and why."""

    def to_json(self) -> dict:
        gate = self.gate
        return {
            **(self.template.to_json() if self.template is not None else {}),
            "summary": self.table.to_json(),
            "gate": None if gate is None else {
                "tau": gate.tau, "gated": gate.gated, "disagreements": gate.disagreements, "hits": gate.hits,
                "precision": gate.precision, "recall": gate.recall,
            },
            "pass@1": self.pass_at_1,
            "problems": [
                {"id": p.problem_id, "tokens": len(p.rollout.tokens), "answer": p.answer, "correct": p.correct,
                 "finish": p.finish, "summary": summarize([p.rollout]).to_json()}
                for p in self.problems
            ],
        }


def greedy_rollouts(base: LoadedModel, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                    batch_size: int) -> list[tuple[list[int], str]]:
    """Greedy completions (ids, why it stopped) for each prompt, decoded `batch_size` at a time."""
    sampling = SamplingSpec(greedy=True, max_new_tokens=max_new_tokens)
    results: list[tuple[list[int], str]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        ids: list[list[int]] = [[] for _ in chunk]
        ends = ["length"] * len(chunk)
        for step in decode_batch(base, chunk, sampling, top=1):
            ids[step.row].append(step.id)
            if step.end is not None:
                ends[step.row] = step.end
        results.extend(zip(ids, ends))
    return results


def analyze(base: LoadedModel, teacher: LoadedModel | None, problems: Sequence[Problem], *, tau: Tau,
            template: str | None = "auto", max_new_tokens: int = 512, batch_size: int = 8,
            on_progress: Callable[[int, int], None] | None = None) -> Analysis:
    """Greedy-decode the base on each problem, score each output against the teacher, and tabulate."""
    analyzed: list[AnalyzedProblem] = []
    total = len(problems)
    choice = choose_template(template, base.tokenizer, base.template_facts)
    for start in range(0, total, batch_size):
        chunk = problems[start : start + batch_size]
        prompts = [prompt_ids(base.tokenizer, p.problem, choice.template) for p in chunk]
        for problem, prompt, (completion, finish) in zip(chunk, prompts,
                                                         greedy_rollouts(base, prompts, max_new_tokens, batch_size)):
            text = base.tokenizer.decode(completion, skip_special_tokens=True)
            graded = grade(text, problem.answer)
            rollout = score(base, [(prompt, completion)], teacher, ScoreSpec())[0] if completion else None
            if rollout is not None:
                analyzed.append(AnalyzedProblem(problem.id, rollout, graded.extracted, graded.correct, finish))
        if on_progress is not None:
            on_progress(min(start + batch_size, total), total)
    rollouts = [p.rollout for p in analyzed]
    table = summarize(rollouts, tau)
    tokens = [t for r in rollouts for t in r.tokens]
    gate = gate_quality(tokens, table.tau) if teacher is not None and table.tau is not None else None
    pass_at_1 = sum(p.correct for p in analyzed) / total if total else 0.0
    return Analysis(table=table, gate=gate, pass_at_1=pass_at_1, problems=tuple(analyzed), template=choice)
