"""The seeds' "typical performance" figures (SEED-CLAIMS section 7; C11, C19, C46, C63-C64, C81-C82),
the conditions they leave out, and what this machine measured for the closest workload.

Each row says where the measured figure falls relative to the seed's range ("below", "within",
"above"): a fact about this run on this machine, not a verdict on the broker.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .report import Report



@dataclass(frozen=True)
class SeedFigure:
    ids: str
    system: str
    claim: str
    low: float | None                 # the seed's range, in `unit` (None: open-ended)
    high: float | None
    unit: str                         # "msg/s" or "ms"
    missing: str
    measure: Callable[[Report], tuple[float, str]]   # (figure, which workload it is)


def _best(report: Report, system: str, workloads: tuple, size: int = 100) -> tuple[float, str]:
    rows = [r for r in report.python if r.system == system and r.workload in workloads and r.size == size]
    best = max(rows, key=lambda r: r.rate)
    return best.rate, f"{best.workload} · {best.setting}, {size} B, {best.client}"


def _one(report: Report, system: str, workload: str, setting: str) -> tuple[float, str]:
    r = report.get(system, workload, setting)
    return r.rate, f"{workload} · {setting}, 100 B, {r.client}"


def _p99(report: Report, system: str, workload: str, setting: str | None = None) -> tuple[float, str]:
    rows = [r for r in report.python if r.system == system and r.workload == workload and r.size == 100
            and r.p99_ms is not None and (setting is None or r.setting == setting)]
    worst = max(rows, key=lambda r: r.p99_ms)
    return worst.p99_ms, f"{worst.workload} · {worst.setting} @ {worst.latency_rate:,.0f}/s (worst p99 shown)"


def _min_p99(report: Report, system: str) -> tuple[float, str]:
    rows = [r for r in report.python if r.system == system and r.size == 100 and r.p99_ms is not None]
    best = min(rows, key=lambda r: r.p99_ms)
    return best.p99_ms, f"{best.workload} · {best.setting} @ {best.latency_rate:,.0f}/s (best p99 shown)"


SEED_FIGURES = (
    SeedFigure("C19, §7", "Redis Pub/Sub", "500,000+ msg/s", 500_000, None, "msg/s",
               "message size, pipelining, number of publishers and subscribers",
               lambda r: _best(r, "Redis", ("Pub/Sub PUBLISH",))),
    SeedFigure("C19, §7", "Redis Pub/Sub", "p99 < 1 ms", None, 1.0, "ms", "rate, payload, subscriber client",
               lambda r: _p99(r, "Redis", "Pub/Sub PUBLISH")),
    SeedFigure("C19, §7", "Redis Streams", "100,000+ msg/s", 100_000, None, "msg/s",
               "pipelining, XADD vs reading, consumer groups, acks",
               lambda r: _best(r, "Redis", ("Streams XADD", "Streams XREADGROUP+XACK"))),
    SeedFigure("C19, §7", "Redis Streams", "p99 1-2 ms", 1.0, 2.0, "ms", "rate, batch size, blocking reads",
               lambda r: _p99(r, "Redis", "Streams XREADGROUP+XACK")),
    SeedFigure("C11", "Redis lists", "very high throughput and low latency (in memory)", None, None, "msg/s",
               "pipelining, number of clients: one client without a pipeline is bound by round trips",
               lambda r: _one(r, "Redis", "list LPUSH", "pipeline 1")),
    SeedFigure("C63, §7", "RabbitMQ", "20,000-50,000 msg/s, one producer and one consumer", 20_000, 50_000,
               "msg/s", "persistence, confirms, queue type, prefetch, message size",
               lambda r: _best(r, "RabbitMQ", ("publish+consume",))),
    SeedFigure("C64, §7", "RabbitMQ", "p99 1-5 ms", 1.0, 5.0, "ms", "load, persistence, confirms, queue type",
               lambda r: _min_p99(r, "RabbitMQ")),
    SeedFigure("C81, §7", "Kafka", "1,000,000+ msg/s producer", 1_000_000, None, "msg/s",
               "record size, batching/linger, acks, compression, partitions, brokers",
               lambda r: _best(r, "Kafka", ("produce",))),
    SeedFigure("C81, §7", "Kafka", "1,000,000+ msg/s consumer", 1_000_000, None, "msg/s",
               "record size, fetch size, partitions",
               lambda r: _best(r, "Kafka", ("consume",))),
    SeedFigure("C82, §7", "Kafka", "end-to-end p99 5-20 ms", 5.0, 20.0, "ms", "linger.ms, acks, fetch.wait.max.ms",
               lambda r: _p99(r, "Kafka", "produce")),
    SeedFigure("C46", "Celery", "'moderate' throughput; the broker is the bottleneck at scale", None, None,
               "msg/s", "workers, concurrency, prefetch, result backend, task size",
               lambda r: _best(r, "Celery", ("no-op tasks",), size=0)),
)


def where(value: float, low: float | None, high: float | None) -> str:
    if low is not None and value < low:
        return "below"
    if high is not None and value > high:
        return "above"
    if low is None and high is None:
        return "no range given"
    return "within"


def table(report: Report) -> list[dict]:
    rows = []
    for seed in SEED_FIGURES:
        value, workload = seed.measure(report)
        shown = f"{value:,.0f} msg/s" if seed.unit == "msg/s" else f"{value:.2f} ms"
        rows.append({"claim": seed.ids, "system": seed.system, "seed says": seed.claim,
                     "conditions not stated": seed.missing, "measured here": shown, "workload": workload,
                     "vs the seed's range": where(value, seed.low, seed.high)})
    return rows
