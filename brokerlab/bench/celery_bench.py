"""Celery measured end to end: no-op tasks per second through Redis and through RabbitMQ, and what
each task costs over the raw broker client doing the same push and pop.

One Celery worker (`--pool=solo`, one process, Celery's default prefetch, log level WARNING: a log
line per task is a cost of its own) consumes a per-run queue
(brokerlab.bench.celery_apps); the client sends N no-op tasks with apply_async, then one marker
task. With one solo worker on one FIFO queue the marker runs after every no-op, so the run ends
when the marker's Redis key appears: no result backend, no per-task bookkeeping in the timing.
"""
from __future__ import annotations

import importlib
import time

from ..celery_app import BROKER_DB, celery_worker
from ..clients import rabbit_connection, redis_client
from ..runs import scaled
from ..stack.paths import home
from ..waiting import wait_for
from .names import scratch
from .measure import Result

BROKERS = {"redis": "Redis", "amqp": "RabbitMQ"}
POOL = "solo"       # one task at a time in the worker process: the per-task cost, no pool hand-off
# the raw-client workload each Celery figure is compared with: the same broker, one message per
# round trip, the delivery mode Celery uses (kombu publishes persistent messages, without confirms)
RAW_COUNTERPART = {"redis": [("Redis", "list LPUSH", "pipeline 1"), ("Redis", "list RPOP", "pipeline 1")],
                   "amqp": [("RabbitMQ", "publish+consume", "classic, persistent, no confirms")]}


def counts() -> dict:
    return {"tasks": scaled(5000, 500)}


def run(broker: str) -> Result:
    module = f"brokerlab.bench.celery_apps.on_{broker}"
    app = importlib.import_module(module).app
    noop, mark = app.tasks["bench.noop"], app.tasks["bench.mark"]
    queue = scratch(f"celery-{broker}", "queue" if broker == "amqp" else "celery-redis")
    mark_key = scratch("mark", "redis")
    n = counts()["tasks"]
    marks = redis_client()
    workdir = home() / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with celery_worker(module, concurrency=1, pool=POOL, queues=[queue], ready_timeout=60, cwd=workdir,
                           extra_args=["--loglevel=WARNING"]):
            # warm-up, not counted: the client's broker connection and the worker's first task
            mark.apply_async((mark_key + ":warm",), queue=queue)
            wait_for(lambda: marks.exists(mark_key + ":warm"), 30, "the Celery warm-up task", poll=0.01)
            start = time.perf_counter()
            for _ in range(n):
                noop.apply_async(queue=queue)
            sent = time.perf_counter()
            mark.apply_async((mark_key,), queue=queue)
            wait_for(lambda: marks.exists(mark_key), max(30.0, n / 50), f"{n} Celery no-op tasks on {queue}",
                     poll=0.005)
            end = time.perf_counter()
        result = Result("Celery", "no-op tasks", f"on {BROKERS[broker]}, 1 {POOL} worker", 0, n, end - start, "celery")
        result.extra["send_rate"] = n / (sent - start)
        return result
    finally:
        marks.delete(mark_key, mark_key + ":warm")
        marks.close()
        _cleanup(broker, queue)


def _cleanup(broker: str, queue: str) -> None:
    if broker == "amqp":
        connection = rabbit_connection()
        try:
            connection.channel().queue_delete(queue)
        finally:
            connection.close()
        return
    from .celery_apps import PREFIX

    client = redis_client(db=BROKER_DB)
    try:
        doomed = list(client.scan_iter(match=PREFIX + "*", count=1000))
        if doomed:
            client.delete(*doomed)
    finally:
        client.close()


def overhead_us(celery: Result, results: list[Result]) -> float | None:
    """Microseconds each task costs beyond the raw client's push + pop of one message on the same
    broker (the figures of RAW_COUNTERPART measured in the same run, 100 B payloads)."""
    broker = next(b for b, name in BROKERS.items() if celery.setting.startswith(f"on {name}"))
    by_key = {(r.system, r.workload, r.setting): r for r in results if not r.native and r.size == 100}
    raw = [by_key.get(k) for k in RAW_COUNTERPART[broker]]
    if not all(raw):
        return None
    raw_seconds = sum(1 / r.rate for r in raw)
    return (1 / celery.rate - raw_seconds) * 1e6
