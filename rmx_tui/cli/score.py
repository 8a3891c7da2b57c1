"""`rmx score` and `rmx analyze`: exact token scoring of one completion, and Table 2 over a benchmark."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from engine.core.errors import RmxError
from rmx_tui.cli import options as opt


def _read(path: str | None, text: str | None, what: str) -> str | None:
    if path is None:
        return text
    if text is not None:
        raise RmxError(f"give the {what} as --{what}-text or --{what}-file, not both")
    file = Path(path)
    if not file.is_file():
        raise RmxError(f"{what} file not found: {path}")
    return file.read_text(encoding="utf-8")


def score(
    ctx: typer.Context,
    base: opt.Base = "demo",
    teacher: opt.Teacher = None,
    adapter: opt.Adapter = None,
    teacher_adapter: opt.TeacherAdapter = None,
    prompt_text: Annotated[Optional[str], typer.Option("--prompt-text", help="The prompt: a problem, posed with the --template (raw text with --template raw).")] = None,
    prompt_file: Annotated[Optional[str], typer.Option("--prompt-file", help="Read the prompt from a file.")] = None,
    completion_text: Annotated[Optional[str], typer.Option("--completion-text", help="The completion to score.")] = None,
    completion_file: Annotated[Optional[str], typer.Option("--completion-file", help="Read the completion from a file.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Build the prompt from this dataset's problem.")] = None,
    index: Annotated[int, typer.Option("--index", help="Problem index in --dataset.")] = 0,
    template: Annotated[Optional[str], typer.Option("--template", help="qwen, qwen3, mistral, r1-distill, chat, raw or auto (default auto: the model's own, see the README).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Base alternatives reported per token.")] = 5,
    tau: Annotated[Optional[str], typer.Option("--tau", help="τ for the summary: nats (1.4) or a quantile (q0.97).")] = None,
    dtype: opt.Dtype = "auto",
    device: opt.Device = "auto",
    revision: opt.Revision = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    json_output: opt.Json = False,
) -> None:
    """Score a completion token by token: exact entropy, rank, top-k, and the teacher's pick."""
    from engine.core.config import ScoreSpec, Tau
    from engine.core.scoring import summarize

    ScoreSpec(top_k=top_k)
    gate = Tau.parse(tau) if tau is not None else None
    prompt = _read(prompt_file, prompt_text, "prompt")
    completion = _read(completion_file, completion_text, "completion")
    if dataset is not None:
        if prompt is not None:
            raise RmxError("give either --dataset or --prompt-text/--prompt-file, not both")
        from engine.core.data import get_problem

        prompt = get_problem(dataset, index).problem
        template = template or "auto"
    if prompt is None:
        raise RmxError("no prompt: give --prompt-text, --prompt-file or --dataset")
    if completion is None:
        raise RmxError("no completion: give --completion-text or --completion-file")
    if not completion:
        raise RmxError("empty completion: there is nothing to score")
    base_spec, teacher_spec = opt.model_specs(base, teacher, adapter, teacher_adapter, dtype, device, revision,
                                              trust_remote_code)
    with opt.loaded_engine(ctx, base_spec, teacher_spec) as client:  # `rmx --connect …`: the daemon's models
        choice = client.template_choice(template or "auto")
        rollout = client.score(client.prompt_ids(prompt, choice.template), client.tokenize(completion), top_k=top_k)
    rollout = replace(rollout, summary=summarize([rollout], gate))
    if json_output:
        opt.print_json({**rollout.to_json(), **choice.to_json()})
        return
    from rmx_tui.render import print_scored

    print_scored(rollout, gate)




def analyze(
    ctx: typer.Context,
    base: opt.Base = "demo",
    teacher: opt.Teacher = None,
    adapter: opt.Adapter = None,
    teacher_adapter: opt.TeacherAdapter = None,
    dataset: opt.Dataset = "smoke",
    limit: opt.Limit = None,
    tau: Annotated[str, typer.Option("--tau", help="Decision threshold: nats (1.4) or a quantile (q0.97).")] = "1.4",
    template: opt.Template = "auto",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Greedy tokens per problem.")] = 512,
    batch_size: opt.BatchSize = None,
    dtype: opt.Dtype = "auto",
    device: opt.Device = "auto",
    revision: opt.Revision = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    ray: opt.RayAddress = None,
    ray_retries: opt.RayRetries = 2,
    ray_shards: opt.RayShards = None,
    json_output: opt.Json = False,
) -> None:
    """Table 2: greedy base rollouts on a benchmark, scored against the teacher."""
    from engine.core.config import Tau

    gate = Tau.parse(tau)
    if limit is not None and limit < 1:
        raise RmxError(f"--limit must be ≥ 1, got {limit}")
    if teacher is None and teacher_adapter is None:
        raise RmxError("analyze compares the base with a teacher: give --teacher and/or --teacher-adapter")
    if ray is not None and (ctx.obj or {}).get("connect"):
        raise RmxError("--ray shards analyze from this process: leave out --connect (or --ray)")
    base_spec, teacher_spec = opt.model_specs(base, teacher, adapter, teacher_adapter, dtype, device, revision,
                                              trust_remote_code)

    from rmx_tui.cli.progress import live_or_plain

    def line(event: dict) -> str | None:
        return f"analyzed {event['analyze/done']}/{event['analyze/total']} problems" if "analyze/done" in event else None

    with live_or_plain(line) as emit:
        result = _analysis(ctx, base_spec, teacher_spec, dataset, limit, gate, template, max_new_tokens,
                           batch_size, ray, ray_retries, ray_shards,
                           lambda done, total: emit({"analyze/done": done, "analyze/total": total}))
    _print_analysis(result, base_spec, teacher_spec, dataset, gate, len(result.problems), json_output)


def _analysis(ctx, base_spec, teacher_spec, dataset, limit, gate, template, max_new_tokens, batch_size, ray,
              ray_retries, ray_shards, progress):
    """Table 2 through the engine client (this process's Workbench, or the daemon), or sharded over Ray."""
    if ray is not None:
        from engine.recipes.shards import analyze_sharded

        cluster = opt.ray_spec(ray, ray_retries, ray_shards)
        result = analyze_sharded(base_spec, teacher_spec, dataset, limit, cluster, tau=gate, template=template,
                                 max_new_tokens=max_new_tokens, batch_size=batch_size)
        return result
    with opt.loaded_engine(ctx, base_spec, teacher_spec) as client:  # `rmx --connect …`: the daemon's models
        return client.analyze(_dataset_path(dataset), limit, gate, template, max_new_tokens, batch_size,
                              on_progress=progress)


def _dataset_path(dataset: str) -> str:
    """A dataset file that exists here, made absolute (the daemon does not run in this folder); names as given."""
    from engine.core.data import BUNDLED

    return dataset if dataset in BUNDLED or dataset.startswith("hf:") else opt.absolute_path(dataset)


def _print_analysis(result, base_spec, teacher_spec, dataset, gate, count: int, json_output: bool) -> None:
    from rich.console import Console

    if json_output:
        opt.print_json(result.to_json())
        return
    from rmx_tui.render import table2

    out = Console()
    out.print(table2(result.table, f"Table 2 — {base_spec.label} vs {teacher_spec.label} on {dataset} (τ={gate})"))
    out.print(f"base pass@1: {100 * result.pass_at_1:.1f}% over {count} problems")
    if result.gate is not None:
        precision = "—" if result.gate.precision is None else f"{result.gate.precision:.3f}"
        recall = "—" if result.gate.recall is None else f"{result.gate.recall:.3f}"
        out.print(f"τ-gate vs teacher disagreements: precision {precision}, recall {recall} "
                  f"({result.gate.hits} hits / {result.gate.gated} gated / {result.gate.disagreements} disagreements)")


def register(app: typer.Typer) -> None:
    app.command("score")(score)
    app.command("analyze")(analyze)
