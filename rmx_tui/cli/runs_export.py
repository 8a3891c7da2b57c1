"""`rmx runs export RUN --to tensorboard`: a finished (or running) run's events, mirrored to a tracker after the fact."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rmx_tui.cli.options import Json, print_json


def runs_export(
    run: Annotated[str, typer.Argument(help="A job id (`rmx jobs list`) or a run folder with events.jsonl.")],
    to: Annotated[list[str], typer.Option("--to", help="tensorboard, trackio or wandb (repeat for several).")],
    logdir: Annotated[Optional[str], typer.Option("--logdir", help="TensorBoard folder (default: RUN/tensorboard).")] = None,
    project: Annotated[str, typer.Option("--project", help="trackio / W&B project.")] = "rmx",
    json: Json = False,
) -> None:
    """Replay a run folder's events.jsonl into trackers: its slash-key metrics, config, and a sweep's τ lanes."""
    from engine.core.errors import RmxError
    from engine.jobs.store import find_run, read_spec, tail_events
    from engine.recipes.trackers import Mirror, ReportSpec, mirror_events

    spec = ReportSpec(tuple(to), project)
    if not spec.report_to:
        raise RmxError("--to names no tracker: tensorboard, trackio or wandb")
    folder = Path(run).expanduser() if Path(run).expanduser().is_dir() else find_run(run)
    if not (folder / "events.jsonl").is_file():
        raise RmxError(f"{folder} has no events.jsonl: give a job id or a run folder")
    target = Path(logdir).expanduser() if logdir else folder / "tensorboard"
    if "tensorboard" in spec.report_to and target.exists() and any(target.iterdir()):
        raise RmxError(f"{target} already holds TensorBoard logs: remove it, or pass --logdir")
    job = read_spec(folder)
    mirror = Mirror(spec, folder.name, folder, dict(job.config), job.kind, logdir=target)
    count = mirror_events(list(tail_events(folder, follow=False)), mirror)
    summary = {"run": folder.name, "to": list(spec.report_to), "events": count,
               "logdir": str(target) if "tensorboard" in spec.report_to else None}
    if json:
        print_json(summary)
        return
    typer.echo(f"{count} events of {folder.name} exported to {', '.join(spec.report_to)}")
    if summary["logdir"]:
        typer.echo(f"  tensorboard --logdir {target}")
