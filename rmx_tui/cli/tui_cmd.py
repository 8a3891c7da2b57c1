"""`rmx tui` and `rmx demo`: open the workbench on any base/teacher pair, or on the bundled demo model."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rmx_tui.cli import options as opt

DatasetOpt = Annotated[str, typer.Option("--dataset", help="Bundled dataset name or a .jsonl/.json problem file.")]
Rollouts = Annotated[Optional[str], typer.Option("--rollouts", help="A rollouts.jsonl to browse (`rmx rollouts`).")]
Limit = Annotated[Optional[int], typer.Option("--limit", help="List at most this many problems.")]
TauOpt = Annotated[str, typer.Option("--tau", help="Entropy gate τ: nats (1.4) or a quantile (q0.9).")]
MaxNew = Annotated[int, typer.Option("--max-new-tokens", help="Most tokens decoded per rollout and per fork.")]
Samples = Annotated[int, typer.Option("--samples", help="Continuations sampled by `c` to estimate P(correct).")]
Sample = Annotated[bool, typer.Option("--sample/--greedy", help="Sample rollouts and forks instead of greedy decoding.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of sampled rollouts and of the random control.")]
Template = Annotated[str, typer.Option("--template",
                                       help="Prompt template: chat, qwen, qwen3, mistral, r1-distill, raw or auto.")]
ThemeOpt = Annotated[str, typer.Option("--theme", help="rmx-dark, rmx-light, rmx-contrast or any Textual theme.")]
Autostart = Annotated[bool, typer.Option("--autostart/--no-autostart",
                                         help="Decode the first problem as soon as the models load.")]


_client = opt.engine_client


def _run(ctx: typer.Context | None, default_local: bool, base_spec, teacher_spec, dataset: str,
         rollouts: str | None, limit: int | None, tau: str, max_new_tokens: int, samples: int, sample: bool,
         seed: int, template: str, theme: str, autostart: bool, tour: bool = False) -> None:
    from dataclasses import replace

    from engine.core.config import Tau
    from engine.core.decode import SamplingSpec
    from engine.core.errors import RmxError

    from rmx_tui.app import RmxApp
    from rmx_tui.settings import Settings

    if samples < 1:
        raise RmxError(f"--samples must be at least 1, got {samples}")
    defaults = Settings()
    settings = Settings(
        base=base_spec, teacher=teacher_spec, dataset=dataset, rollouts=rollouts, limit=limit, template=template,
        tau=Tau.parse(tau), samples=samples, seed=seed, autostart=autostart, tour=tour,
        sampling=SamplingSpec(greedy=not sample, seed=seed, max_new_tokens=max_new_tokens),
        outcome_sampling=replace(defaults.outcome_sampling, max_new_tokens=max_new_tokens),
    )
    # The app checks the theme (and every other setting) before a daemon is started for it.
    app = RmxApp(settings, theme=theme)
    app.client = _client(ctx, default_local) or app.client
    app.run()


def tui(
    ctx: typer.Context,
    base: opt.Base = "demo",
    teacher: opt.Teacher = None,
    adapter: opt.Adapter = None,
    teacher_adapter: opt.TeacherAdapter = None,
    dataset: DatasetOpt = "math500",
    rollouts: Rollouts = None,
    limit: Limit = None,
    tau: TauOpt = "q0.97",
    max_new_tokens: MaxNew = 1024,
    samples: Samples = 8,
    sample: Sample = False,
    seed: Seed = 0,
    template: Template = "auto",
    theme: ThemeOpt = "rmx-dark",
    autostart: Autostart = True,
    dtype: opt.Dtype = "auto",
    device: opt.Device = "auto",
    revision: opt.Revision = None,
    trust_remote_code: opt.TrustRemoteCode = False,
) -> None:
    """Open the workbench: see where the model hesitates, force another token there, watch the answer change."""
    base_spec, teacher_spec = opt.model_specs(base, teacher, adapter, teacher_adapter, dtype, device, revision,
                                              trust_remote_code)
    _run(ctx, False, base_spec, teacher_spec, dataset, rollouts, limit, tau, max_new_tokens, samples, sample, seed,
         template, theme, autostart)


DemoDtype = Annotated[str, typer.Option(
    "--dtype", help="auto, float32, bfloat16 or float16 (default float32: the demo's story is the same on every CPU; "
                    "auto picks bf16 where a CPU computes it natively, and bf16 reorders the base's near-ties).")]
DemoTeacher = Annotated[Optional[str], typer.Option(
    "--teacher", help="Teacher model (same tokenizer), or 'none' for the base alone (default: the shipped demo teacher).")]


def demo(
    ctx: typer.Context,
    teacher: DemoTeacher = None,
    teacher_adapter: opt.TeacherAdapter = None,
    dataset: DatasetOpt = "smoke",
    tau: TauOpt = "q0.9",
    max_new_tokens: MaxNew = 128,
    samples: Samples = 4,
    sample: Sample = False,
    seed: Seed = 0,
    theme: ThemeOpt = "rmx-dark",
    dtype: DemoDtype = "float32",
    device: opt.Device = "auto",
) -> None:
    """Open the workbench on the bundled demo model (SmolLM2-135M-Instruct) and a smoke problem: CPU, no network.

    The teacher is the demo model plus the ReasonMaxxer adapter shipped with rmx; `--teacher none` makes the base
    its own teacher.
    """
    from engine.core.config import ModelSpec
    from engine.core.errors import RmxError
    from engine.core.models import demo_teacher_path

    base_spec = ModelSpec("demo", dtype=dtype, device=device)
    if teacher == "none":
        if teacher_adapter is not None:
            raise RmxError("--teacher none and --teacher-adapter contradict each other: give one")
        # No teacher of its own: the base is its own teacher, and nothing disagrees.
        teacher_spec = base_spec
    elif teacher is None and teacher_adapter is None:
        # The shipped ReasonMaxxer adapter (engine/data/demo_teacher) on the same weights.
        teacher_spec = ModelSpec("demo", adapter=str(demo_teacher_path()), dtype=dtype, device=device)
    else:
        teacher_spec = ModelSpec(teacher or "demo", adapter=teacher_adapter, dtype=dtype, device=device)
    # The demo runs in-process unless `--connect` names a daemon: nothing is left running after it.
    _run(ctx, True, base_spec, teacher_spec, dataset, None, None, tau, max_new_tokens, samples, sample, seed, "chat",
         theme, True, tour=True)


def register(app: typer.Typer) -> None:
    app.command("tui")(tui)
    app.command("demo")(demo)
