"""Render a rollout or a branch comparison in one of the export formats, and write it without replacing anything by
accident."""

from __future__ import annotations

import json
from pathlib import Path

from engine.core.errors import RmxError
from rmx_tui.figures.comparison import FigureComparison, comparison_from_data, is_comparison, render_comparison
from rmx_tui.figures.rollout_file import FORMATS, FigureRollout, read_export, rollout_from_data, write_new

Figure = FigureRollout | FigureComparison


def load_figure(path: Path) -> Figure:
    """A rollout export or a branch comparison export; a missing or malformed file is an RmxError naming it."""
    data = read_export(path)
    if is_comparison(data):
        return comparison_from_data(data, str(path))
    return rollout_from_data(data, str(path), path.stem)


def render(rollout: Figure, fmt: str) -> str:
    if isinstance(rollout, FigureComparison):
        return render_comparison(rollout, fmt)
    if fmt == "html":
        from rmx_tui.figures.html import render_html

        return render_html(rollout)
    if fmt == "svg":
        from rmx_tui.figures.svg import render_svg

        return render_svg(rollout)
    if fmt == "tex":
        from rmx_tui.figures.tex import render_tex

        return render_tex(rollout)
    if fmt == "json":
        return json.dumps(rollout.to_json(), ensure_ascii=False, indent=1) + "\n"
    raise RmxError(f"unknown export format '{fmt}': use one of {', '.join(FORMATS)}")


def export_rollout(rollout: Figure, fmt: str, out: Path, force: bool = False) -> Path:
    """Write `rollout` (or a comparison) as `fmt` to `out` (refusing an existing file unless `force`)."""
    return write_new(out, render(rollout, fmt), force)
