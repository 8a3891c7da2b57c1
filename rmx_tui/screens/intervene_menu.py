"""The interventions menu: run oracle, random, gated or the base alone on the current problem."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from rmx_tui.screens.modals import MODAL_CSS

NO_TEACHER = "needs a teacher: start rmx with --teacher or --teacher-adapter, or press L"
"""Why a mode is greyed out; one line of the menu, at its width."""


@dataclass(frozen=True)
class Mode:
    """One entry of the menu: an engine run mode, what it does, and whether it steers with the teacher."""

    name: str
    what: str
    needs_teacher: bool


MODES = (
    Mode("oracle", "the teacher's pick wherever it differs from the base's argmax", True),
    Mode("random", "a random base top-20 token at the positions the oracle would change", True),
    Mode("gated", "the teacher's pick wherever base entropy is above {tau}", True),
    Mode("base", "the base alone, nothing substituted: the control", False),
)
"""As engine.core.interventions.run_mode has it, random needs the teacher too: it changes the positions the oracle would."""


class InterventionMenu(ModalScreen[str | None]):
    """The modes as a keyboard menu: arrows and enter, or 1-4; a mode that needs a missing teacher says so."""

    DEFAULT_CSS = MODAL_CSS.format(name="InterventionMenu") + """
    InterventionMenu > Vertical { width: 90; }
    InterventionMenu OptionList { margin: 1 0; }
    """
    BINDINGS = [
        Binding("escape", "dismiss(None)", "cancel"),
        *(Binding(str(number), f"choose({number})", f"run {mode.name}", show=False)
          for number, mode in enumerate(MODES, start=1)),
    ]

    def __init__(self, problem: str, tau: str, teacher: bool) -> None:
        super().__init__()
        self.problem = problem
        self.tau = tau
        """The browser's gate as the status bar shows it: what `gated` runs with."""
        self.teacher = teacher

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Content.assemble(("Run an intervention on ", "bold"), (self.problem, "bold $accent")))
            yield Label(f"{self.tau} · decoded afresh from the prompt, as rollouts are", classes="hint")
            yield OptionList(*(self._option(number, mode) for number, mode in enumerate(MODES, start=1)),
                             id="modes", compact=True)
            yield Label("enter or 1-4 runs it, esc closes. The run opens as a branch beside the rollout, "
                        "its touched tokens highlighted (f / F jump between them).", classes="hint")

    def on_mount(self) -> None:
        modes = self.query_one("#modes", OptionList)
        modes.highlighted = next(index for index, mode in enumerate(MODES) if self.available(mode))

    def available(self, mode: Mode) -> bool:
        return self.teacher or not mode.needs_teacher

    def _option(self, number: int, mode: Mode) -> Option:
        what = mode.what.format(tau=self.tau)
        if not self.available(mode):
            # Left unstyled: the list greys a disabled option out whole.
            return Option(f"{number} {mode.name:<7} {NO_TEACHER}", id=mode.name, disabled=True)
        return Option(Content.assemble((f"{number} ", "bold $accent"), (f"{mode.name:<7} ", "bold"), what),
                      id=mode.name)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_choose(self, number: int) -> None:
        mode = MODES[number - 1]
        if self.available(mode):
            self.dismiss(mode.name)
        else:
            self.notify(f"{mode.name} {NO_TEACHER}", severity="warning")
