"""A benchmark run's results and what is read from them: Python ÷ native ratios, the tables the
notebook and the command print, and the JSON file `python -m brokerlab bench --json FILE` writes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .measure import LATENCY_FRACTION, Result

RATIO_TARGET = 0.5   # the target for Python ÷ native where the client can batch


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)      # step label -> error text
    steps: dict = field(default_factory=dict)       # step label -> seconds it took
    quick: bool = False
    seconds: float = 0.0
    latency_fraction: float = LATENCY_FRACTION

    # --- finding figures --------------------------------------------------------------------------
    @property
    def python(self) -> list[Result]:
        return [r for r in self.results if not r.native]

    @property
    def native(self) -> list[Result]:
        return [r for r in self.results if r.native]

    def get(self, system: str, workload: str, setting: str, size: int = 100, native: bool = False) -> Result:
        for r in self.results:
            if r.key == (system, workload, setting, size) and r.native == native:
                return r
        raise KeyError(f"no {'native' if native else 'Python'} figure for {system} {workload} · {setting} · {size} B")

    def ratios(self) -> list[tuple[Result, Result, float]]:
        """(Python result, native result, Python rate ÷ native rate) for every pair with the same settings."""
        natives = {r.key: r for r in self.native}
        return [(r, natives[r.key], r.rate / natives[r.key].rate) for r in self.python if r.key in natives]

    def problems(self) -> list[str]:
        """Every figure must be positive and finite; an empty list means the run is sound."""
        found = [f"{label}: {error}" for label, error in self.errors.items()]
        for r in self.results:
            values = {"msg/s": r.rate, "seconds": r.seconds}
            if r.p50_ms is not None:
                values.update(p50=r.p50_ms, p99=r.p99_ms, paced_rate=r.latency_rate)
            for name, value in values.items():
                if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                    found.append(f"{r.label()} ({r.client}): {name} = {value!r}")
            if r.p50_ms is not None and r.p50_ms > r.p99_ms:
                found.append(f"{r.label()}: p50 {r.p50_ms} > p99 {r.p99_ms}")
        return found

    # --- tables -----------------------------------------------------------------------------------
    def table(self, native: bool | None = False) -> list[dict]:
        rows = []
        for r in self.results:
            if native is not None and r.native != native:
                continue
            rows.append({"system": r.system, "workload": r.workload, "setting": r.setting, "size B": r.size,
                         "client": r.client, "msg/s": round(r.rate), "MB/s": round(r.mb_per_s, 2),
                         "p50 ms": _round(r.p50_ms), "p99 ms": _round(r.p99_ms),
                         "at msg/s": round(r.latency_rate) if r.latency_rate else None})
        return rows

    def ratio_table(self) -> list[dict]:
        return [{"system": p.system, "workload": p.workload, "setting": p.setting, "size B": p.size,
                 "Python": f"{p.client} {p.rate:,.0f}/s", "native": f"{n.client} {n.rate:,.0f}/s",
                 "ratio": round(ratio, 2)} for p, n, ratio in self.ratios()]

    def text(self) -> str:
        lines = [f"brokerlab bench ({'quick' if self.quick else 'full'} run, {self.seconds:.0f} s; latency paced at "
                 f"{self.latency_fraction:.0%} of each workload's unpaced rate)"]
        if self.machine:
            m = self.machine
            lines.append(f"machine: {m.get('cores')} cores, load {m.get('load_average_1min', 0):.1f}, loopback "
                         f"{m.get('loopback_mb_per_s', 0):,.0f} MB/s, fsync p50 {m.get('fsync_p50_ms', 0):.2f} ms "
                         f"p99 {m.get('fsync_p99_ms', 0):.2f} ms")
        if self.versions:
            lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()))
        lines += ["", format_rows(self.table(native=None)), "", "Python ÷ native (same settings):",
                  format_rows(self.ratio_table())]
        if self.errors:
            lines += ["", "ERRORS:"] + [f"  {k}: {v}" for k, v in self.errors.items()]
        return "\n".join(lines)

    # --- JSON -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"quick": self.quick, "seconds": self.seconds, "latency_fraction": self.latency_fraction,
                "machine": self.machine, "versions": self.versions, "errors": self.errors, "steps": self.steps,
                "results": [r.to_dict() for r in self.results],
                "ratios": [{"key": list(p.key), "python": p.client, "native": n.client, "ratio": ratio}
                           for p, n, ratio in self.ratios()]}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Report":
        data = json.loads(Path(path).read_text())
        return cls(results=[Result.from_dict(r) for r in data["results"]], machine=data["machine"],
                   versions=data["versions"], errors=data["errors"], steps=data.get("steps", {}),
                   quick=data["quick"], seconds=data["seconds"], latency_fraction=data["latency_fraction"])


def _round(value):
    return None if value is None else round(value, 2)


def format_rows(rows: list[dict]) -> str:
    """Plain-text columns (what the command prints and a headless notebook shows)."""
    if not rows:
        return "(none)"
    headers = list(rows[0])
    cells = [headers] + [["-" if row[h] is None else f"{row[h]:,}" if isinstance(row[h], int) else str(row[h])
                          for h in headers] for row in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)
