"""Matplotlib charts of a Report: throughput by system and setting, latency percentiles, and the
effects of batching (pipelining, linger.ms, confirm windows) and durability. Each draws one figure
under the running cell and returns it."""
from __future__ import annotations

from .report import Report

SYSTEM_COLORS = {"Redis": "#d1242f", "RabbitMQ": "#bc4c00", "Kafka": "#1f6feb", "Celery": "#1a7f37"}


def _label(r) -> str:
    workload = "" if r.workload == "publish+consume" else f" {r.workload}"
    return f"{r.system}{workload} · {r.setting}"


def _show(fig):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    plt.show()
    return fig


def throughput(report: Report, size: int = 100):
    """msg/s of every Python figure at `size` bytes (log scale), with the native tool's figure for the
    same settings as a black tick where there is one."""
    import matplotlib.pyplot as plt

    rows = [r for r in report.python if r.size in (size, 0)]
    natives = {r.key: r for r in report.native}
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 1.2))
    labels = [_label(r) for r in rows]
    ax.barh(range(len(rows)), [r.rate for r in rows], color=[SYSTEM_COLORS[r.system] for r in rows])
    for i, r in enumerate(rows):
        if r.key in natives:
            ax.plot(natives[r.key].rate, i, marker="|", color="black", markersize=12, mew=2)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(f"messages per second, {size} B payloads (log scale)")
    ax.set_title("Throughput by system and setting: bars Python clients, | the native tool", fontsize=10)
    return _show(fig)


def latency(report: Report, size: int = 100):
    """End-to-end p50 and p99 (ms, log scale) of every workload with a paced latency run."""
    import matplotlib.pyplot as plt

    rows = [r for r in report.python if r.size == size and r.p50_ms is not None]
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(rows) + 1.2))
    y = range(len(rows))
    ax.barh([i - 0.2 for i in y], [r.p50_ms for r in rows], height=0.4, label="p50",
            color=[SYSTEM_COLORS[r.system] for r in rows], alpha=0.55)
    ax.barh([i + 0.2 for i in y], [r.p99_ms for r in rows], height=0.4, label="p99",
            color=[SYSTEM_COLORS[r.system] for r in rows])
    ax.set_yticks(list(y), [f"{_label(r)} @ {r.latency_rate:,.0f}/s" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(f"end-to-end ms (log scale), paced at {report.latency_fraction:.0%} of the unpaced rate")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Latency percentiles (light: p50, dark: p99)", fontsize=10)
    return _show(fig)


def effects(report: Report, size: int = 100):
    """Three panels: Redis pipelining, RabbitMQ durability and confirms, Kafka acks/linger/compression."""
    import matplotlib.pyplot as plt

    panels = [("Redis: one command per round trip vs 16", "Redis", ("list LPUSH", "list RPOP")),
              ("RabbitMQ: durability, confirms, queue type", "RabbitMQ", ("publish+consume",)),
              ("Kafka producer: acks, linger.ms, compression", "Kafka", ("produce",))]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (title, system, workloads) in zip(axes, panels):
        rows = [r for r in report.python if r.system == system and r.size == size and r.workload in workloads]
        labels = [f"{r.workload.replace('list ', '')} {r.setting}" if system == "Redis" else r.setting for r in rows]
        ax.bar(range(len(rows)), [r.rate for r in rows], color=SYSTEM_COLORS[system])
        ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("msg/s", fontsize=8)
    return _show(fig)
