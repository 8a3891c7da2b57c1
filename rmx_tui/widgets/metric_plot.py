"""A live plot of one numeric event key over the steps of a run, drawn with textual-plotext in theme colours."""

from __future__ import annotations

import time
from array import array

import numpy as np
from textual.app import RenderResult
from textual.color import Color
from textual_plotext import PlotextPlot


class Series:
    """One numeric event key's values in log order, against the step of the event that carried each."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.xs = array("d")
        self.ys = array("d")

    def __len__(self) -> int:
        return len(self.ys)


def envelope(xs: np.ndarray, ys: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ~2·`buckets` points that keep every spike: each bucket's min and max, in the order they occur."""
    size = -(-len(ys) // buckets)
    whole = len(ys) // size * size
    if size < 2 or whole == 0:
        return xs, ys
    blocks = ys[:whole].reshape(-1, size)
    low, high = blocks.argmin(axis=1), blocks.argmax(axis=1)
    starts = np.arange(0, whole, size)
    first, second = np.minimum(low, high) + starts, np.maximum(low, high) + starts
    picked = np.concatenate([np.column_stack((first, second)).ravel(), np.arange(whole, len(ys))])
    return xs[picked], ys[picked]


class MetricPlot(PlotextPlot):
    """The series as a braille line, at most two points a column however long the run; the border says the latest."""

    DEFAULT_CSS = """
    MetricPlot {
        height: 1fr;
        min-height: 10;
        border: round $foreground 30%;
        border-title-color: $primary;
        border-subtitle-color: $foreground-muted;
    }
    """

    def __init__(self, series: Series, colour: str = "primary") -> None:
        super().__init__()
        self.series = series
        self.colour = colour
        """The theme variable the line is drawn in."""
        self.drawn = -1
        """How many points the last drawing showed."""
        self.cost = 0.0
        """Seconds the last render took: plotext builds the whole figure in Python (tens of ms)."""
        self.border_title = series.key

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.redraw())
        self.redraw()

    def on_resize(self) -> None:
        self.redraw()

    def render(self) -> RenderResult:
        started = time.perf_counter()
        figure = super().render()
        self.cost = time.perf_counter() - started
        return figure

    @property
    def stale(self) -> bool:
        return self.drawn != len(self.series)

    def redraw(self) -> None:
        """Replot the whole series (cheap: numpy views of its arrays, thinned to the widget's width)."""
        series, plt = self.series, self.plt
        count = len(series)
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel("step")
        if count:
            xs, ys = np.frombuffer(series.xs), np.frombuffer(series.ys)
            if xs.min() == xs.max():  # a job that never reports progress: plot against the event's index
                xs = np.arange(count, dtype=float)
                plt.xlabel("event")
            xs, ys = envelope(xs, ys, max(self.size.width, 20))
            colour = Color.parse(self.app.theme_variables[self.colour]).rgb
            plt.plot(xs.tolist(), ys.tolist(), marker="braille", color=colour)
            self.border_subtitle = f"last {series.ys[-1]:.5g} · {count} points"
        else:
            self.border_subtitle = "no points yet"
        self.drawn = count
        self.refresh()
