"""The one exception type the engine raises for problems a user can fix."""


class RmxError(Exception):
    """A user-facing error: its message is one line that says what is wrong and what to do.

    The CLI prints it without a traceback and exits with code 2; the TUI shows it in a panel.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class Diverged(Exception):
    """Raised when a run went numerically wrong (NaN loss): its job ends `diverged`, not `failed`."""


class Stopped(RmxError):
    """The one way a run says it stopped early because its caller asked (cancel, Ctrl-C, esc): what it wrote so far
    is kept and resumable. A job that raises it ends `cancelled`, never `failed`."""

    def __init__(self, message: str = "stopped") -> None:
        super().__init__(message)


class Interrupted(Stopped):
    """A decode, score or intervention stopped by its caller's should_stop; the decode session stays usable."""

    def __init__(self, message: str = "intervention stopped") -> None:
        super().__init__(message)
