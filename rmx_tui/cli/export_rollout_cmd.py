"""`rmx export`: a rollout file (or a branch comparison) as a self-contained HTML page, an SVG figure, a LaTeX
snippet or plain JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from engine.core.errors import RmxError


def export(
    rollout: Annotated[str, typer.Argument(help="A rollout export: the workbench's X file (a branch comparison when X was pressed on a fork), or `rmx score --json` output.")],
    fmt: Annotated[str, typer.Option("--format", help="html (hover details), svg (a figure), tex (\\colorbox per token) or json.")] = "html",
    out: Annotated[Optional[str], typer.Option("--out", help="Where to write (default: next to ROLLOUT, suffix = format).")] = None,
    start: Annotated[Optional[int], typer.Option("--start", help="First token of the span to show (0-based).")] = None,
    end: Annotated[Optional[int], typer.Option("--end", help="Token after the span's last (default: the end).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Export a rollout for a paper or a slide: the heatmap, the teacher's marks, forced tokens, a legend. A branch
    comparison shows the fork beside its parent, aligned at the fork position, with both answers."""
    from rmx_tui.figures.comparison import FigureComparison
    from rmx_tui.figures.rollout_file import FORMATS
    from rmx_tui.figures.write import export_rollout, load_figure

    if fmt not in FORMATS:
        raise RmxError(f"unknown --format '{fmt}': use one of {', '.join(FORMATS)}")
    source = Path(rollout)
    figure = load_figure(source)
    if isinstance(figure, FigureComparison):
        if start is not None or end is not None:
            raise RmxError(f"{source} is a branch comparison: --start/--end pick a span of one rollout")
    else:
        figure = figure.span(start, end)
    target = Path(out) if out else source.with_suffix(f".{fmt}")
    if target.resolve() == source.resolve():
        raise RmxError(f"{target} is the rollout being exported: give another --out")
    written = export_rollout(figure, fmt, target, force)
    if isinstance(figure, FigureComparison):
        typer.echo(f"wrote {written} (a fork at token {figure.fork}: {len(figure.parent.tokens)} parent and "
                   f"{len(figure.branch.tokens)} branch tokens, {fmt})")
    else:
        typer.echo(f"wrote {written} ({len(figure.tokens)} tokens, {fmt})")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
