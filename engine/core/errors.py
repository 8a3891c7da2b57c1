"""The one exception type the engine raises for problems a user can fix."""


class RmxError(Exception):
    """A user-facing error: its message is one line that says what is wrong and what to do.

    The CLI prints it without a traceback and exits with code 2; the TUI shows it in a panel.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class Diverged(Exception):
    """Raised when a run went numerically wrong (NaN loss): its job ends `diverged`, not `failed`."""


class Interrupted(RmxError):
    """A run stopped before its end because its caller's should_stop said so; the decode session stays usable."""

    def __init__(self, message: str = "intervention stopped") -> None:
        super().__init__(message)
