"""The job-config schema: each table of a job config is a spec dataclass, checked one way for the CLI's jobs, the
pipeline TOML and the TUI's launch dialog (whose templates are rendered from these specs)."""

from __future__ import annotations

import dataclasses
from typing import Any

from engine.core.config import ModelSpec
from engine.core.errors import RmxError
from engine.recipes.distill import DistillSpec
from engine.recipes.evaluate import EvalSpec
from engine.recipes.lanes import RaySpec
from engine.recipes.pool import PoolSpec
from engine.recipes.rollouts import RolloutSpec
from engine.recipes.sweep import SweepSpec
from engine.recipes.trackers import ReportSpec
from engine.recipes.train import TrainSpec

TABLES: dict[str, type] = {"model": ModelSpec, "teacher": ModelSpec, "rollouts": RolloutSpec, "pool": PoolSpec,
                           "train": TrainSpec, "sweep": SweepSpec, "eval": EvalSpec, "distill": DistillSpec,
                           "ray": RaySpec, "report": ReportSpec}
"""Each table name of a job config (and of a pipeline TOML) and the spec its values build."""
KIND_TABLES: dict[str, tuple[str, ...]] = {
    "rollouts": ("model", "rollouts"), "pool": ("pool",), "train": ("model", "train"),
    "sweep": ("model", "train", "sweep"), "eval": ("model", "eval"), "distill": ("model", "teacher", "distill")}
"""The tables each recipe job kind needs, in the order its job function reads them."""
OPTIONAL_TABLES = ("ray", "report")
"""Tables any recipe job may add: the Ray cluster and the trackers."""


def build_table(table: str, values: dict[str, Any], where: str = "job config", runtime: dict[str, Any] | None = None):
    """The spec of `[table]`: unknown keys and bad values are one RmxError line naming the table; `runtime` fills
    fields the caller sets itself (a pipeline stage's input file), which the table may not give."""
    cls = TABLES[table]
    if not isinstance(values, dict):
        raise RmxError(f"{where}: [{table}] must be a table")
    known = {f.name for f in dataclasses.fields(cls)} - set(runtime or ())
    unknown = sorted(set(values) - known)
    if unknown:
        raise RmxError(f"{where}: unknown key(s) {', '.join(unknown)} in [{table}] (known: {', '.join(sorted(known))})")
    filled = {**values, **(runtime or {})}
    for field in dataclasses.fields(cls):  # TOML and JSON have lists where the specs have tuples
        if isinstance(field.default, tuple) and isinstance(filled.get(field.name), list):
            filled[field.name] = tuple(filled[field.name])
    try:
        return cls(**filled)
    except (TypeError, ValueError) as error:
        raise RmxError(f"{where}: [{table}]: {error}") from None


def check_job_config(kind: str, config: dict[str, Any], where: str = "job config") -> list[Any]:
    """Build each table `kind` needs (and the optional ones it gives); unknown tables are refused too."""
    tables = KIND_TABLES[kind]
    unknown = sorted(set(config) - set(tables) - set(OPTIONAL_TABLES) - {"out", "foreground"})
    if unknown:
        raise RmxError(f"{where}: unknown table(s) {', '.join(unknown)} for a {kind} job "
                       f"(known: {', '.join(tables + OPTIONAL_TABLES)})")
    missing = [table for table in tables if table not in config]
    if missing:
        raise RmxError(f"{where}: a {kind} job needs [{'], ['.join(missing)}]")
    return [build_table(table, config[table], where) for table in tables]
