"""Apply each single-line science mutation to a scratch copy of the repo, run the test named to kill it, and print a
killed/survived table (tests/test_mutations.md lists the same mutations and says why each matters).

    python scripts/mutate.py              # every mutation
    python scripts/mutate.py --only M3    # one of them
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    key: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation("M1", "Table 2 scores the teacher's view with the base as teacher (base and teacher swapped)",
             "engine/recipes/analysis.py",
             "rollout = score(base, [(prompts[index], completion)], teacher, ScoreSpec())[0]",
             "rollout = score(teacher, [(prompts[index], completion)], base, ScoreSpec())[0]",
             ("tests/test_science.py::test_table2_scores_the_base_and_compares_the_teacher",)),
    Mutation("M2", "the τ sweep keeps the worst τ (max → min)",
             "engine/recipes/sweep.py",
             "return max((r for r in rows if r.score is not None), key=lambda r: r.score, default=None)",
             "return min((r for r in rows if r.score is not None), key=lambda r: r.score, default=None)",
             ("tests/test_science.py::test_the_sweep_keeps_the_tau_with_the_best_holdout_score",)),
    Mutation("M3", "no linear decay of the learning rate after warmup",
             "engine/recipes/loop.py",
             "return max(0.0, (total - step) / max(1, total - warmup))",
             "return 1.0",
             ("tests/test_science.py::test_the_learning_rate_warms_up_then_decays_linearly_to_zero",)),
    Mutation("M4", "one global advantage baseline instead of per-problem advantages",
             "engine/recipes/train.py",
             "for rollout, adv in zip(group, advantages([r.correct for r in group], spec.adv_clip)):",
             "for rollout, adv in zip(group, advantages([r.correct for g in mixed.values() for r in g], spec.adv_clip)):",
             ("tests/test_science.py::test_advantages_are_standardised_within_each_problem",)),
    Mutation("M5", "the random control may draw the teacher's own token",
             "engine/core/interventions.py",
             "banned = {ctx.argmax, teacher, ctx.pick}",
             "banned = {ctx.argmax, ctx.pick}",
             ("tests/test_interventions.py::test_random_control_draws_uniformly_from_the_base_top20_minus_argmax_and_teacher",)),
    Mutation("M6", "the random control touches every teacher disagreement on its own path (more than the oracle)",
             "engine/core/interventions.py",
             "if left == 0 or (ctx.pos not in scheduled[ctx.row] and ctx.pick not in eos_ids):",
             "if int(ctx.teacher_logits().argmax()) == ctx.argmax:",
             ("tests/test_interventions.py", "-k", "random_control")),
    Mutation("M7", "the contrastive direction flipped (−A·log p → +A·log p)",
             "engine/recipes/train.py",
             "return -advantage * target_logp",
             "return advantage * target_logp",
             ("tests/test_science.py::test_the_contrastive_step_raises_correct_and_lowers_wrong_decision_tokens",)),
    Mutation("M8", "Figure 2 counts the base's verdicts for every bar",
             "engine/recipes/experiments.py",
             'verdicts = [bool(r["modes"][mode]["correct"]) for r in done]',
             'verdicts = [bool(r["modes"]["base"]["correct"]) for r in done]',
             ("tests/test_science.py::test_figure2_oracle_reproduces_a_teacher_that_is_actually_right",)),
    Mutation("M9", "the oracle never corrects (it keeps the base where the teacher disagrees)",
             "engine/core/interventions.py",
             'return (teacher, "teacher") if teacher != ctx.argmax else None',
             'return (teacher, "teacher") if teacher == ctx.argmax else None',
             ("tests/test_science.py::test_figure2_oracle_reproduces_a_teacher_that_is_actually_right",)),
    Mutation("M10", "rollouts grade the prompt instead of the completion",
             "engine/recipes/rollouts.py",
             "text = tokenizer.decode(list(sample.completion_ids), skip_special_tokens=True)",
             "text = tokenizer.decode(list(request.prompt_ids), skip_special_tokens=True)",
             ("tests/test_science.py::test_rollouts_and_eval_grade_real_answers_with_the_real_grader",)),
    Mutation("M11", "eval grades the prompt instead of the completion",
             "engine/recipes/evaluate.py",
             "text = current.tokenizer.decode(list(sample.completion_ids), skip_special_tokens=True)",
             "text = current.tokenizer.decode(list(request.prompt_ids), skip_special_tokens=True)",
             ("tests/test_science.py::test_rollouts_and_eval_grade_real_answers_with_the_real_grader",)),
    Mutation("M12", "strict grading falls back to the last number anywhere",
             "engine/core/grading.py",
             'if mode == "lenient":',
             "if True:",
             ("tests/test_grading.py", "-k", "false_positives")),
    Mutation("M13", "a cut-off last box falls back to an earlier one",
             "engine/core/grading.py",
             "    return \"\", False\n",
             "    return (contents[max(contents)], True) if contents else (\"\", False)\n",
             ("tests/test_grading.py", "-k", "false_positives or cut_off")),
    Mutation("M14", "`auto` picks the chat template whenever the tokenizer has one (Qwen2.5 bases included)",
             "engine/core/prompts.py",
             "    family = FAMILY_TEMPLATES.get(facts.model_type or \"\")\n",
             "    family = \"chat\" if chat else FAMILY_TEMPLATES.get(facts.model_type or \"\")\n",
             ("tests/test_prompts.py",)),
    Mutation("M15", "--keep-shortest trims across all problems at once",
             "engine/recipes/pool.py",
             "    for group in group_by_problem(rollouts).values():\n",
             "    for group in [list(rollouts)]:\n",
             ("tests/test_pool.py", "-k", "trim")),
)


def copy_repo(target: Path) -> None:
    """The tracked and untracked-but-not-ignored files of the working tree, as they are now."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        name = raw.decode()
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def run(mutation: Mutation, scratch: Path, timeout: int) -> tuple[str, float, str]:
    file = scratch / mutation.path
    original = file.read_text()
    if original.count(mutation.old) != 1:
        return "not applied", 0.0, f"the line to mutate occurs {original.count(mutation.old)} times in {mutation.path}"
    file.write_text(original.replace(mutation.old, mutation.new))
    env = {**os.environ, "PYTHONPATH": str(scratch)}
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutation.tests],
                              cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
        verdict = "killed" if done.returncode == 1 else ("survived" if done.returncode == 0 else f"error {done.returncode}")
        tail = (done.stdout.strip().splitlines() or [""])[-1]
    except subprocess.TimeoutExpired:
        verdict, tail = "timeout", f"over {timeout} s"
    finally:
        file.write_text(original)
    return verdict, time.monotonic() - started, tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", help="run only this mutation (M1…); repeatable")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per mutation's test run")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.key in args.only]
    if not chosen:
        parser.error(f"no mutation named {args.only}: use one of {', '.join(m.key for m in MUTATIONS)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="rmx-mutate-") as scratch:
        copy_repo(Path(scratch))
        for mutation in chosen:
            verdict, seconds, tail = run(mutation, Path(scratch), args.timeout)
            results.append((mutation, verdict, seconds, tail))
            print(f"{mutation.key:<4} {verdict:<9} {seconds:6.1f}s  {mutation.what}", flush=True)
    print("\n| mutation | what | test | result |\n|---|---|---|---|")
    for mutation, verdict, _seconds, tail in results:
        print(f"| {mutation.key} | {mutation.what} | `{' '.join(mutation.tests)}` | {verdict} ({tail}) |")
    return 0 if all(verdict == "killed" for _, verdict, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
