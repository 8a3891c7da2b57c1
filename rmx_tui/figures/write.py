"""Render a rollout in one of the export formats and write it without replacing anything by accident."""

from __future__ import annotations

import json
from pathlib import Path

from engine.core.errors import RmxError
from rmx_tui.figures.rollout_file import FORMATS, FigureRollout, write_new


def render(rollout: FigureRollout, fmt: str) -> str:
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


def export_rollout(rollout: FigureRollout, fmt: str, out: Path, force: bool = False) -> Path:
    """Write `rollout` as `fmt` to `out` (refusing an existing file unless `force`)."""
    return write_new(out, render(rollout, fmt), force)
