"""Helpers for the TUI tests: settings, waiting on the workbench, the app `rmx demo` builds, and clients that stall
or fail on purpose."""

from __future__ import annotations

import sys
import time
from contextlib import closing
from typing import Callable, Iterator

from engine.core.config import Tau
from engine.service.workbench import Workbench
from engine.core.decode import SamplingSpec
from engine.core.errors import RmxError

from rmx_tui.settings import Settings

SIZE = (120, 36)


def settings(**changes) -> Settings:
    """Short greedy decodes, three samples per estimate, τ at the 0.9 quantile."""
    values = dict(sampling=SamplingSpec(greedy=True, max_new_tokens=20),
                  outcome_sampling=SamplingSpec(greedy=False, temperature=0.6, top_p=0.95, max_new_tokens=12),
                  samples=3, tau=Tau(0.9, quantile=True))
    values.update(changes)
    return Settings(**values)


async def until(pilot, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Let the app run until `condition` holds (engine workers post back asynchronously)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the workbench")
        await pilot.pause(0.02)
    await pilot.pause()


async def rollout_ready(pilot) -> None:
    """Wait for the autostarted rollout to be decoded, graded and scored."""
    screen = pilot.app.screen
    await until(pilot, lambda: screen.active is not None and screen.active.state == "done")


def demo_app(*args: str):
    """The app `rmx demo ARGS` builds, taken before it runs: the caller drives it with `run_test()`."""
    from rmx_tui.app import RmxApp
    from rmx_tui.cli import main

    opened: list[RmxApp] = []
    run, argv = RmxApp.run, sys.argv
    RmxApp.run = lambda self: opened.append(self)  # type: ignore[method-assign]
    sys.argv = ["rmx", "demo", *args]
    try:
        main()
    except SystemExit as exit_:
        if exit_.code:
            raise
    finally:
        RmxApp.run, sys.argv = run, argv  # type: ignore[method-assign]
    [app] = opened
    return app


async def past_the_tour(pilot) -> None:
    """Close the first-run tour (shown until dismissed once), then wait for the first rollout to be decoded and
    scored."""
    from rmx_tui.screens.tour import TourScreen

    app = pilot.app

    def scored() -> bool:
        return getattr(app.screen, "active", None) is not None and app.screen.active.scored

    await until(pilot, lambda: isinstance(app.screen, TourScreen) or scored(), timeout=600)
    if isinstance(app.screen, TourScreen):
        await pilot.press("escape")
    await until(pilot, scored, timeout=600)


class SlowClient:
    """The real client, with a pause before each streamed step: time to press esc mid-stream."""

    def __init__(self, inner: Workbench, delay: float = 0.05) -> None:
        self.inner = inner
        self.delay = delay

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def decode(self, *args, **kwargs) -> Iterator:
        stream = self.inner.decode(*args, **kwargs)

        def slowed():
            with closing(stream):
                for step in stream:
                    time.sleep(self.delay)
                    yield step

        return slowed()


class FailingClient(SlowClient):
    """The real client whose forks (decodes with forced tokens) fail after a few steps."""

    def __init__(self, inner: Workbench, after: int = 3) -> None:
        super().__init__(inner, delay=0.0)
        self.after = after

    def decode(self, *args, force=(), **kwargs) -> Iterator:
        stream = self.inner.decode(*args, force=force, **kwargs)
        if not force:
            return stream

        def failing():
            with closing(stream):
                for count, step in enumerate(stream):
                    if count == self.after:
                        raise RmxError("the device ran out of memory (simulated)")
                    yield step

        return failing()


class SlowScoringClient(SlowClient):
    """The real client, whose scoring first waits (up to `wait` s) asking should_stop, as a long rollout would."""

    def __init__(self, inner: Workbench, wait: float = 10.0) -> None:
        super().__init__(inner, delay=0.0)
        self.wait = wait
        self.scoring = False
        self.returned_at: float | None = None

    def score(self, *args, should_stop=None, **kwargs):
        from engine.core.errors import Interrupted

        self.scoring = True
        try:
            deadline = time.monotonic() + self.wait
            while time.monotonic() < deadline:
                if should_stop is not None and should_stop():
                    raise Interrupted("scoring stopped")
                time.sleep(0.01)
            return self.inner.score(*args, should_stop=should_stop, **kwargs)
        finally:
            self.returned_at = time.monotonic()
