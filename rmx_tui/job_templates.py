"""A commented TOML config per job kind, rendered from the job-config schema's specs and sized to run on a CPU, and
the edited TOML read back through the same specs."""

from __future__ import annotations

import dataclasses
import json
import textwrap
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from engine.core.config import ModelSpec
from engine.core.decode import SamplingSpec
from engine.core.errors import RmxError
from engine.core.fielddocs import field_docs
from engine.jobs.store import JobStatus
from engine.recipes.schema import KIND_TABLES, TABLES, check_job_config
from engine.service.workbench import WorkbenchInfo

KINDS = ("selftest", "intervene", "rollouts", "pool", "train", "sweep", "eval", "distill", "pipeline")
"""The kinds a user can launch, in the order the paper's workflow uses them (selftest first: it needs no model)."""
NO_ROLLOUTS = "/path/to/rollouts.jsonl"
"""Stands in for a rollouts file until a rollouts run has finished: nothing is there, and the engine says so."""


@dataclass(frozen=True)
class Defaults:
    """What the templates are filled with: the workbench's models when loaded (else the demo), the newest outputs."""

    base: str = "demo"
    base_adapter: str | None = None
    teacher: str = "demo"
    """The demo ships one model: it is its own teacher, as in `rmx demo`."""
    teacher_adapter: str | None = None
    rollouts: str | None = None
    """The rollouts file the newest finished rollouts run lists in its result.json."""
    pool: str | None = None
    """The pool file the newest finished pool run lists in its result.json."""

    @classmethod
    def of(cls, info: WorkbenchInfo | None, statuses: Iterable[JobStatus],
           outputs: Callable[[str], dict[str, str]]) -> "Defaults":
        """From the loaded models and the listed runs; `outputs(job_id)` is what a run's result.json lists, as the
        jobs client reports it (so a daemon on another machine answers for its own runs)."""
        base = info.base if info is not None else None
        teacher = (info.teacher or base) if info is not None else None
        finished = sorted((s for s in statuses if s.state == "done"), key=lambda s: (s.created, s.id))

        def newest(kind: str) -> str | None:
            """The `kind` output of the newest finished run of that kind, as its result.json lists it."""
            return next((output for s in reversed(finished) if s.kind == kind
                         for output in [outputs(s.id).get(kind)] if output), None)

        return cls(base=base.source if base else "demo", base_adapter=base.adapter if base else None,
                   teacher=teacher.source if teacher else "demo", teacher_adapter=teacher.adapter if teacher else None,
                   rollouts=newest("rollouts"), pool=newest("pool"))


def _quoted(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's."""
    return json.dumps(text, ensure_ascii=False)


def _toml(value: Any) -> str:
    """A field's value as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def render_table(table: str, spec: type, values: dict[str, Any]) -> str:
    """`[table]` with every field of the spec dataclass: its docstring as a comment, then the field set to its
    value in `values`, else to the spec's default; a field left unset (None) is commented out. A field added to a
    spec appears here by itself."""
    docs = field_docs(spec.__module__, spec.__name__)
    lines = [f"[{table}]"]
    for field in dataclasses.fields(spec):
        value = values.get(field.name, field.default)
        lines += [f"# {line}" for line in textwrap.wrap(docs.get(field.name, ""), 110)]
        lines.append(f"# {field.name} =" if value is None or value is dataclasses.MISSING
                     else f"{field.name} = {_toml(value)}")
    return "\n".join(lines) + "\n"


CPU_SIZED: dict[str, dict[str, Any]] = {
    "rollouts": {"dataset": "smoke", "limit": 8, "k": 4, "max_new_tokens": 128, "template": "chat"},
    "pool": {"size": 4},
    "train": {"tau": "q0.95", "grad_accum": 4, "max_steps": 4, "negative": "bounded", "max_tokens": 256},
    "sweep": {"taus": ("q0.9", "q0.95"), "holdout": 4, "holdout_dataset": "smoke", "holdout_offset": 10,
              "max_new_tokens": 128, "template": "chat"},
    "eval": {"benchmarks": ("smoke",), "limit": 4, "max_new_tokens": 128, "template": "chat", "avg_benchmarks": ()},
    "distill": {"top_k": 16, "epochs": 1, "grad_accum": 2, "max_tokens": 256},
}
"""Where a template departs from the spec's defaults (the paper's recipe): small enough to run on a CPU."""
HEADERS = {
    "rollouts": "# rollouts: k graded completions per problem; result.json lists the rollouts file.",
    "pool": "# pool: the problems with mixed success, the training pool; result.json lists the pool file.",
    "train": "# train: a ReasonMaxxer LoRA on the pool's decision points; result.json lists the adapter.",
    "sweep": "# sweep: one adapter per τ, each scored on a holdout; the best is kept (result.json lists it).",
    "eval": "# eval: the model's scores on benchmarks (greedy pass@1, or avg@k); result.json lists the report.",
    "distill": "# distill: KL-LoRA, a LoRA fitted to the teacher's top-k; result.json lists the adapter.",
}
"""Each recipe kind's first line; the rest of its template is its tables, rendered from the schema."""


def _model(table: str, source: str, adapter: str | None) -> str:
    return render_table(table, ModelSpec, {"source": source, "adapter": adapter})


def _recipe(kind: str, defaults: Defaults) -> str:
    """The tables of a recipe job kind (engine.recipes.schema.KIND_TABLES), rendered from their specs."""
    source = defaults.pool or defaults.rollouts if kind == "train" or kind == "sweep" else defaults.rollouts
    needs_file = kind in ("pool", "train", "sweep", "distill")
    header = HEADERS[kind] + "\n"
    if needs_file and source is None:
        header += f"# Run a rollouts job first, then put the rollouts file it lists in place of {NO_ROLLOUTS}.\n"
    tables = []
    for table in KIND_TABLES[kind]:
        if table == "model":
            tables.append(_model("model", defaults.base, defaults.base_adapter))
        elif table == "teacher":
            tables.append(_model("teacher", defaults.teacher, defaults.teacher_adapter))
        else:
            values = dict(CPU_SIZED.get(table, {}))
            if table in ("pool", "train", "distill"):
                values["rollouts"] = source or NO_ROLLOUTS
            tables.append(render_table(table, TABLES[table], values))
    return header + "\n" + "\n".join(tables)


def template(kind: str, defaults: Defaults = Defaults()) -> str:
    """The commented TOML a user edits to launch `kind`: its tables are the job config's top-level keys."""
    if kind in KIND_TABLES:
        return _recipe(kind, defaults)
    if kind == "selftest":
        return ("# selftest: counts to `count`, one event per step; a real job that needs no model.\n"
                "count = 20\n"
                "sleep = 0.1                 # seconds per step, at most 10\n"
                "# fail_at = 10              # fail the first attempt at this step (r resumes it)\n"
                "# diverge_at = 10           # end the first attempt diverged at this step\n")
    if kind == "intervene":
        return ("# intervene: the paper's Figure 2, each mode's decodes of each problem, graded.\n"
                'dataset = "smoke"           # a bundled benchmark, a .jsonl path or hf:NAME[:split]\n'
                "limit = 2                   # the first N problems (remove for all)\n"
                'modes = ["base", "teacher", "oracle", "random", "gated"]\n'
                'tau = "q0.97"               # the gate: nats (1.2, the paper) or a quantile\n'
                'template = "chat"           # qwen, qwen3, mistral, r1-distill, chat, raw or auto\n'
                "# out = \"/abs/out.jsonl\"     # default: the run's artifacts/figure2.jsonl\n\n"
                + _model("base", defaults.base, defaults.base_adapter) + "\n"
                + _model("teacher", defaults.teacher, defaults.teacher_adapter) + "\n"
                + render_table("sampling", SamplingSpec, {"max_new_tokens": 128}))
    if kind == "pipeline":
        return _pipeline(defaults)
    raise RmxError(f"no template for job kind '{kind}': use one of {', '.join(KINDS)}")


PIPELINE: dict[str, dict[str, Any]] = {
    "rollouts": {"dataset": "smoke", "limit": 12, "k": 8, "max_new_tokens": 128, "temperature": 0.6, "top_p": 0.95,
                 "template": "chat"},
    "pool": {"size": 8, "keep_shortest": 1.0},
    "train": {"tau": "q0.95", "grad_accum": 4, "lr": 1e-4, "negative": "bounded", "lora_r": 32, "lora_alpha": 64},
    "eval": {"benchmarks": ("smoke",), "max_new_tokens": 128, "template": "chat"},
}
"""Where the pipeline template departs from the specs' defaults: examples/pipeline-demo.toml's values (a test holds
the two to the same specs), sized for a 2-core CPU."""


def _pipeline(defaults: Defaults) -> str:
    """The pipeline's tables rendered from their specs with examples/pipeline-demo.toml's values, on the loaded base.

    A stage's input file (`rollouts` of [pool] and [train]) is the previous stage's output, so it stays commented."""
    from engine.recipes.pipeline import RUNTIME_FIELDS

    header = ("# pipeline: rollouts → pool → train → eval of base and tuned, with artifacts/report.md.\n"
              "# About a quarter of an hour on a 2-core CPU with the demo model. The smoke set is both\n"
              "# the pool and the eval set: this shows the machinery, not a held-out gain. The paper's\n"
              "# setting is next to each value in examples/pipeline-demo.toml.\n\n")
    # A pipeline's [model] says `base = …`, as the CLI's --base does (engine.recipes.pipeline maps it to source).
    tables = [_model("model", defaults.base, defaults.base_adapter).replace("\nsource = ", "\nbase = ", 1)]
    for table, values in PIPELINE.items():
        rendered = render_table(table, TABLES[table], values)
        for name in RUNTIME_FIELDS.get(table, ()):
            rendered = rendered.replace(f"\n# {name} =\n", f"\n# {name}: the previous stage's output\n")
        tables.append(rendered)
    return header + "\n".join(tables)


def job_config(kind: str, text: str) -> dict[str, Any]:
    """The job config an edited template stands for (a pipeline's TOML goes under `pipeline`, as the CLI sends it);
    a TOML syntax error, an unknown table or key, or a bad value is one RmxError line. A recipe kind's tables are
    read back through the same specs the templates were rendered from."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RmxError(f"not valid TOML: {error}") from None
    if kind in KIND_TABLES:
        check_job_config(kind, data)
    return {"pipeline": data} if kind == "pipeline" else data
