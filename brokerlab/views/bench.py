"""BenchProgress: which benchmark step runs now, which are done, how long each took and what it found."""
from __future__ import annotations

import time

from .base import LiveView


class BenchProgress(LiveView):
    """The benchmark's progress, refreshed by brokerlab.bench.run between steps (pass `view.update` as
    its `progress`). Headless (the test suite), only the final state is shown."""

    title = "Benchmark"
    columns = ("step", "state", "seconds")
    bar_columns = ("seconds",)
    live = True

    def __init__(self):
        super().__init__()
        self._state = {"index": 0, "steps": [], "report": None, "started": time.monotonic()}

    def update(self, index: int, steps: list, report) -> None:
        self._state.update(index=index, steps=steps, report=report)
        self.refresh()

    def snapshot(self) -> dict:
        index, steps, report = self._state["index"], self._state["steps"], self._state["report"]
        rows = []
        for n, step in enumerate(steps):
            seconds = report.steps.get(step.label) if report is not None else None
            if report is not None and step.label in report.errors:
                state = "failed"
            elif seconds is not None:
                state = "done"
            else:
                state = "running" if n == index else "waiting"
            rows.append({"step": step.label, "state": state, "seconds": round(seconds, 1) if seconds else None})
        return {"done": sum(r["state"] in ("done", "failed") for r in rows), "total": len(rows), "rows": rows,
                "elapsed": round(time.monotonic() - self._state["started"], 1),
                "figures": len(report.results) if report is not None else 0}

    def heading(self, model: dict) -> str:
        done, total = model.get("done", 0), model.get("total", 0)
        width = 24
        filled = int(width * done / total) if total else 0
        return (f"Benchmark [{'#' * filled}{'.' * (width - filled)}] {done}/{total} steps, "
                f"{model.get('figures', 0)} figures, {model.get('elapsed', 0):.0f} s")

    def rows(self, model: dict) -> list[tuple]:
        return [(row["step"], row["state"], row["seconds"] or 0) for row in model.get("rows", [])]
