"""`rmx export-adapter`: a run's adapter as a plain PEFT folder for serving stacks, or merged into its base."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rmx_tui.cli.options import Json, print_json


def export_adapter(
    run: Annotated[str, typer.Argument(help="A train/distill/sweep/pipeline run folder, a job id, or an adapter folder.")],
    merge: Annotated[Optional[str], typer.Option("--merge", help="Write the base with the adapter merged in here.")] = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Write the adapter here, its base named for vLLM/PEFT.")] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="Base to merge into (default: the adapter's own).")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="Merged weights: auto (the base's), float32, bfloat16, float16.")] = "auto",
    json: Json = False,
) -> None:
    """Export a ReasonMaxxer adapter: --out for vLLM's --lora-modules, --merge for a standalone HF model."""
    from engine.recipes.export import ExportSpec, export_adapter as run_export

    spec = ExportSpec(run=_run_folder(run), out=out, merge=merge, base=base, dtype=dtype)
    result = run_export(spec)
    if json:
        print_json(result.to_json())
        return
    typer.echo(f"adapter {result.adapter} (base {result.base})")
    if result.out:
        typer.echo(f"  adapter  -> {result.out}")
    if result.merged:
        typer.echo(f"  merged   -> {result.merged}")


def _run_folder(run: str) -> str:
    """A job id names the adapter its result.json lists (else its run dir's artifacts); anything else is a path."""
    if Path(run).expanduser().exists():
        return run
    from engine.jobs.store import JobNotFound, find_run, run_outputs

    try:
        folder = find_run(run)
    except JobNotFound:
        return run  # the export says it found nothing there
    return run_outputs(folder).get("adapter") or str(folder / "artifacts")


def register(app: typer.Typer) -> None:
    app.command("export-adapter")(export_adapter)
