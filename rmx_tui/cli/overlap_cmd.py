"""`rmx overlap`: do a teacher and a trained adapter edit the same forks of the base's greedy rollouts?"""

from __future__ import annotations

from typing import Annotated

import typer

from engine.core.errors import RmxError
from rmx_tui.cli import options as opt


def overlap(
    adapter: Annotated[str, typer.Option("--adapter", help="The PEFT adapter to compare with the teacher (base + adapter).")],
    base: opt.Base = "demo",
    teacher: opt.Teacher = None,
    teacher_adapter: opt.TeacherAdapter = None,
    dataset: opt.Dataset = "smoke",
    limit: opt.Limit = None,
    tau: Annotated[str, typer.Option("--tau", help="The gate whose coverage is reported: nats (1.4) or a quantile (q0.9).")] = "q0.9",
    template: opt.Template = "auto",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Greedy base tokens per problem.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Problems decoded together.")] = 8,
    dtype: opt.Dtype = "auto",
    device: opt.Device = "auto",
    revision: opt.Revision = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    json_output: opt.Json = False,
) -> None:
    """Edit overlap: where the teacher and the adapter each change the base's argmax, and whether they agree."""
    from engine.core.config import ModelSpec
    from engine.core.data import load_problems
    from engine.recipes.overlap import OverlapSpec, overlap_table, run_overlap

    spec = OverlapSpec(tau=tau, max_new_tokens=max_new_tokens, template=template, batch_size=batch_size)
    if limit is not None and limit < 1:
        raise RmxError(f"--limit must be ≥ 1, got {limit}")
    if teacher is None and teacher_adapter is None:
        raise RmxError("overlap compares a teacher with the adapter: give --teacher and/or --teacher-adapter")
    common = dict(dtype=dtype, device=device, revision=revision, trust_remote_code=trust_remote_code)
    base_spec = ModelSpec(base, **common)
    teacher_spec = ModelSpec(teacher or base, adapter=teacher_adapter, **common)
    problems = load_problems(dataset, limit=limit)
    from rich.console import Console

    console = Console(stderr=True)
    result = run_overlap(base_spec, teacher_spec, adapter, problems, spec,
                         on_progress=lambda done, total: console.print(f"compared {done}/{total} problems",
                                                                       highlight=False))
    if json_output:
        opt.print_json(result.to_json())
        return
    print(overlap_table(result))


def register(app: typer.Typer) -> None:
    app.command("overlap")(overlap)
