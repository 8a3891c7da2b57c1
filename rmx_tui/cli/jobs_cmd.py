"""`rmx jobs list|show|logs|cancel|resume|repair`: the runs on this machine, read from their run dirs, or the
daemon's with `rmx --connect`."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from rmx_tui.cli.options import Json, print_json

JobId = Annotated[str, typer.Argument(help="The job id, as `rmx jobs list` shows it.")]


def _connect_target(ctx: typer.Context) -> str | None:
    options = ctx.find_root().obj
    return options.get("connect") if isinstance(options, dict) else None


def _jobs(ctx: typer.Context):
    """`rmx --connect TARGET jobs …`: the daemon's jobs, through the engine client. Otherwise the run dirs here,
    read directly: they are the truth, so this works with or without a daemon."""
    target = _connect_target(ctx)
    if target:
        from engine.service.daemon import connect

        return connect(target)
    from engine.jobs.store import LocalJobs

    return LocalJobs()


def _progress(status) -> str:
    return f"{status.step}/{status.total}" if status.total else str(status.step)


def _ago(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    seconds = max(0.0, time.time() - stamp)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _event_text(event: dict[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("t", 0)))
    fields = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("t", "step"))
    return f"{stamp}  step {event.get('step', '-')}  {fields}"


def _list(ctx: typer.Context, json: Json = False) -> None:
    """List every run, oldest first."""
    runs = _jobs(ctx).list_jobs()
    if json:
        print_json([s.to_json() for s in runs])
        return
    if not runs:
        typer.echo("no jobs yet")
        return
    width = max(len(s.id) for s in runs)
    typer.echo(f"{'ID':<{width}}  {'STATE':<9}  {'PROGRESS':>10}  {'HEARTBEAT':>10}  ERROR")
    for s in runs:
        typer.echo(f"{s.id:<{width}}  {s.state:<9}  {_progress(s):>10}  {_ago(s.heartbeat):>10}  {s.error or ''}")


def _show(ctx: typer.Context, job_id: JobId, json: Json = False) -> None:
    """Show a job's status and config."""
    view = _jobs(ctx).job(job_id)
    if json:
        print_json(view.to_json())
        return
    s, spec = view.status, view.spec
    typer.echo(f"{s.id}  {s.kind}  {s.state}  attempt {s.attempt}")
    typer.echo(f"  progress:   {_progress(s)}")
    typer.echo(f"  pid:        {s.pid or '-'}")
    typer.echo(f"  created:    {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(s.created))}")
    typer.echo(f"  heartbeat:  {_ago(s.heartbeat)}")
    if s.cluster:
        typer.echo(f"  ray:        {s.cluster}")
    if s.error:
        typer.echo(f"  error:      {s.error}")
    if s.last_event:
        typer.echo(f"  last event: {_event_text(s.last_event)}")
    if spec is None:
        typer.echo(f"  config:     unreadable; try rmx jobs repair {s.id}")
        return
    typer.echo(f"  entry:      {spec.entry}  (rmx {spec.rmx_version})")
    typer.echo(f"  config:     {spec.config}")
    if s.state == "damaged":
        typer.echo(f"  repair:     rmx jobs repair {s.id}")


Follow = Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events until the job ends.")]


def _logs(ctx: typer.Context, job_id: JobId, follow: Follow = False, json: Json = False) -> None:
    """Print a job's events (history first; with -f, then new ones as they come)."""
    for event in _jobs(ctx).job_events(job_id, follow=follow):
        if json:
            print_json(event)
        else:
            typer.echo(_event_text(event))


def _cancel(ctx: typer.Context, job_id: JobId, json: Json = False) -> None:
    """Ask a job to stop: it finishes its current step and ends `cancelled`."""
    status = _jobs(ctx).cancel_job(job_id)
    if json:
        print_json(status.to_json())
    else:
        typer.echo(f"{job_id}: cancel requested (state {status.state})")


def _resume(ctx: typer.Context, job_id: JobId, json: Json = False) -> None:
    """Relaunch a failed, cancelled or diverged job in its run dir; it continues from its checkpoints."""
    status = _jobs(ctx).resume_job(job_id)
    if json:
        print_json(status.to_json())
    else:
        typer.echo(f"{job_id}: resumed (attempt {status.attempt})")


def _repair(ctx: typer.Context, job_id: JobId, json: Json = False) -> None:
    """Rebuild a damaged run's status.json from its events.jsonl and the process table; say what is lost."""
    from engine.core.errors import RmxError
    from engine.jobs.repair import repair_run

    if _connect_target(ctx):
        raise RmxError("rmx jobs repair mends the run folders of this machine: run it there, without --connect")
    report = repair_run(job_id)
    if json:
        print_json(report.to_json())
        return
    if not report.repaired and not report.lost:
        typer.echo(f"{job_id}: not damaged ({report.status.state}); nothing to repair")
        return
    for line in report.repaired:
        typer.echo(f"repaired: {line}")
    for line in report.lost:
        typer.echo(f"lost:     {line}")
    state = report.status.state
    typer.echo(f"{job_id}: {state}" + (f" ({report.status.error})" if state == "damaged" else ""))


def register(app: typer.Typer) -> None:
    jobs = typer.Typer(help="Long work (sampling, training, sweeps, evals) runs as detached jobs; inspect them here.",
                       no_args_is_help=True)
    jobs.command("list")(_list)
    jobs.command("show")(_show)
    jobs.command("logs")(_logs)
    jobs.command("cancel")(_cancel)
    jobs.command("resume")(_resume)
    jobs.command("repair")(_repair)
    app.add_typer(jobs, name="jobs")
