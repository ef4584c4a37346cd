"""The base of every live widget: a plain model, a bounded refresh loop, a text fallback."""
from __future__ import annotations

import html
import os
import time
from typing import Callable


def headless() -> bool:
    """True when no front end will render widgets: outside IPython, or under the test suite
    (nbval/nbconvert set BROKERLAB_HEADLESS through the test runner)."""
    if os.environ.get("BROKERLAB_HEADLESS"):
        return True
    try:
        from IPython import get_ipython
    except ImportError:
        return True
    shell = get_ipython()
    return shell is None or not hasattr(shell, "kernel")


class LiveView:
    """Subclasses implement `snapshot()` (read the broker's state into a dict) and `rows(model)`
    (the model as table rows); the rest is shared.

    - `model` is the latest snapshot: tests and notebook asserts read it directly;
    - `history` keeps (seconds since start, model) pairs for plots;
    - `watch()` refreshes until a condition holds or a time limit passes, always ending.
    """

    title = "Live view"
    columns: tuple[str, ...] = ()
    interval = 0.5
    max_history = 2000

    def __init__(self):
        self.model: dict = {}
        self.history: list[tuple[float, dict]] = []
        self._started = time.monotonic()
        self._widget = None

    # --- to implement ---------------------------------------------------------------------
    def snapshot(self) -> dict:
        raise NotImplementedError

    def rows(self, model: dict) -> list[tuple]:
        raise NotImplementedError

    # --- rendering ------------------------------------------------------------------------
    def render_text(self, model: dict | None = None) -> str:
        model = self.model if model is None else model
        rows = [tuple(str(c) for c in self.columns)] + [tuple(str(c) for c in r) for r in self.rows(model)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows and rows[0] else []
        lines = [self.title]
        for n, row in enumerate(rows):
            lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
            if n == 0 and self.columns:
                lines.append("  " + "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def render_html(self, model: dict | None = None) -> str:
        model = self.model if model is None else model
        head = "".join(f"<th style='text-align:left;padding:2px 10px'>{html.escape(str(c))}</th>"
                       for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td style='padding:2px 10px'>{self.cell_html(c)}</td>" for c in row) + "</tr>"
            for row in self.rows(model))
        elapsed = self.history[-1][0] if self.history else 0.0
        return (f"<div><b>{html.escape(self.title)}</b> <span style='color:#888'>t={elapsed:.1f} s</span>"
                f"<table style='border-collapse:collapse;font-family:monospace'><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table></div>")

    def cell_html(self, value) -> str:
        if isinstance(value, bool):
            return "<span style='color:#1a7f37'>✔ yes</span>" if value else "<span style='color:#cf222e'>✘ no</span>"
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value:
            bar = min(int(value), 40) if isinstance(value, int) else 0
            return f"{value} <span style='color:#4a90d9'>{'█' * bar}</span>" if bar else str(value)
        return html.escape(str(value))

    # --- live loop ------------------------------------------------------------------------
    def refresh(self) -> dict:
        self.model = self.snapshot()
        self.history.append((time.monotonic() - self._started, self.model))
        del self.history[:-self.max_history]
        if self._widget is not None:
            self._widget.value = self.render_html()
        return self.model

    def display(self) -> "LiveView":
        """Show the widget (live in JupyterLab; its text/plain stands in elsewhere)."""
        from IPython.display import display

        if not self.model:
            self.refresh()
        if headless():
            print(self.render_text())
            return self
        import ipywidgets

        self._widget = ipywidgets.HTML(self.render_html())
        display(self._widget)
        return self

    def watch(self, seconds: float = 5.0, until: Callable[[], bool] | None = None,
              interval: float | None = None) -> dict:
        """Refresh every `interval` s until `until()` is true or `seconds` pass; returns the last model.

        The loop always ends; under a test runner the final state is printed as text."""
        if self._widget is None and not headless():
            self.display()
        interval = self.interval if interval is None else interval
        deadline = time.monotonic() + seconds
        while True:
            self.refresh()
            if until is not None and until():
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        if headless():
            print(self.render_text())
        return self.model

    def series(self, key: Callable[[dict], float]) -> tuple[list[float], list[float]]:
        """(times, values) from the history, for a matplotlib plot."""
        return [t for t, _ in self.history], [key(m) for _, m in self.history]

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.render_text())
