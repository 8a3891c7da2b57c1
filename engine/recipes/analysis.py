"""The paper's Table 2 over a benchmark: greedy base rollouts scored against a teacher (§3.1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from engine.core.config import ScoreSpec, Tau
from engine.core.data import Problem
from engine.core.batch_memory import choose_batch_size, measure_fit
from engine.core.decode import SamplingSpec
from engine.core.lockstep import RowRequest, decode_rows
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

    def to_json(self, with_rollouts: bool = False) -> dict:
        """The public `rmx analyze --json` shape; `with_rollouts` adds each problem's scored rollout, what
        `from_json` needs to rebuild it (how the daemon sends it)."""
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
                 "finish": p.finish, "summary": summarize([p.rollout]).to_json(),
                 **({"rollout": p.rollout.to_json(with_ids=True)} if with_rollouts else {})}
                for p in self.problems
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> "Analysis":
        """Rebuild from `to_json(with_rollouts=True)`."""
        gate = data.get("gate")
        return cls(
            table=Table2(**data["summary"]),
            gate=GateQuality(**gate) if gate is not None else None,
            pass_at_1=data["pass@1"],
            problems=tuple(AnalyzedProblem(p["id"], ScoredRollout.from_json(p["rollout"]), p["answer"], p["correct"],
                                           p["finish"]) for p in data["problems"]),
            template=TemplateChoice(data["template"], data["template_reason"]) if "template" in data else None,
        )


def greedy_rollouts(base: LoadedModel, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                    batch_size: int) -> Iterator[tuple[int, list[int], str]]:
    """(prompt index, greedy completion ids, why it stopped) for each prompt as soon as its row ends.

    Up to `batch_size` rows decode together; a finished row's slot goes to the next prompt.
    """
    sampling = SamplingSpec(greedy=True, max_new_tokens=max_new_tokens)
    ids: dict[int, list[int]] = {}
    for step in decode_rows(base, [RowRequest(prompt=tuple(p)) for p in prompts], sampling, batch_size=batch_size,
                            top=1):
        ids.setdefault(step.row, []).append(step.id)
        if step.end is not None:
            yield step.row, ids.pop(step.row), step.end


def analyze(base: LoadedModel, teacher: LoadedModel | None, problems: Sequence[Problem], *, tau: Tau,
            template: str | None = "auto", max_new_tokens: int = 512, batch_size: int | None = None,
            on_progress: Callable[[int, int], None] | None = None) -> Analysis:
    """Greedy-decode the base on each problem, score each output against the teacher, and tabulate.

    `batch_size` rows decode together (None: as many as fit in free memory, engine.core.batch_memory);
    each rollout is scored as soon as its row ends.
    """
    total = len(problems)
    choice = choose_template(template, base.tokenizer, base.template_facts)
    prompts = [prompt_ids(base.tokenizer, p.problem, choice.template) for p in problems]
    fit = measure_fit([base], max((len(p) for p in prompts), default=1), max_new_tokens)
    size = choose_batch_size(batch_size, fit, max(1, total))
    by_index: dict[int, AnalyzedProblem] = {}
    done = 0
    for index, completion, finish in greedy_rollouts(base, prompts, max_new_tokens, size):
        problem = problems[index]
        text = base.tokenizer.decode(completion, skip_special_tokens=True)
        graded = grade(text, problem.answer, finish=finish)
        rollout = score(base, [(prompts[index], completion)], teacher, ScoreSpec())[0]
        by_index[index] = AnalyzedProblem(problem.id, rollout, graded.extracted, graded.correct, finish)
        done += 1
        if on_progress is not None:
            on_progress(done, total)
    return tabulate([by_index[i] for i in sorted(by_index)], tau, teacher is not None, choice)


def tabulate(analyzed: Sequence[AnalyzedProblem], tau: Tau, with_teacher: bool,
             template: TemplateChoice | None) -> Analysis:
    """Table 2, the gate's quality and pass@1 over analysed problems (one run's, or a sharded run's in order)."""
    rollouts = [p.rollout for p in analyzed]
    table = summarize(rollouts, tau)
    tokens = [t for r in rollouts for t in r.tokens]
    gate = gate_quality(tokens, table.tau) if with_teacher and table.tau is not None else None
    pass_at_1 = sum(p.correct for p in analyzed) / len(analyzed) if analyzed else 0.0
    return Analysis(table=table, gate=gate, pass_at_1=pass_at_1, problems=tuple(analyzed), template=template)
