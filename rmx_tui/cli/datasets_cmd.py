"""`rmx datasets`: the bundled benchmarks and training pools."""

from __future__ import annotations

import typer

from rmx_tui.cli import options as opt


def datasets(json_output: opt.Json = False) -> None:
    """List the bundled datasets (use any name, or a path to your own .jsonl, with --dataset)."""
    from engine.core.data import list_datasets

    rows = list_datasets()
    if json_output:
        opt.print_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="bundled datasets")
    for column in ("name", "rows", "description"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for row in rows:
        table.add_row(row["name"], str(row["rows"]), row["description"])
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("datasets")(datasets)
