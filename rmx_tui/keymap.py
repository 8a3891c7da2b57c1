"""rmx's key map: every binding of the workbench, grouped, with what it does there; the help screen and docs/keys.md.

The keys are read from the bindings themselves; only the sentence saying what each does lives here, keyed by
(screen, action), so a binding added without a sentence, or a sentence whose binding is gone, fails the
drift test (tests/tui/test_help.py), and `python -m rmx_tui.keymap > docs/keys.md` regenerates the page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from textual.app import App
from textual.binding import Binding

KEY_NAMES = {
    "left": "←", "right": "→", "up": "↑", "down": "↓", "pageup": "pgup", "pagedown": "pgdn",
    "escape": "esc", "question_mark": "?", "slash": "/", "plus": "+", "minus": "-", "equals_sign": "=",
    "f1": "F1",
}


@dataclass(frozen=True)
class KeyLine:
    """One line of the key map: the keys (as typed) and what they do on that screen."""

    keys: str
    """The keys, as the footer writes them: `n / N`, `1-5`, `ctrl+b`."""
    what: str
    """One sentence: what the key does here."""


@dataclass(frozen=True)
class KeyGroup:
    """A heading of the help screen and of docs/keys.md, and its lines."""

    title: str
    """The group's heading: navigate, τ, fork, compare, jobs, workbench."""
    lines: tuple[KeyLine, ...]
    """Its keys in the order the screens declare them."""


def key_label(key: str) -> str:
    """A Textual key name as a user types it: `question_mark` → `?`, `left` → `←`."""
    return "+".join(KEY_NAMES.get(part, part) for part in key.split("+"))


def action_family(action: str) -> str:
    """The action without its arguments: `decision(1)` and `decision(-1)` are one line of the key map."""
    return action.split("(", 1)[0]


def _keys_of(bindings: Iterable[Binding]) -> str:
    """The keys of one action family: a binding's key_display covers its family (`1-5`, `+/-`)."""
    bindings = list(bindings)
    shown = [binding.key_display for binding in bindings if binding.key_display]
    if len(bindings) > 1 and shown:
        return " ".join(shown)
    return " / ".join(", ".join(key_label(key) for key in binding.key.split(",")) for binding in bindings)


def _sources() -> list[tuple[str, str, list[Binding]]]:
    """(group, screen name, bindings) for every screen and widget whose keys the help lists, in help order."""
    from rmx_tui.app import RmxApp
    from rmx_tui.screens.browser import BrowserScreen
    from rmx_tui.screens.compare import CompareScreen
    from rmx_tui.screens.jobs import JobsScreen
    from rmx_tui.screens.launch import LaunchJob
    from rmx_tui.screens.pool import PoolScreen
    from rmx_tui.screens.run import RunScreen
    from rmx_tui.widgets.token_view import TokenView

    return [
        ("", "TokenView", list(TokenView.BINDINGS)),
        ("", "BrowserScreen", list(BrowserScreen.BINDINGS)),
        ("compare", "CompareScreen", list(CompareScreen.BINDINGS)),
        ("", "RmxApp", list(RmxApp.BINDINGS)),
        ("jobs", "JobsScreen", list(JobsScreen.BINDINGS)),
        ("jobs", "RunScreen", list(RunScreen.BINDINGS)),
        ("jobs", "LaunchJob", list(LaunchJob.BINDINGS)),
        ("jobs", "PoolScreen", list(PoolScreen.BINDINGS)),
        ("workbench", "App", [binding for binding in App.BINDINGS if binding.description]),
    ]


GROUP_OF = {
    # Browser actions by group; screens other than the browser put all their keys in one group.
    "step": "navigate", "line": "navigate", "page": "navigate", "first": "navigate", "last": "navigate",
    "decision": "navigate", "disagreement": "navigate", "touched": "navigate", "up": "navigate",
    "search": "navigate", "toggle_problems": "navigate", "toggle_problem": "navigate",
    "tau": "τ", "tau_mode": "τ",
    "force_top": "fork", "force_teacher": "fork", "force_random": "fork", "force_typed": "fork",
    "sample_outcomes": "fork", "interventions": "fork", "new_rollout": "fork", "cancel": "fork",
    "compare": "compare", "jobs": "jobs",
    "export_svg": "workbench", "export_rollout": "workbench", "load_models": "workbench", "help": "workbench",
}

WHAT = {
    ("TokenView", "step"): "previous / next token of the rollout under the cursor",
    ("TokenView", "line"): "the token on the line above / below",
    ("TokenView", "page"): "a page up / down",
    ("TokenView", "first"): "the first token",
    ("TokenView", "last"): "the last token",
    ("BrowserScreen", "decision"): "next / previous decision point: a token whose base entropy is above τ",
    ("BrowserScreen", "disagreement"):
        "next / previous teacher disagreement: a reranked or shifted token (the teacher's pick is not the base's)",
    ("BrowserScreen", "touched"): "next / previous touched token: one you forced, or one an intervention substituted",
    ("BrowserScreen", "up"): "back up to the parent branch, the cursor on the fork",
    ("BrowserScreen", "search"):
        "search the completion text (enter: next match); from the problem list, search the problems by text",
    ("BrowserScreen", "toggle_problems"): "show or hide the problem list (a drawer below 120 columns)",
    ("BrowserScreen", "toggle_problem"): "show or hide the problem pane: statement, gold answer, template, prompt tokens",
    ("BrowserScreen", "tau"): "raise / lower τ by 0.1 nats (0.01 as a quantile); every view follows",
    ("BrowserScreen", "tau_mode"): "write τ in nats or as a quantile of the root rollout's entropies",
    ("BrowserScreen", "force_top"): "fork here with the base's k-th most likely token, then decode the rest",
    ("BrowserScreen", "force_teacher"): "fork here with the teacher's pick",
    ("BrowserScreen", "force_random"): "fork here with a seeded random top-20 token (argmax excluded): the control",
    ("BrowserScreen", "force_typed"): "fork here with a token you type: text, or #id",
    ("BrowserScreen", "sample_outcomes"):
        "sample continuations from this token and grade them: P(correct | token) with its 95% interval",
    ("BrowserScreen", "interventions"): "run oracle, random, gated (at τ) or base on this problem, as a new branch",
    ("BrowserScreen", "new_rollout"): "decode a new sampled rollout of the problem",
    ("BrowserScreen", "cancel"): "stop the running decode, estimate or intervention (what streamed is kept)",
    ("BrowserScreen", "compare"): "the compare view: the paper's Table 2 and the τ gate's precision / recall",
    ("BrowserScreen", "export_svg"): "save the screen as an SVG (in the export directory)",
    ("BrowserScreen", "export_rollout"):
        "export the branch: HTML page (hover for the top-5), SVG figure, LaTeX snippet or JSON (also `rmx export`)",
    ("BrowserScreen", "load_models"): "load other models (the current ones stay if that fails)",
    ("CompareScreen", "app.pop_screen"): "back to the rollouts",
    ("CompareScreen", "tau"): "raise / lower τ: Table 2 and the gate's precision / recall follow",
    ("CompareScreen", "tau_mode"): "write τ in nats or as a quantile",
    ("CompareScreen", "pick_adapter"):
        "edit overlap: pick an adapter (the newest trained is offered) and mark, on the base's greedy rollout, the "
        "tokens the teacher, the adapter or both would change",
    ("CompareScreen", "edit"): "next token edited by the teacher only (1), the adapter only (2) or both (3)",
    ("CompareScreen", "any_edit"): "next / previous token edited by either",
    ("RmxApp", "jobs"): "the jobs screen: runs with live progress and plots, cancel and resume",
    ("RmxApp", "help"): "this help: every key, the colours, τ and the classes",
    ("JobsScreen", "new"): "launch a job: pick its kind, edit its TOML config, ctrl+s submits",
    ("JobsScreen", "open"): "open the run: its event history replayed, then followed live as plots",
    ("JobsScreen", "cancel"): "cancel the job under the cursor (asks first)",
    ("JobsScreen", "resume"): "resume a failed, cancelled or diverged job from its checkpoint",
    ("JobsScreen", "follow"): "pause or resume refreshing the list",
    ("JobsScreen", "pool"): "inspect the pool of a rollouts, pool or pipeline run",
    ("JobsScreen", "app.pop_screen"): "back to the workbench",
    ("RunScreen", "app.pop_screen"): "back to the jobs",
    ("RunScreen", "follow"): "pause or resume redrawing the plots (events keep arriving)",
    ("RunScreen", "cycle"): "plot the next / previous listed series alone",
    ("RunScreen", "plot_all"): "plot every listed series (again: back to one)",
    ("LaunchJob", "launch"): "submit the job with this config (a refused config says why and keeps your text)",
    ("LaunchJob", "dismiss"): "close without launching",
    ("PoolScreen", "score"): "score the pool under the base: decision-point rate per τ, correct vs wrong rollouts",
    ("PoolScreen", "keep"): "keep 5% more / fewer of the shortest rollouts (the authors' length trim)",
    ("PoolScreen", "reread"): "read the rollouts file again (a running rollouts job grows it)",
    ("PoolScreen", "app.pop_screen"): "back to the jobs",
    ("App", "quit"): "quit rmx (running jobs keep running in the daemon)",
}

SCREEN_NOTE = {
    "RunScreen": "on a run", "LaunchJob": "in the job editor", "PoolScreen": "in the pool inspector",
    "CompareScreen": "", "JobsScreen": "",
}

EXTRA = {
    "navigate": (KeyLine("click", "put the cursor on a token"),
                 KeyLine("tab / shift+tab", "move focus: problem list, parent heatmap, branch heatmap"),
                 KeyLine("enter", "in the problem list: open a problem's rollout (or decode one), or a branch")),
    "workbench": (KeyLine("ctrl+p", "command palette: every action by name, and Change theme"),),
}

GROUP_ORDER = ("navigate", "τ", "fork", "compare", "jobs", "workbench")

LEGEND = (
    "Each token's background is the base model's entropy there, on a colour-blind-safe ramp from 0 to 3+ nats "
    "(the legend under the heatmap). Tokens above τ are bright (a decision point); the others are faded.",
    "Underlined: reranked; bold underlined: shifted; reversed: a token you forced; solid in the secondary "
    "colour: a token an intervention substituted; dim: the prefix a fork shares with its parent.",
    "In the problem list and branch titles ✓ is a correct final answer against the gold answer, ✗ a wrong one. "
    "⏎ is a newline, · a space-only token, ⇥ a tab.",
)

TAU = (
    "τ (tau) is the entropy gate: a token whose base entropy is above τ is a decision point, the paper's "
    "high-entropy position where the model hesitates between branches, and only those positions are corrected.",
    "Written as nats (2.5) or as a quantile (q0.93); a quantile is resolved against one rollout, the root "
    "rollout of the open problem, and the status bar names it, so every view and every branch uses that value.",
)

CLASSES = (
    "Against a teacher (the RL-trained model, or a ReasonMaxxer adapter) each token is unshifted (same "
    "argmax), reranked (the teacher's pick is inside the base's top-5) or shifted (outside it).",
    "The paper finds RL's footprint is sparse reranking at decision points: Table 2 (t) counts the classes, "
    "and the gated intervention puts the teacher's pick only above τ.",
)

INTERVENTIONS = (
    "A fork opens beside its parent (parent left, branch right, both on the fork position), titled with its "
    "final answer and ✓/✗ against the gold answer; the problem list shows the tree of branches.",
    "An intervention (i) decodes the problem afresh and opens as a branch of the root rollout: oracle puts the "
    "teacher's pick wherever it differs from the base's argmax, random as many random base top-20 tokens (never "
    "the argmax or the teacher's pick) at those same positions (the control), gated the teacher's pick wherever base entropy is above τ, base nothing.",
)


def key_groups() -> tuple[KeyGroup, ...]:
    """Every listed binding, one line per action family, grouped; raises when a binding has no sentence."""
    lines: dict[str, list[KeyLine]] = {group: [] for group in GROUP_ORDER}
    for default_group, screen, bindings in _sources():
        families: dict[str, list[Binding]] = {}
        for binding in _own(bindings):
            families.setdefault(action_family(binding.action), []).append(binding)
        for family, members in families.items():
            what = WHAT.get((screen, family))
            if what is None:
                raise KeyError(f"{screen} binds {members[0].key} to {family} with no line in rmx_tui/keymap.py WHAT")
            group = default_group or GROUP_OF.get(family)
            if group is None:
                raise KeyError(f"{screen}.{family} has no group in rmx_tui/keymap.py GROUP_OF")
            note = SCREEN_NOTE.get(screen, "")
            lines[group].append(KeyLine(_keys_of(members), f"{what} ({note})" if note else what))
    for group, extra in EXTRA.items():
        lines[group].extend(extra)
    return tuple(KeyGroup(group, tuple(lines[group])) for group in GROUP_ORDER)


def bound_actions() -> set[tuple[str, str]]:
    """(screen, action family) of every listed binding: the drift test compares it with WHAT."""
    return {(screen, action_family(binding.action))
            for _, screen, bindings in _sources() for binding in _own(bindings)}


def _own(bindings: list[Binding]) -> list[Binding]:
    """A screen's bindings less the app's keys it repeats (to place them first in its footer)."""
    return [binding for binding in bindings if binding.action not in ("app.jobs", "app.help")]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """docs/keys.md and the help screen's text."""
    out = [
        "# rmx workbench keys",
        "",
        "<!-- Generated from the bindings by `python -m rmx_tui.keymap > docs/keys.md`; "
        "tests/tui/test_help.py fails when it drifts. -->",
        "",
        "`?` or `F1` opens this page inside rmx. `rmx demo` opens the workbench on the bundled demo model.",
        "",
    ]
    for group in key_groups():
        out += [f"## {group.title}", "", "| key | what it does |", "|---|---|"]
        out += [f"| `{_cell(line.keys)}` | {_cell(line.what)} |" for line in group.lines]
        out.append("")
    out += ["## Forks and interventions", ""] + [" ".join(INTERVENTIONS), ""]
    out += ["## Colours", ""] + [f"- {line}" for line in LEGEND] + [""]
    out += ["## τ, the entropy gate", ""] + [" ".join(TAU), ""]
    out += ["## The classes", ""] + [" ".join(CLASSES), ""]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out))


if __name__ == "__main__":
    print(markdown(), end="")
