"""The status bar: τ and the share of tokens above it, the loaded models and prompt template, and what the engine is doing."""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget


class StatusBar(Widget):
    """One line: gate │ models │ activity."""

    DEFAULT_CSS = """
    StatusBar {
        height: 1;
        background: $primary-muted;
        color: $foreground;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.gate = "τ —"
        self.share = ""
        self.models = "no model loaded"
        self.template = ""
        self.activity = ""
        self.failed = False

    def set_gate(self, gate: str, above: int, total: int) -> None:
        self.gate = gate
        self.share = f"{100 * above / total:.1f}% above ({above}/{total})" if total else ""
        self.refresh()

    def set_models(self, base: str | None, teacher: str | None) -> None:
        if base is None:
            self.models = "no model loaded"
        else:
            self.models = f"base {base}" + (f" · teacher {teacher}" if teacher else " · no teacher")
        self.refresh()

    def set_template(self, template: str, reason: str) -> None:
        """The prompt template the last rollout was posed with; hovering shows why it was chosen."""
        self.template = template
        self.tooltip = f"prompt template {template}: {reason}"
        self.refresh()

    def set_activity(self, activity: str, failed: bool = False) -> None:
        self.activity, self.failed = activity, failed
        self.refresh()

    def render(self) -> Content:
        parts: list[tuple[str, str] | str] = [(self.gate, "bold")]
        if self.share:
            parts += [" · ", self.share]
        parts += [("  │  ", "$foreground-muted"), self.models]
        if self.template:
            parts += [" · prompt ", (self.template, "bold")]
        if self.activity:
            style = "bold $error" if self.failed else "bold $warning"
            parts += [("  │  ", "$foreground-muted"), (self.activity, style)]
        return Content.assemble(*parts)
