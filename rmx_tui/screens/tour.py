"""The first-run tour: one screen on what the colours mean, where the teacher disagrees, forking, and training."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown, Static

from rmx_tui.widgets.legend import Legend

TOUR = """\
**The colours** are the base model's entropy at each token: dark = sure, bright = hesitating (the legend above).
The cursor's token shows its top-5 alternatives with probabilities in the inspector.

**Where the teacher disagrees**: tokens underlined are where the teacher (here: the demo model plus the
ReasonMaxxer adapter shipped with rmx) would pick another token; **bold** underline = its pick is outside the
base's top-5. Press `d` to jump to the next one (`D` back), `n` to the next token above τ, `+`/`-` to move τ.

**Force a token and watch the answer change**: on a token, `1`-`5` forks with that alternative, `o` with the
teacher's pick, `e` with a token you type; the fork decodes to the end and is graded ✓/✗. `u` goes back up,
`c` estimates P(correct) from here, `i` runs oracle / random / gated interventions, `t` shows the paper's Table 2.

**Train the cheap fix**: `J` opens the jobs screen; there `n` launches a job (a pipeline: rollouts → pool →
ReasonMaxxer training → eval), `enter` follows it live. `X` exports this rollout as HTML, SVG or LaTeX.
"""


class TourScreen(ModalScreen[None]):
    """Shown once by `rmx demo`; closing it remembers that, and T on the help screen opens it again."""

    DEFAULT_CSS = """
    TourScreen { align: center middle; background: $background 60%; }
    TourScreen > Vertical {
        width: 96; max-width: 100%; height: auto; max-height: 100%;
        background: $panel; border: round $primary; border-title-color: $primary;
    }
    TourScreen VerticalScroll { height: auto; max-height: 1fr; }
    TourScreen Markdown { margin: 0 1; padding: 0; }
    TourScreen #tour-hint { height: 1; padding: 0 1; color: $foreground-muted; }
    """

    BINDINGS = [Binding("escape,enter,space,q", "close", "close the tour")]

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "rmx in one screen"
            yield Legend()
            with VerticalScroll():
                yield Markdown(TOUR)
            yield Static("enter or esc closes (for good)  ·  ? or F1: every key  ·  T on that help screen: this tour",
                         id="tour-hint")

    def action_close(self) -> None:
        from rmx_tui.preferences import save_preferences

        try:
            save_preferences(tour_dismissed=True)
        except OSError as error:  # a read-only home must not trap the user in the tour
            self.notify(f"could not remember that the tour was closed: {error}", severity="warning")
        self.dismiss(None)
