"""`rmx score` and `rmx analyze`: exact token scoring of one completion, and Table 2 over a benchmark."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from engine.errors import RmxError
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
    base: opt.Base = "demo",
    teacher: opt.Teacher = None,
    adapter: opt.Adapter = None,
    teacher_adapter: opt.TeacherAdapter = None,
    prompt_text: Annotated[Optional[str], typer.Option("--prompt-text", help="The prompt (or problem, with --template).")] = None,
    prompt_file: Annotated[Optional[str], typer.Option("--prompt-file", help="Read the prompt from a file.")] = None,
    completion_text: Annotated[Optional[str], typer.Option("--completion-text", help="The completion to score.")] = None,
    completion_file: Annotated[Optional[str], typer.Option("--completion-file", help="Read the completion from a file.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Build the prompt from this dataset's problem.")] = None,
    index: Annotated[int, typer.Option("--index", help="Problem index in --dataset.")] = 0,
    template: Annotated[Optional[str], typer.Option("--template", help="qwen, qwen3, mistral, r1-distill, chat, raw or auto (default: raw for text, auto for --dataset).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Base alternatives reported per token.")] = 5,
    tau: Annotated[Optional[str], typer.Option("--tau", help="τ for the summary: nats (1.4) or a quantile (q0.97).")] = None,
    dtype: opt.Dtype = "auto",
    device: opt.Device = "auto",
    revision: opt.Revision = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    json_output: opt.Json = False,
) -> None:
    """Score a completion token by token: exact entropy, rank, top-k, and the teacher's pick."""
    from engine.client import LocalClient
    from engine.config import ScoreSpec, Tau
    from engine.scoring import summarize

    ScoreSpec(top_k=top_k)
    gate = Tau.parse(tau) if tau is not None else None
    prompt = _read(prompt_file, prompt_text, "prompt")
    completion = _read(completion_file, completion_text, "completion")
    if dataset is not None:
        if prompt is not None:
            raise RmxError("give either --dataset or --prompt-text/--prompt-file, not both")
        from engine.data import get_problem

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
    client = LocalClient()
    client.load(base_spec, teacher_spec)
    rollout = client.score(client.prompt_ids(prompt, template or "raw"), client.tokenize(completion), top_k=top_k)
    rollout = replace(rollout, summary=summarize([rollout], gate))
    if json_output:
        opt.print_json(rollout.to_json())
        return
    from rmx_tui.render import print_scored

    print_scored(rollout, gate)


def register(app: typer.Typer) -> None:
    app.command("score")(score)
