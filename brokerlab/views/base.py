"""The base of every live view: a plain model, a bounded refresh loop, an output that belongs to one cell.

The rules (see /work/coord/views.md and the README):
- Each cell that shows a view shows it under itself. `display()` and `watch()` always do; `refresh()` does when the
  view has been shown before (so a cell that refreshes a view the learner is following shows the new state there).
- An output keeps the state of the cell that produced it: when a cell ends (IPython's post_run_cell event) every
  output it created is frozen with the last state that cell saw, and no later cell ever changes it.
- Outputs are plain display data (text/html + text/plain) updated through a display id, not ipywidgets: they need
  no widget manager, so saved notebooks, nbconvert and the static site show them exactly as the cell left them.
- Numbers are always shown; bars only for the columns a view names as quantities (`bar_columns`), scaled to the
  largest value in their column; long per-run names are abbreviated (full name on hover); tables stay narrow.
"""
from __future__ import annotations

import html
import itertools
import os
import re
import time
from typing import Callable

BAR_PX = 70                 # the longest bar in a column; numbers are always printed beside it
CHART_W, CHART_H = 360, 70  # the inline history chart (SVG): small enough for a 1280x720 screen
COLORS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#57606a")
_RUN_NAME = re.compile(r"^bl-(?P<topic>.+)-\d{9,11}-(?P<tag>[0-9a-f]{4})$")


def in_kernel() -> bool:
    """True when a Jupyter kernel runs this code (a front end or nbclient/nbval may show its outputs)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def headless() -> bool:
    """True when nobody watches outputs live: outside a kernel, or when BROKERLAB_HEADLESS is set (the test suite
    and the site builder). Views then skip intermediate updates; every output still ends with its cell's state."""
    return bool(os.environ.get("BROKERLAB_HEADLESS")) or not in_kernel()


def short_name(name: str) -> str:
    """'bl-orders-1732200000-3fa2' -> 'orders…3fa2': a per-run name without its timestamp (the tag keeps it unique)."""
    m = _RUN_NAME.match(name)
    return f"{m['topic']}…{m['tag']}" if m else name


# --- which cell is running, and the outputs it created -------------------------------------------------------------
class _Cells:
    """Tracks the running cell through IPython's pre_run_cell/post_run_cell events and freezes, when a cell ends,
    every output that cell created."""

    def __init__(self):
        self.serial = 0                 # changes at every cell start
        self.live: list[_Output] = []   # outputs created by the running cell, not frozen yet
        self.shell = None

    def install(self) -> None:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None or shell is self.shell:
            return
        self.shell = shell
        shell.events.register("pre_run_cell", self.cell_starts)
        shell.events.register("post_run_cell", self.cell_ends)
        self.cell_starts()  # the cell that installs the hooks has already started

    def cell_starts(self, info=None) -> None:
        self.freeze_all()  # outputs of a cell whose post_run_cell we missed
        self.serial += 1

    def cell_ends(self, result=None) -> None:
        # the cell's number as its prompt shows it, [n]: (IPython versions differ in when they count up)
        self.freeze_all(getattr(result, "execution_count", None))

    def freeze_all(self, cell: int | None = None) -> None:
        live, self.live = self.live, []
        for output in live:
            output.freeze(cell)


CELLS = _Cells()
_ids = itertools.count(1)


class _Output:
    """One view's output under one cell: live while the cell runs, then frozen."""

    def __init__(self, view: "LiveView"):
        from IPython.display import display

        self.view = view
        self.serial = CELLS.serial
        self.cell: int | None = None  # set when the cell ends: the execution count of the cell this output is under
        self.id = f"brokerlab-view-{os.getpid()}-{next(_ids)}"
        self.since = view.history[-1][0] if view.history else 0.0  # the chart shows this cell's history
        self.frozen = False
        self.model = view.model
        self.checked_at = view.checked_at
        self._last = None
        self.handle = display(self._bundle(), raw=True, display_id=self.id)

    def _bundle(self) -> dict:
        view, state = self.view, ("final" if self.frozen else "live")
        return {"text/plain": view.render_text(self.model),
                "text/html": view.render_html(self.model, state=state, cell=self.cell, since=self.since,
                                              checked_at=self.checked_at)}

    def show(self, model: dict, final: bool = False) -> None:
        self.model, self.checked_at = model, self.view.checked_at
        if self.frozen or (headless() and not final):
            return
        bundle = self._bundle()
        if bundle != self._last:
            self._last = bundle
            self.handle.update(bundle, raw=True)

    def freeze(self, cell: int | None = None) -> None:
        if self.frozen:
            return
        self.frozen, self.cell = True, cell
        self._last = None
        bundle = self._bundle()
        self.handle.update(bundle, raw=True)
        if self.view._output is self:
            self.view._output = None


class LiveView:
    """Subclasses implement `snapshot()` (read the broker's state into a dict) and `rows(model)` (the model as table
    rows, one value per column); everything else is shared:

    - `model` is the latest snapshot: tests and notebook asserts read it directly;
    - `history` keeps (seconds since the view was made, model) pairs: `series()`, `plot()` and the inline chart;
    - `watch()` refreshes until a condition holds or a time limit passes, always ending;
    - outputs follow the rules in this module's docstring.

    Class attributes a subclass may set: `title`, `columns`, `bar_columns` (the columns that are quantities),
    `chart` ({label: model -> number}: an inline chart of this cell's history), `interval`, `live`.
    """

    title = "Live view"
    columns: tuple[str, ...] = ()
    bar_columns: tuple[str, ...] = ()   # only quantities get bars (never ids, partition numbers, offsets)
    blank_repeats: tuple[str, ...] = () # grouping: on rows whose first such column repeats the row above, these
                                        # columns are left blank (the group's name and facts are shown once)
    chart: dict[str, Callable[[dict], float]] = {}
    interval = 0.5
    live = True                         # False: the view shows facts checked once, not a changing state
    max_history = 2000

    def __init__(self):
        self.model: dict = {}
        self.history: list[tuple[float, dict]] = []
        self.checked_at: float | None = None  # wall clock of the last snapshot
        self._started = time.monotonic()
        self._output: _Output | None = None
        self._shown = False

    # --- to implement --------------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        raise NotImplementedError

    def rows(self, model: dict) -> list[tuple]:
        raise NotImplementedError

    # --- outputs ---------------------------------------------------------------------------------------------------
    def _current_output(self) -> _Output | None:
        """This cell's output of the view, created under the running cell when it has none yet."""
        if not in_kernel():
            return None
        CELLS.install()
        out = self._output
        if out is None or out.frozen or out.serial != CELLS.serial:
            out = self._output = _Output(self)
            CELLS.live.append(out)
            self._shown = True
        return out

    def display(self) -> "LiveView":
        """Show the view under the running cell (its latest state; live until the cell ends, then frozen).
        Outside a kernel its text is printed."""
        if not self.model:
            self.refresh()
        if not in_kernel():
            print(self.render_text())
            return self
        self._current_output().show(self.model, final=True)
        return self

    def _ipython_display_(self):
        self.display()

    def refresh(self) -> dict:
        """Read the broker's state once. Once the view has been shown, the new state is shown under the running
        cell (an earlier cell's output keeps its own state)."""
        self.model = self.snapshot()
        self.checked_at = time.time()
        self.history.append((time.monotonic() - self._started, self.model))
        del self.history[:-self.max_history]
        if self._shown and in_kernel():
            self._current_output().show(self.model)
        return self.model

    def watch(self, seconds: float = 5.0, until: Callable[[], bool] | None = None,
              interval: float | None = None) -> dict:
        """Show the view under the running cell and refresh it every `interval` s until `until()` is true or
        `seconds` pass; returns the last model. The loop always ends."""
        interval = self.interval if interval is None else interval
        deadline = time.monotonic() + seconds
        if in_kernel():
            self._current_output()
        while True:
            self.refresh()
            if until is not None and until():
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        if in_kernel():
            self._current_output().show(self.model, final=True)
        else:
            print(self.render_text())
        return self.model

    # --- history -----------------------------------------------------------------------------------------------------
    def series(self, key: Callable[[dict], float], since: float = 0.0) -> tuple[list[float], list[float]]:
        """(times, values) from the history (seconds since the view was made), e.g. for matplotlib."""
        points = [(t, key(m)) for t, m in self.history if t >= since]
        return [t for t, _ in points], [v for _, v in points]

    def plot(self, lines: dict[str, Callable[[dict], float]] | None = None, ylabel: str = "", title: str | None = None,
             figsize=(6.5, 2.6)):
        """A matplotlib step plot of the whole history (default: the view's `chart` series), shown under the
        running cell; returns the figure."""
        import matplotlib.pyplot as plt

        lines = lines or self.chart
        fig, ax = plt.subplots(figsize=figsize)
        for n, (label, key) in enumerate(lines.items()):
            times, values = self.series(key)
            ax.step(times, values, where="post", label=label, color=COLORS[n % len(COLORS)])
        ax.set_xlabel("seconds")
        ax.set_ylabel(ylabel)
        ax.set_title(title if title is not None else self.title, fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        plt.show()
        return fig

    # --- rendering ---------------------------------------------------------------------------------------------------
    def heading(self, model: dict) -> str:
        """The line above the table; override it when it depends on the model."""
        return self.title

    def render_text(self, model: dict | None = None) -> str:
        model = self.model if model is None else model
        rows = [tuple(str(c) for c in self.columns)] + [tuple(_text(c) for c in r) for r in self.rows(model)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows and rows[0] else []
        lines = [self.heading(model)]
        for n, row in enumerate(rows):
            lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
            if n == 0 and self.columns:
                lines.append("  " + "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def render_html(self, model: dict | None = None, state: str = "live", cell: int | None = None,
                    since: float = 0.0, checked_at: float | None = None) -> str:
        """The view as a compact HTML table (plus the inline chart). `state` is 'live' or 'final'; `cell` is the
        execution count of the cell whose output this is (kept in a data attribute for the browser test)."""
        model = self.model if model is None else model
        rows = self.rows(model)
        maxima = {i: max([abs(r[i]) for r in rows if _is_number(r[i])], default=0)
                  for i, name in enumerate(self.columns) if name in self.bar_columns}
        th = "padding:1px 8px;text-align:left;border-bottom:1px solid #d0d7de;font-weight:600"
        head = "".join(f"<th style='{th}'>{html.escape(str(c))}</th>" for c in self.columns)
        body, previous = [], None
        for row in rows:
            cells = []
            key = self.columns.index(self.blank_repeats[0]) if self.blank_repeats else None
            same_group = key is not None and previous is not None and previous[key] == row[key]
            for i, value in enumerate(row):
                name = self.columns[i] if i < len(self.columns) else ""
                if same_group and name in self.blank_repeats:
                    cells.append("<td></td>")
                    continue
                cells.append(self._td(value, maxima.get(i)))
            body.append("<tr>" + "".join(cells) + "</tr>")
            previous = row
        checked_at = self.checked_at if checked_at is None else checked_at
        clock = time.strftime("%H:%M:%S", time.localtime(checked_at)) if checked_at else "-"
        if not self.live:
            status = f"checked at {clock}"
        elif state == "live":
            status = f"<span style='color:#1a7f37'>● live</span> {clock}"
        else:
            status = f"state at the end of this cell, {clock}"
        chart = self._chart_svg(since) if self.chart and self.live else ""
        return (f"<div class='brokerlab-view' data-view-state='{state}' data-cell='{'' if cell is None else cell}' "
                "style='max-width:100%;overflow-x:auto;font-size:12px;line-height:1.35'>"
                f"<div><b>{html.escape(self.heading(model))}</b> <span style='color:#57606a'>· {status}</span></div>"
                "<table style='border-collapse:collapse;font-family:monospace;font-size:12px;margin:2px 0'>"
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{chart}</div>")

    def _td(self, value, maximum) -> str:
        style = "padding:1px 8px;vertical-align:top"
        if isinstance(value, bool):
            mark = "<span style='color:#1a7f37'>✔ yes</span>" if value else "<span style='color:#cf222e'>✘ no</span>"
            return f"<td style='{style}'>{mark}</td>"
        if _is_number(value):
            bar = ""
            if maximum:
                width = max(1, round(BAR_PX * abs(value) / maximum)) if value else 0
                bar = (f"<span style='display:inline-block;width:{width}px;height:9px;background:#4a90d9;"
                       f"margin-left:6px'></span>") if width else ""
            return (f"<td style='{style};white-space:nowrap'><span style='display:inline-block;min-width:3ch;"
                    f"text-align:right'>{value}</span>{bar}</td>")
        text = str(value)
        short = short_name(text)
        hover = f" title='{html.escape(text)}'" if short != text else ""
        return (f"<td style='{style};max-width:26ch;overflow-wrap:anywhere'{hover}>{html.escape(short)}</td>")

    def _chart_svg(self, since: float) -> str:
        """An inline SVG chart of this output's history (from `since`): small, no plotting library needed."""
        points = [(t, m) for t, m in self.history if t >= since]
        if len(points) < 2:
            return ""
        t0, t1 = points[0][0], points[-1][0]
        span = max(t1 - t0, 1e-6)
        series = {label: [key(m) for _, m in points] for label, key in self.chart.items()}
        top = max([v for vs in series.values() for v in vs if v is not None] + [1])
        x = lambda t: 30 + (CHART_W - 36) * (t - t0) / span  # noqa: E731
        y = lambda v: 4 + (CHART_H - 18) * (1 - v / top)     # noqa: E731
        parts = [f"<svg width='{CHART_W}' height='{CHART_H}' style='display:block' role='img'>",
                 f"<text x='26' y='10' font-size='9' text-anchor='end' fill='#57606a'>{top:g}</text>",
                 f"<text x='26' y='{CHART_H - 12}' font-size='9' text-anchor='end' fill='#57606a'>0</text>",
                 f"<line x1='30' y1='{CHART_H - 14}' x2='{CHART_W - 6}' y2='{CHART_H - 14}' stroke='#d0d7de'/>",
                 f"<text x='{CHART_W - 6}' y='{CHART_H - 2}' font-size='9' text-anchor='end' fill='#57606a'>"
                 f"{span:.1f} s</text>"]
        legend = []
        for n, (label, values) in enumerate(series.items()):
            color = COLORS[n % len(COLORS)]
            coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for (t, _), v in zip(points, values) if v is not None)
            parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{coords}'/>")
            legend.append(f"<span style='color:{color}'>━ {html.escape(label)}</span>")
        parts.append("</svg>")
        return "".join(parts) + f"<div style='font-size:11px'>{' &nbsp; '.join(legend)}</div>"

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.render_text())


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
