"""RmxApp: owns the engine client and the session, registers the themes, opens the rollout browser."""

from __future__ import annotations

from functools import partial
from typing import Iterable

from engine.service.client import EngineClient
from engine.core.errors import RmxError
from engine.service.workbench import Workbench, WorkbenchInfo
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import var
from textual.screen import Screen

from rmx_tui.freezer import Freezer
from rmx_tui.gate import Gate, TauReference
from rmx_tui.ui_state import Session
from rmx_tui.screens.browser import BrowserScreen
from rmx_tui.settings import Settings
from themes.workbench import DEFAULT_PALETTE, heat_variables, workbench_themes


class RmxApp(App[None]):
    """The workbench. Pass a client to reuse loaded models (tests, a daemon); else a Workbench runs in process."""

    CSS_PATH = "rmx.tcss"
    TITLE = "rmx"
    BINDINGS = [
        Binding("J", "jobs", "jobs", tooltip="Jobs: runs with live progress, plots, cancel and resume"),
        Binding("question_mark", "help", "keys", tooltip="rmx's help: every key, the colour legend, τ and the classes"),
        Binding("f1", "help", "keys", show=False),
    ]

    gate: var[Gate] = var(Gate(Settings().tau), init=False)
    """τ as the user moves it; every screen that shows it watches this (a var: the app itself never repaints)."""

    def __init__(self, settings: Settings, client: EngineClient | None = None, theme: str = "rmx-dark") -> None:
        super().__init__()
        self.settings = settings
        self.client = client if client is not None else Workbench()
        self.session = Session()
        self.freezer = Freezer()
        """Freezes the scored records the heatmaps show, so full collections stop walking them (see Freezer)."""
        self.info: WorkbenchInfo | None = None
        self.set_reactive(RmxApp.gate, Gate(settings.tau))
        self.tau_reference = TauReference("", ())
        """What a quantile τ is resolved over: set by the browser to the open problem's root rollout."""
        for theme_spec in workbench_themes():
            self.register_theme(theme_spec)
        if theme not in self.available_themes:
            raise RmxError(f"unknown theme '{theme}': use one of {', '.join(sorted(self.available_themes))}")
        self.theme = theme

    def tau_nats(self) -> float | None:
        """τ in nats, a quantile resolved over the one reference rollout; None before there is one."""
        return self.gate.nats(self.tau_reference.ordered)

    def describe_tau(self) -> str:
        """τ as every status bar writes it: `τ q0.93 of the root rollout = 2.89 nats`."""
        return self.gate.describe(self.tau_nats(), self.tau_reference.name)

    def get_theme_variable_defaults(self) -> dict[str, str]:
        # Textual's own themes know no heatmap: they get the default palette.
        return heat_variables(DEFAULT_PALETTE)

    def on_mount(self) -> None:
        self.push_screen(BrowserScreen())
        if self.settings.tour:
            from rmx_tui.preferences import load_preferences

            if not load_preferences().tour_dismissed:
                self.action_tour()

    def action_tour(self) -> None:
        """Open the first-run tour (the help screen's T)."""
        from rmx_tui.screens.tour import TourScreen

        if not isinstance(self.screen, TourScreen):
            self.push_screen(TourScreen())

    def action_jobs(self) -> None:
        """Open the jobs screen on the engine client: the daemon's jobs when connected to one, else this machine's."""
        from rmx_tui.screens.jobs import JobsScreen

        self.push_screen(JobsScreen(self.client))

    def action_help(self) -> None:
        """Open rmx's help screen; on the help screen itself the same keys close it."""
        from rmx_tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's commands, then every key binding active on the screen, so the palette lists every action."""
        yield from super().get_system_commands(screen)
        seen = set()
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if not binding.description or binding.description in seen or binding.action.startswith("app."):
                continue
            seen.add(binding.description)
            # Footer labels are terse; the tooltip, where there is one, says what the key does in full.
            title = binding.tooltip or binding.description
            yield SystemCommand(title[0].upper() + title[1:], f"key {binding.key_display or key}",
                                partial(self.run_action, binding.action, active.node))
