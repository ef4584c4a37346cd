"""What one benchmark measured, and the arithmetic shared by every workload: rates, percentiles,
timestamped payloads, an open-loop pacer, and the paced end-to-end latency run.

Latency is measured at a stated fraction (LATENCY_FRACTION) of the rate the same client reached
unpaced on the same workload: at saturation a queue only grows, and "latency" is then the time a
message waits behind the backlog, which says more about the run's length than about the broker.
"""
from __future__ import annotations

import math
import statistics
import struct
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

from ..workers import BoundedWorkers

LATENCY_FRACTION = 0.5   # latency runs send at half the rate the same workload reached unpaced
SIZES = (100, 1024)      # payload bytes: a small event and a 1 KB document
_STAMP = struct.Struct(">q")  # perf_counter_ns at send time, the first 8 bytes of every latency payload


@dataclass
class Result:
    """One measured figure: `count` messages of `size` bytes in `seconds`, by `client`."""
    system: str          # "Redis", "RabbitMQ", "Kafka", "Celery"
    workload: str        # e.g. "list LPUSH", "publish+consume", "produce"
    setting: str         # the knob being varied, e.g. "pipeline 16", "acks=all linger.ms=5"
    size: int            # payload bytes
    count: int           # messages (or tasks) measured
    seconds: float
    client: str          # "redis-py", "pika", "confluent-kafka", "celery", or the native tool's name
    native: bool = False
    p50_ms: float | None = None
    p99_ms: float | None = None
    latency_rate: float | None = None   # msg/s the latency run was paced at
    latency_count: int | None = None    # messages the latency figures are computed from
    latency_base_rate: float | None = None  # the unpaced rate the pacing is a fraction of (see latency_setting)
    extra: dict = field(default_factory=dict)

    def set_latency(self, p50: float, p99: float, rate: float, count: int, base_rate: float) -> None:
        self.p50_ms, self.p99_ms, self.latency_rate, self.latency_count = p50, p99, rate, count
        self.latency_base_rate = base_rate

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.rate * self.size / 1e6

    @property
    def key(self) -> tuple:
        """Results with the same key measured the same thing; a Python and a native one make a ratio."""
        return (self.system, self.workload, self.setting, self.size)

    def to_dict(self) -> dict:
        return {**asdict(self), "rate": self.rate, "mb_per_s": self.mb_per_s}

    @classmethod
    def from_dict(cls, data: dict) -> "Result":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})

    def label(self) -> str:
        return f"{self.system} {self.workload} · {self.setting} · {self.size} B"


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of `values`: a value that was really observed."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def payload(size: int) -> bytes:
    return b"x" * size


def stamped(size: int) -> bytes:
    """A payload of `size` bytes (at least 8) whose first 8 bytes are the send time."""
    return _STAMP.pack(time.perf_counter_ns()) + b"x" * max(0, size - _STAMP.size)


def age_ms(data: bytes) -> float:
    """Milliseconds since a `stamped` payload was made (same process: perf_counter is shared)."""
    return (time.perf_counter_ns() - _STAMP.unpack_from(data)[0]) / 1e6


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paced(count: int, rate: float, running: Callable[[], bool]) -> Iterable[int]:
    """Yield 0..count-1 on an open-loop schedule of `rate` per second (message i is due at i/rate).

    A sender that falls behind catches up at once instead of shifting the schedule, so the offered
    rate is kept; waits shorter than a millisecond are not slept (sleep cannot do them), so messages
    may leave in bursts of up to a millisecond's worth."""
    start = time.perf_counter()
    for i in range(count):
        if not running():
            return
        delay = start + i / rate - time.perf_counter()
        if delay > 0.001:
            time.sleep(delay)
        yield i


def latency_run(send: Callable[[bytes], None], receive: Callable[[float], list[bytes]], *, count: int,
                rate: float, size: int, seconds: float, flush: Callable[[], None] | None = None,
                what: str = "messages") -> tuple[float, float, int]:
    """Send `count` stamped payloads at `rate`/s while a consumer thread receives them; return
    (p50 ms, p99 ms, messages received). `receive(timeout)` returns the payloads that arrived.
    Every message must arrive within `seconds`, or the run fails (a lost message is not a latency)."""
    ages: list[float] = []
    with BoundedWorkers(seconds, name="latency") as workers:
        def consume() -> None:
            while len(ages) < count and workers.running():
                for data in receive(0.1):
                    ages.append(age_ms(data))

        workers.thread(consume, name="latency-consumer")
        for _ in paced(count, rate, workers.running):
            send(stamped(size))
        if flush is not None:
            flush()
        workers.wait(until=lambda: len(ages) >= count)
        workers.stop()
    if len(ages) < count:
        raise AssertionError(f"latency run: {len(ages)} of {count} {what} arrived within {seconds:g} s")
    return percentile(ages, 50), percentile(ages, 99), len(ages)


def interleaved(a: Callable[[], float], b: Callable[[], float], repeats: int = 3) -> tuple[float, float]:
    """Medians of `a()` and `b()` measured alternately (a, b, a, b, ...): a burst of load from another
    process hits both sides instead of deciding which one wins."""
    first, second = [], []
    for _ in range(repeats):
        first.append(a())
        second.append(b())
    return statistics.median(first), statistics.median(second)


def latency_plan(max_rate: float, count: int, max_seconds: float) -> tuple[float, int]:
    """(rate, count) of a latency run: LATENCY_FRACTION of `max_rate`, and no more messages than
    that rate sends in `max_seconds`, so a slow setting (per-message confirms) stays short."""
    rate = max(1.0, LATENCY_FRACTION * max_rate)
    return rate, max(20, min(count, int(rate * max_seconds)))
