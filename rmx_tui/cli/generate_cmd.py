"""`rmx generate` (decode with forced tokens and interventions) and `rmx intervene` (the paper's Figure 2)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from engine.core.errors import RmxError
from rmx_tui.cli import options as opt


def parse_force(items: list[str]) -> list[tuple[int, int]]:
    """`12:4096` → (12, 4096); positions count from the first completion token."""
    pairs: list[tuple[int, int]] = []
    for item in items:
        position, sep, token = item.partition(":")
        try:
            if not sep:
                raise ValueError
            pairs.append((int(position), int(token)))
        except ValueError:
            raise RmxError(f"--force expects POS:ID (for example 12:4096), got '{item}'") from None
    return pairs


def sampling_spec(greedy: bool, temperature: float | None, top_p: float, top_k: int, seed: int,
                  max_new_tokens: int, stop: list[str], ignore_eos: bool = False):
    """Greedy unless a temperature is given; both at once is a contradiction, not a preference."""
    from engine.core.decode import SamplingSpec

    if greedy and temperature is not None:
        raise RmxError("--greedy and --temperature contradict each other: pick one")
    return SamplingSpec(greedy=temperature is None, temperature=temperature or 1.0, top_p=top_p, top_k=top_k,
                        seed=seed, max_new_tokens=max_new_tokens, stop=tuple(stop), ignore_eos=ignore_eos)


Greedy = Annotated[bool, typer.Option("--greedy", help="Take the argmax at every step (the default).")]
Temperature = Annotated[Optional[float], typer.Option("--temperature", help="Sample at this temperature instead of greedy.")]
TopP = Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass in (0, 1].")]
SampleTopK = Annotated[int, typer.Option("--top-k", help="Sample among the k most likely tokens (0 = all).")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for sampling and the random control.")]
MaxNew = Annotated[int, typer.Option("--max-new-tokens", help="Most new tokens per completion.")]
Stop = Annotated[list[str], typer.Option("--stop", help="Stop when the completion contains this string (repeatable).")]
Template = Annotated[Optional[str], typer.Option("--template", help="qwen, qwen3, mistral, r1-distill, chat, raw or auto (default auto: the model's own, see the README).")]


def generate(
    ctx: typer.Context,
    base: opt.Base = "demo",
    teacher: opt.Teacher = None,
    adapter: opt.Adapter = None,
    teacher_adapter: opt.TeacherAdapter = None,
    prompt_text: Annotated[Optional[str], typer.Option("--prompt-text", help="The prompt: a problem, posed with the --template (raw text with --template raw).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Take the prompt and gold answer from this dataset.")] = None,
    index: Annotated[int, typer.Option("--index", help="Problem index in --dataset.")] = 0,
    template: Template = None,
    gold: Annotated[Optional[str], typer.Option("--gold", help="Gold answer to grade against.")] = None,
    max_new_tokens: MaxNew = 256,
    greedy: Greedy = False,
    temperature: Temperature = None,
    top_p: TopP = 1.0,
    top_k: SampleTopK = 0,
    seed: Seed = 0,
    stop: Stop = [],
    force: Annotated[list[str], typer.Option("--force", help="Force token ID at position POS, as POS:ID (repeatable).")] = [],
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help="Keep decoding past EOS (to reach a later --force position).")] = False,
    intervene: Annotated[Optional[str], typer.Option("--intervene", help="oracle, random, gated or manual.")] = None,
    tau: Annotated[Optional[str], typer.Option("--tau", help="Gate threshold: nats (1.4) or a quantile of the base's greedy entropies (q0.97).")] = None,
    n: Annotated[int, typer.Option("--n", help="Number of completions (sampled ones differ).")] = 1,
    dtype: opt.Dtype = "auto",
    device: opt.Device = "auto",
    revision: opt.Revision = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    json_output: opt.Json = False,
) -> None:
    """Decode a completion, forcing tokens or steering with the teacher (oracle, random, gated)."""
    from engine.core.config import Tau
    from engine.core.interventions import MODES

    forced = parse_force(force)
    sampling = sampling_spec(greedy, temperature, top_p, top_k, seed, max_new_tokens, stop, ignore_eos)
    gate = Tau.parse(tau) if tau is not None else None
    if n < 1:
        raise RmxError(f"--n must be ≥ 1, got {n}")
    if intervene is not None and intervene not in MODES:
        raise RmxError(f"unknown intervention '{intervene}': use one of {', '.join(MODES)}")
    if intervene in ("oracle", "random", "gated") and teacher is None and teacher_adapter is None:
        raise RmxError(f"--intervene {intervene} needs a teacher: give --teacher and/or --teacher-adapter")
    if intervene == "manual" and not forced:
        raise RmxError("--intervene manual needs at least one --force POS:ID")
    if dataset is not None:
        if prompt_text is not None:
            raise RmxError("give either --dataset or --prompt-text, not both")
        from engine.core.data import get_problem

        problem = get_problem(dataset, index)
        prompt_text, gold, template = problem.problem, gold or problem.answer, template or "auto"
    if prompt_text is None:
        raise RmxError("no prompt: give --prompt-text or --dataset")
    base_spec, teacher_spec = opt.model_specs(base, teacher, adapter, teacher_adapter, dtype, device, revision,
                                              trust_remote_code)
    with opt.loaded_engine(ctx, base_spec, teacher_spec) as client:  # `rmx --connect …`: the daemon's models
        choice = client.template_choice(template or "auto")
        prompt = client.prompt_ids(prompt_text, choice.template)
        results = client.generate(prompt, sampling, force=forced, intervene=intervene, tau=gate, n=n, gold=gold)
    if json_output:
        for result in results:  # one object per completion: exactly one line when n = 1
            opt.print_json({**result.to_json(), **choice.to_json()})
        return
    from rmx_tui.render import print_generation

    for result in results:
        print_generation(result)


def intervene(
    ctx: typer.Context,
    base: opt.Base = "demo",
    teacher: opt.Teacher = None,
    adapter: opt.Adapter = None,
    teacher_adapter: opt.TeacherAdapter = None,
    dataset: opt.Dataset = "smoke",
    limit: opt.Limit = None,
    modes: Annotated[str, typer.Option("--modes", help="Comma-separated: base, teacher, oracle, random, gated.")] = "base,teacher,oracle,random,gated",
    tau: Annotated[str, typer.Option("--tau", help="Gate threshold: nats (1.2) or a quantile per problem (q0.97).")] = "1.2",
    template: Template = "auto",
    out: Annotated[Optional[str], typer.Option("--out", help="Per-problem JSONL (resumable: problems already there are skipped).")] = None,
    max_new_tokens: MaxNew = 512,
    greedy: Greedy = False,
    temperature: Temperature = None,
    top_p: TopP = 1.0,
    top_k: SampleTopK = 0,
    seed: Seed = 0,
    dtype: opt.Dtype = "auto",
    device: opt.Device = "auto",
    revision: opt.Revision = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    job: Annotated[bool, typer.Option("--job", help="Run as a background job (rmx jobs show/logs/cancel/resume ID); prints its id.")] = False,
    detach: Annotated[bool, typer.Option("--detach", hidden=True, help="The old name of --job.")] = False,
    batch_size: opt.BatchSize = None,
    ray: opt.RayAddress = None,
    ray_retries: opt.RayRetries = 2,
    ray_shards: opt.RayShards = None,
    json_output: opt.Json = False,
) -> None:
    """Figure 2: pass@1 of base, teacher, oracle, random and gated decoding over a benchmark."""
    from engine.core.config import Tau
    from engine.core.data import load_problems
    from engine.recipes.experiments import run_figure2
    from engine.core.models import load_pair

    sampling = sampling_spec(greedy, temperature, top_p, top_k, seed, max_new_tokens, [])
    gate = Tau.parse(tau)
    if limit is not None and limit < 1:
        raise RmxError(f"--limit must be ≥ 1, got {limit}")
    chosen = tuple(m.strip() for m in modes.split(",") if m.strip())
    base_spec, teacher_spec = opt.model_specs(base, teacher, adapter, teacher_adapter, dtype, device, revision,
                                              trust_remote_code)
    if teacher_spec is None and any(m != "base" for m in chosen):
        raise RmxError("teacher, oracle, random and gated need a teacher: give --teacher and/or --teacher-adapter")
    cluster = opt.ray_spec(ray, ray_retries, ray_shards)
    if job or detach or opt.connected(ctx):
        _submit_intervene(ctx, base_spec, teacher_spec, dataset, limit, chosen, tau, template, sampling, out, json_output,
                          batch_size, cluster)
        return
    problems = load_problems(dataset, limit=limit)
    out_path = out or f"intervene-{dataset.replace('/', '_')}-{base_spec.label}.jsonl"
    from rmx_tui.cli.progress import live_or_plain

    def line(event: dict) -> str | None:
        if "intervene/problem" not in event:
            return None
        return f"intervene: {event['intervene/done']}/{event['intervene/total']} problems ({event['intervene/problem']})"

    settings = dict(modes=chosen, sampling=sampling, tau=gate, template=template, batch_size=batch_size)
    with live_or_plain(line) as on_event:
        if cluster is not None:
            from engine.recipes.shards import figure2_sharded

            figure = figure2_sharded(base_spec, teacher_spec, dataset, limit, out_path, cluster,
                                     emit=lambda event: None if "lane/task" in event else on_event(event), **settings)
        else:
            base_model, teacher_model = load_pair(base_spec, teacher_spec)
            figure = run_figure2(base_model, teacher_model, problems, out_path, on_event=on_event, **settings)
    if json_output:
        opt.print_json(figure.to_json())
        return
    from rich.console import Console

    from rmx_tui.render import figure2_table

    Console().print(figure2_table(figure, f"Figure 2 — {base_spec.label} on {dataset} (τ={gate}), results in {out_path}"))


def _submit_intervene(ctx: typer.Context, base_spec, teacher_spec, dataset: str, limit: int | None, modes: tuple[str, ...], tau: str,
                      template: str | None, sampling, out: str | None, json_output: bool,
                      batch_size: int | None = None, cluster=None) -> None:
    """`rmx intervene --job` (or under `--connect`): submit an `intervene` job, to the daemon when connected."""
    from dataclasses import asdict, replace
    from pathlib import Path

    from engine.core.data import BUNDLED
    from engine.jobs.store import find_run

    def model(spec):
        if spec is None:
            return None
        return asdict(replace(spec, source=opt.absolute_path(spec.source), adapter=opt.absolute_path(spec.adapter)))

    config = {
        "base": model(base_spec),
        "teacher": model(teacher_spec),
        "dataset": dataset if dataset in BUNDLED or dataset.startswith("hf:") else opt.absolute_path(dataset),
        "limit": limit,
        "modes": list(modes),
        "tau": tau,
        "template": template,
        "sampling": {**asdict(sampling), "stop": list(sampling.stop)},
        "out": str(Path(out).expanduser().resolve()) if out else None,
        "batch_size": batch_size,
        "ray": asdict(cluster) if cluster is not None else None,
    }
    status = opt.submit_job(ctx, "intervene", config)
    if json_output:
        try:
            run_dir: str | None = str(find_run(status.id))
        except RmxError:
            run_dir = None  # a daemon on another machine keeps its run folders there
        opt.print_json({"id": status.id, "kind": status.kind, "state": status.state, "run_dir": run_dir})
        return
    print(status.id)
    from rich.console import Console

    Console(stderr=True).print(f"follow it with: rmx jobs logs {status.id} --follow", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.command("intervene")(intervene)
