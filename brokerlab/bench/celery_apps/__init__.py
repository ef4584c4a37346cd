"""The Celery apps the benchmark's workers run: a no-op task and a marker task, on Redis or RabbitMQ.

The worker is a separate process (`celery -A brokerlab.bench.celery_apps.on_redis worker`), so the
app must live in an importable module. Both processes read the same per-run key prefix from the
environment (set here by the first import, inherited by the worker), so every Redis key Celery
creates for the benchmark (queue, bindings, unacked) belongs to this run and is deleted after it.
"""
from __future__ import annotations

import os

from ...celery_app import make_app
from ...runs import run_name

PREFIX_ENV = "BROKERLAB_BENCH_CELERY_PREFIX"
PREFIX = os.environ.setdefault(PREFIX_ENV, run_name("bench-celery") + ":")
MARK_SECONDS = 600  # the marker key expires on its own if a run dies before deleting it


def build(broker: str):
    app = make_app(f"bench_{broker}", broker=broker, results=False,
                   # Celery's defaults for a throughput run: no task events, no STARTED state
                   task_track_started=False, task_send_sent_event=False, worker_send_task_events=False)
    if broker == "redis":
        app.conf.broker_transport_options = {**app.conf.broker_transport_options, "global_keyprefix": PREFIX}

    @app.task(name="bench.noop", ignore_result=True, shared=False)
    def noop():
        return None

    @app.task(name="bench.mark", ignore_result=True, shared=False)
    def mark(key: str):
        # runs after every noop sent before it (one solo worker, one FIFO queue): the end of a run
        from ...clients import redis_client

        client = redis_client()
        try:
            client.set(key, "1", ex=MARK_SECONDS)
        finally:
            client.close()

    return app
