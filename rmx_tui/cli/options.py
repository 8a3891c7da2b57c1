"""Shared CLI options: each maps one to one onto a field of an engine config."""

from __future__ import annotations

import copy
import inspect
import json
import sys
from contextlib import contextmanager
from typing import Annotated, Any, Callable, Iterator, Optional, get_args, get_origin

import typer
from typer.models import OptionInfo

from engine.core.config import ModelSpec
from engine.core.fielddocs import field_docs

Base = Annotated[str, typer.Option("--base", help="Base model: a hub id, a folder, a .gguf file, or 'demo'.")]
Teacher = Annotated[Optional[str], typer.Option("--teacher", help="Teacher model (same tokenizer as the base).")]
Adapter = Annotated[Optional[str], typer.Option("--adapter", help="PEFT LoRA adapter folder stacked on the base.")]
TeacherAdapter = Annotated[
    Optional[str], typer.Option("--teacher-adapter", help="PEFT LoRA adapter stacked on the teacher (teacher = base + adapter).")
]
Dtype = Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
Revision = Annotated[Optional[str], typer.Option("--revision", help="Hub revision when the model is a hub id.")]
TrustRemoteCode = Annotated[bool, typer.Option("--trust-remote-code", help="Run model code shipped with the checkpoint.")]
BatchSize = Annotated[Optional[int], typer.Option(
    "--batch-size",
    help="Rows decoded together (default: as many as fit in free memory, at most 64; README, 'Batch size').")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


RENAMED = {"grade_timeout": "grade_timeout_s"}
"""Options whose name predates the spec's name for the field (a public contract: `--grade-timeout`)."""


def spec_help(*specs: tuple[str, str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give each option of the decorated command that sets a field of one of `specs` ((module, class), first wins)
    that field's docstring as its help, so the spec is the one source of the text (tests/test_cli_specs.py)."""

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        params = []
        for param in signature.parameters.values():
            field = RENAMED.get(param.name, param.name)
            doc = next((docs[field] for docs in (field_docs(*spec) for spec in specs) if field in docs), None)
            if doc is not None and get_origin(param.annotation) is Annotated:
                kind, *extras = get_args(param.annotation)
                extras = [_helped(extra, doc) for extra in extras]
                param = param.replace(annotation=Annotated[tuple([kind, *extras])])  # type: ignore[valid-type]
            params.append(param)
        command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        return command

    return wrap


def spec_options(spec: type, exclude: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """Every field of the spec dataclass (but `exclude`) as an option: `--field-name` with the field's type and
    default (a bool that defaults to on gets its `--no-` form), for `with_options`; spec_help adds the help."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(spec)
    options: dict[str, tuple[Any, Any]] = {}
    for field in dataclasses.fields(spec):
        if field.name in exclude:
            continue
        flag = "--" + field.name.replace("_", "-")
        if field.default is True:
            flag += f"/--no-{flag[2:]}"
        options[field.name] = (Annotated[hints[field.name], typer.Option(flag)], field.default)
    return options


def _helped(extra: Any, doc: str) -> Any:
    """A copy of a typer option with `doc` as its help (the option may be shared by commands of other specs)."""
    if not isinstance(extra, OptionInfo):
        return extra
    helped = copy.copy(extra)
    helped.help = doc
    return helped


def model_specs(base: str, teacher: str | None, adapter: str | None, teacher_adapter: str | None,
                dtype: str, device: str, revision: str | None, trust_remote_code: bool
                ) -> tuple[ModelSpec, ModelSpec | None]:
    """Build the base and teacher specs; `--teacher-adapter` without `--teacher` means base + adapter."""
    common = dict(dtype=dtype, device=device, revision=revision, trust_remote_code=trust_remote_code)
    base_spec = ModelSpec(base, adapter=adapter, **common)
    if teacher is None and teacher_adapter is None:
        return base_spec, None
    return base_spec, ModelSpec(teacher or base, adapter=teacher_adapter, **common)


# Problem sets, prompts and Ray: the same options on every command that walks a benchmark.
Dataset = Annotated[str, typer.Option("--dataset", help="A bundled benchmark name or a .jsonl file.")]
Limit = Annotated[Optional[int], typer.Option("--limit", help="Only the first N problems.")]
Extract = Annotated[str, typer.Option("--extract", help="How answers are extracted for grading: strict (default) or lenient (also the last number anywhere); see `rmx grade`.")]
Template = Annotated[Optional[str], typer.Option("--template", help="Prompt template: qwen, qwen3, mistral, r1-distill, chat, raw or auto (the model's own, see the README).")]
RayAddress = Annotated[Optional[str], typer.Option("--ray", help="Run on a Ray cluster (pip install 'rmx\\[ray]'): auto (the cluster this node is in), local (a one-machine cluster), or the head's host:port.")]
RayRetries = Annotated[int, typer.Option("--ray-retries", help="With --ray: how often a task whose worker died is retried, from its last checkpoint or finished problem.")]
RayShards = Annotated[Optional[int], typer.Option("--ray-shards", help="With --ray: shards of the problem list (default: as many as the cluster runs at once).")]


def ray_spec(address: str | None, retries: int = 2, shards: int | None = None) -> Any:
    """The Ray cluster asked for, checked (Ray importable, the address answering) before any run folder is made;
    None runs in this process."""
    if address is None:
        return None
    from engine.recipes.lanes import RaySpec, check_reachable

    spec = RaySpec(address, max_retries=retries, shards=shards)
    check_reachable(spec)
    return spec


def print_json(data: Any) -> None:
    """One JSON document on stdout (NaN-free; floats as Python writes them)."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextmanager
def loaded_engine(ctx: typer.Context | None, base: Any, teacher: Any = None) -> Iterator[Any]:
    """The engine client of a one-shot command (`--connect`: the daemon; otherwise this process's Workbench) with
    `base` and `teacher` loaded (a daemon keeps models it already has), closed when the command is done."""
    client = engine_client(ctx, default_local=True)
    if client is None:
        from engine.service.workbench import Workbench

        client = Workbench()
    try:
        client.load(base, teacher)
        yield client
    finally:
        if hasattr(client, "close"):
            client.close()


def connected(ctx: typer.Context | None) -> bool:
    """Whether the command runs under `rmx --connect TARGET`: a job command then submits its work to that daemon."""
    options = ctx.obj if ctx is not None and isinstance(ctx.obj, dict) else {}
    return bool(options.get("connect"))


def submit_job(ctx: typer.Context | None, kind: str, config: dict[str, Any]) -> Any:
    """Start a detached job of `kind`: on the daemon under `--connect`, else from this process (the run folder is
    the truth, so no daemon is needed). Paths that exist here are made absolute: the job does not run in this folder."""
    # Importing them registers the job kinds, so that a daemon is sent their entries.
    import engine.jobs.intervene
    import engine.jobs.kinds  # noqa: F401
    from engine.jobs.store import submit_job as submit_here

    config = absolute_paths(config)
    client = engine_client(ctx, default_local=True)
    if client is None:
        return submit_here(kind, config)
    try:
        return client.submit_job(kind, config)
    finally:
        if hasattr(client, "close"):
            client.close()


def absolute_paths(value: Any) -> Any:
    """`value` with every string that names an existing file or folder here, as a relative path, made absolute.

    Only strings that look like paths (a separator, or a file suffix) are tried, so names such as `demo`,
    `smoke` or `bfloat16` stay names even when a folder of that name happens to sit here."""
    from pathlib import Path

    if isinstance(value, dict):
        return {key: absolute_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [absolute_paths(item) for item in value]
    if isinstance(value, str) and value and ("/" in value or Path(value).suffix):
        return absolute_path(value)
    return value


def absolute_path(path: str | None) -> str | None:
    """A path that exists here, made absolute: a detached job or a daemon does not run in this folder. Others (and
    `demo`) stay as given."""
    from pathlib import Path

    if path is None or path == "demo":
        return path
    local = Path(path).expanduser()
    return str(local.resolve()) if local.exists() else path


def engine_client(ctx: typer.Context | None, default_local: bool) -> Any:
    """The engine a command talks to, the same way for every command: `rmx --connect TARGET …` attaches to that
    daemon, `rmx --local …` runs the engine in this process (None: the caller makes its Workbench), and otherwise
    `default_local` decides between this process and the daemon (started if needed)."""
    options = (ctx.obj if ctx is not None and isinstance(ctx.obj, dict) else {}) or {}
    if options.get("connect"):
        from engine.service.daemon import connect

        return connect(options["connect"])
    if options.get("local") or default_local:
        return None
    from engine.service.daemon import ensure_daemon

    return ensure_daemon()
