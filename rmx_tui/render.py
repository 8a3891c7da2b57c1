"""Rich renderings for the command line: entropy-coloured tokens and the Table 2 summary."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine.core.config import Tau
from engine.core.records import ScoredRollout, Table2
from themes.palettes import PALETTES, Heatmap

VISIBLE_WHITESPACE = {"\n": "⏎\n", "\t": "⇥"}


def visible(text: str) -> str:
    """Token text with newlines and tabs shown, so whitespace tokens stay visible."""
    return "".join(VISIBLE_WHITESPACE.get(ch, ch) for ch in text)


def scored_text(rollout: ScoredRollout, heatmap: Heatmap) -> Text:
    text = Text()
    for token in rollout.tokens:
        background = heatmap.colour(token.entropy)
        style = f"{Heatmap.readable_foreground(background)} on {background}"
        if token.cls == "reranked":
            style += " underline"
        elif token.cls == "shifted":
            style += " bold underline"
        text.append(visible(token.text) or "∅", style=style)
    return text


def legend(heatmap: Heatmap) -> Text:
    text = Text("entropy (nats): ")
    stops = len(heatmap.palette)
    for i, colour in enumerate(heatmap.palette):
        low = heatmap.ceiling * i / stops
        text.append(f" {low:.1f} ", style=f"{Heatmap.readable_foreground(colour)} on {colour}")
    text.append("  underline = teacher reranked, bold underline = shifted")
    return text


def table2(summary: Table2, title: str = "Table 2") -> Table:
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")

    def fmt(value, unit: str = "") -> str:
        if value is None:
            return "—"
        return f"{value:.3f}{unit}" if isinstance(value, float) else f"{value}{unit}"

    rows = [
        ("sequences", summary.sequences, ""), ("tokens", summary.tokens, ""),
        ("mean base entropy", summary.mean_entropy, " nats"),
        ("τ", summary.tau, " nats"), ("tokens above τ", summary.above_tau_pct, " %"),
        ("reranked", summary.reranked_pct, " %"), ("shifted", summary.shifted_pct, " %"),
        ("mean teacher rank at reranked", summary.mean_teacher_rank_reranked, ""),
        ("mean entropy at reranked", summary.mean_entropy_reranked, " nats"),
        ("mean entropy at unshifted", summary.mean_entropy_unshifted, " nats"),
        ("entropy ratio (reranked ÷ unshifted)", summary.entropy_ratio, "×"),
    ]
    for name, value, unit in rows:
        table.add_row(name, fmt(value, unit))
    return table


def print_scored(rollout: ScoredRollout, tau: Tau | None, console: Console | None = None) -> None:
    console = console or Console()
    heatmap = Heatmap(PALETTES["viridis"])
    console.print(scored_text(rollout, heatmap))
    console.print(legend(heatmap))
    if rollout.summary is not None:
        title = f"{rollout.base}" + (f" vs teacher {rollout.teacher}" if rollout.teacher else "")
        console.print(table2(rollout.summary, title))


def print_generation(result, console: Console | None = None) -> None:
    """A decoded completion coloured by entropy; tokens not picked by the base are bold and underlined."""
    console = console or Console()
    heatmap = Heatmap(PALETTES["viridis"])
    text = Text()
    for step in result.steps:
        background = heatmap.colour(step.entropy)
        style = f"{Heatmap.readable_foreground(background)} on {background}"
        if step.source != "base":
            style += " bold underline"
        text.append(visible(step.text) or "∅", style=style)
    console.print(text)
    verdict = ""
    if result.correct is not None:
        verdict = "  ✓ correct" if result.correct else f"  ✗ wrong (gold {result.gold})"
    console.print(f"[{result.mode}] {len(result.steps)} tokens, touched {len(result.touched)} "
                  f"({100 * result.touched_frac:.1f}%), answer: {result.answer}{verdict}", highlight=False)


def figure2_table(figure, title: str) -> Table:
    table = Table(title=title)
    for column in ("mode", "problems", "pass@1", "tokens touched", "teacher gain recovered"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    if figure.touches:
        matched = sum(t["oracle"] == t["random"] for t in figure.touches)
        table.caption = (f"random control: the oracle's touch count on {matched}/{len(figure.touches)} problems "
                         "(per-problem counts in --json 'touches')")
    for bar in figure.modes:
        recovered = "—" if bar.recovered is None else f"{100 * bar.recovered:.0f}%"
        touched = "—" if bar.touched_pct is None else f"{bar.touched_pct:.2f}% ({bar.touched})"
        passed = "—" if bar.pass_at_1 is None else f"{100 * bar.pass_at_1:.1f}%"
        table.add_row(bar.mode, str(bar.problems), passed, touched, recovered)
    return table
