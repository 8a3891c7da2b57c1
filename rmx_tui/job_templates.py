"""A commented TOML config per job kind, sized to run on a CPU, and the edited TOML read back as a job config."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from engine.core.errors import RmxError
from engine.jobs.store import JobStatus, run_outputs
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
    def of(cls, info: WorkbenchInfo | None, statuses: Iterable[JobStatus], runs: Path) -> "Defaults":
        """From the loaded models and the listed runs, whose artifacts lie under `runs` (the daemon's data dir is
        this machine's, as `rmx engine start` made it)."""
        base = info.base if info is not None else None
        teacher = (info.teacher or base) if info is not None else None
        finished = sorted((s for s in statuses if s.state == "done"), key=lambda s: (s.created, s.id))

        def newest(kind: str) -> str | None:
            """The `kind` output of the newest finished run of that kind, as its result.json lists it."""
            return next((output for s in reversed(finished) if s.kind == kind
                         for output in [run_outputs(runs / s.id).get(kind)] if output), None)

        return cls(base=base.source if base else "demo", base_adapter=base.adapter if base else None,
                   teacher=teacher.source if teacher else "demo", teacher_adapter=teacher.adapter if teacher else None,
                   rollouts=newest("rollouts"), pool=newest("pool"))


def _quoted(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's."""
    return json.dumps(text, ensure_ascii=False)


def _model(table: str, source: str, adapter: str | None) -> str:
    adapter_line = (f"adapter = {_quoted(adapter)}" if adapter
                    else '# adapter = "/path/to/adapter"  # a LoRA folder applied on top')
    return (f"[{table}]\n"
            f"{'source = ' + _quoted(source):<27} # a hub id, a folder, a .gguf file or demo\n"
            f"{adapter_line}\n"
            'dtype = "auto"              # bf16 where the device computes it natively, else fp32\n'
            'device = "auto"             # auto, cpu, mps, cuda or cuda:N\n')


def _file(path: str | None, what: str) -> str:
    if path is not None:
        return f"rollouts = {_quoted(path)}\n# ↑ the newest finished {what} run's; any {what} .jsonl works\n"
    return (f"rollouts = {_quoted(NO_ROLLOUTS)}\n"
            f"# ↑ run a {what} job first, then put its artifacts/{what}.jsonl here\n")


def template(kind: str, defaults: Defaults = Defaults()) -> str:
    """The commented TOML a user edits to launch `kind`: its tables are the job config's top-level keys."""
    base = _model("model", defaults.base, defaults.base_adapter)
    teacher = _model("teacher", defaults.teacher, defaults.teacher_adapter)
    train = ("[train]\n" + _file(defaults.pool or defaults.rollouts, "pool" if defaults.pool else "rollouts") +
             'tau = "q0.95"               # decision gate: nats (1.4, the paper) or a quantile\n'
             "grad_accum = 4              # paper: 8\n"
             "max_steps = 4               # remove to train a whole epoch\n"
             'negative = "bounded"        # paper: signed; bounded cannot run away to −∞\n'
             "lr = 1e-4\n"
             "lora_r = 32\n"
             "lora_alpha = 64\n"
             "max_tokens = 256            # truncate prompt+completion (memory)\n")
    texts = {
        "selftest": (
            "# selftest: counts to `count`, one event per step; a real job that needs no model.\n"
            "count = 20\n"
            "sleep = 0.1                 # seconds per step, at most 10\n"
            "# fail_at = 10              # fail the first attempt at this step (r resumes it)\n"
            "# diverge_at = 10           # end the first attempt diverged at this step\n"),
        "intervene": (
            "# intervene: the paper's Figure 2, each mode's decodes of each problem, graded.\n"
            'dataset = "smoke"           # a bundled benchmark, a .jsonl path or hf:NAME[:split]\n'
            "limit = 2                   # the first N problems (remove for all)\n"
            'modes = ["base", "teacher", "oracle", "random", "gated"]\n'
            'tau = "q0.97"               # the gate: nats (1.2, the paper) or a quantile\n'
            'template = "chat"           # qwen, qwen3, mistral, r1-distill, chat, raw or auto\n'
            "# out = \"/abs/out.jsonl\"     # default: the run's artifacts/figure2.jsonl\n\n"
            + _model("base", defaults.base, defaults.base_adapter) + "\n"
            + teacher + "\n"
            "[sampling]\n"
            "greedy = true\n"
            "max_new_tokens = 48         # paper: up to 8192\n"),
        "rollouts": (
            "# rollouts: k graded completions per problem, in artifacts/rollouts.jsonl.\n"
            + base + "\n"
            "[rollouts]\n"
            'dataset = "smoke"           # paper: math_train_pool_150\n'
            "limit = 8                   # the first N problems (remove for all)\n"
            "k = 4                       # paper: 20\n"
            "max_new_tokens = 48         # paper: up to 8192\n"
            "temperature = 0.6\n"
            "top_p = 0.95\n"
            'template = "chat"\n'
            "seed = 0\n"),
        "pool": (
            "# pool: the problems with mixed success, the training pool: artifacts/pool.jsonl.\n"
            "[pool]\n"
            + _file(defaults.rollouts, "rollouts") +
            "size = 4                    # those nearest pass rate 0.5 (paper: 50)\n"
            "keep_shortest = 1.0         # the authors keep 0.8 (a length bias)\n"),
        "train": (
            "# train: a ReasonMaxxer LoRA on the pool's decision points: artifacts/adapter/.\n"
            + base + "\n" + train),
        "sweep": (
            "# sweep: one adapter per τ, each scored on a holdout; the best is kept (sweep.json).\n"
            + base + "\n" + train + "\n"
            "[sweep]\n"
            'taus = ["q0.9", "q0.95"]    # paper: 1.2, 1.4, 1.6, 1.8 nats\n'
            "holdout = 4                 # paper: 50\n"
            'holdout_dataset = "smoke"   # paper: math_train_pool_500, from row 450\n'
            "holdout_offset = 10\n"
            "max_new_tokens = 48\n"
            'template = "chat"\n'),
        "eval": (
            "# eval: the model's scores on benchmarks (greedy pass@1, or avg@k): artifacts/eval.md.\n"
            + base + "\n"
            "[eval]\n"
            'benchmarks = ["smoke"]      # math500, gsm8k, minerva, aime24, … or files\n'
            "limit = 4                   # the first N problems of each (remove for all)\n"
            "max_new_tokens = 48         # paper: 4096\n"
            'template = "chat"\n'
            "avg_benchmarks = []         # scored as avg@k; the paper: [\"aime24\", \"amc23\"]\n"),
        "distill": (
            "# distill: KL-LoRA, a LoRA fitted to the teacher's top-k: artifacts/adapter/.\n"
            + base + "\n" + teacher + "\n"
            "[distill]\n"
            + _file(defaults.rollouts, "rollouts") +
            "top_k = 16                  # teacher logits kept per position (default 64)\n"
            "epochs = 1                  # default 3\n"
            "batch_size = 2\n"
            "grad_accum = 2              # default 8\n"
            "max_tokens = 256            # truncate prompt+completion (memory)\n"),
        "pipeline": _pipeline(defaults),
    }
    if kind not in texts:
        raise RmxError(f"no template for job kind '{kind}': use one of {', '.join(KINDS)}")
    return texts[kind]


def _pipeline(defaults: Defaults) -> str:
    """examples/pipeline-demo.toml (a test holds them equal), on the loaded base."""
    adapter = (f"adapter = {_quoted(defaults.base_adapter)}\n" if defaults.base_adapter else "")
    return (
        "# pipeline: rollouts → pool → train → eval of base and tuned, with artifacts/report.md.\n"
        "# About a quarter of an hour on a 2-core CPU with the demo model. The smoke set is both\n"
        "# the pool and the eval set: this shows the machinery, not a held-out gain.\n\n"
        "[model]\n"
        f"base = {_quoted(defaults.base)}\n"
        f"{adapter}"
        'dtype = "auto"            # bf16 where the device computes it natively, else fp32\n\n'
        "[rollouts]\n"
        'dataset = "smoke"          # paper: math_train_pool_150\n'
        "limit = 12                 # the first 12 smoke problems: 8 have mixed success at K = 8 on the demo\n"
        "k = 8                      # paper: 20\n"
        "max_new_tokens = 48        # paper: up to 8192\n"
        "temperature = 0.6\n"
        "top_p = 0.95\n"
        'template = "chat"\n\n'
        "[pool]\n"
        "size = 8                   # paper: the 50 problems with pass rate closest to 0.5\n"
        "keep_shortest = 1.0        # the authors keep 0.8 (a length bias)\n\n"
        "[train]\n"
        "# SmolLM2's entropy is high everywhere (41% of tokens above 1.2 nats): a quantile\n"
        '# keeps "the top few percent" the paper aims for.\n'
        'tau = "q0.95"              # paper: 1.4 nats on Qwen2.5-1.5B (about 5% of tokens)\n'
        "grad_accum = 4             # paper: 8\n"
        "lr = 1e-4\n"
        'negative = "bounded"       # paper: signed; bounded cannot run away to −∞\n'
        "lora_r = 32\n"
        "lora_alpha = 64\n\n"
        "[eval]\n"
        'benchmarks = ["smoke"]     # paper: math500, gsm8k, minerva, … (avg@8 on aime24, amc23)\n'
        "max_new_tokens = 48\n"
        'template = "chat"\n')


def job_config(kind: str, text: str) -> dict[str, Any]:
    """The job config an edited template stands for (a pipeline's TOML goes under `pipeline`, as the CLI sends it);
    a TOML syntax error is one RmxError line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RmxError(f"not valid TOML: {error}") from None
    return {"pipeline": data} if kind == "pipeline" else data
