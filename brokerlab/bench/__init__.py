"""brokerlab.bench: every broker measured side by side on this machine, next to its own benchmark tool.

    from brokerlab import bench
    report = bench.run()        # or: python -m brokerlab bench [--quick] [--json FILE]
    report.text(), report.ratios(), report.problems()

One job per module: measure (Result, percentiles, pacing, the latency run), redis_bench,
rabbit_bench, kafka_bench, celery_bench (+ celery_apps, the worker's app), native (the brokers'
tools and their parsers), perftest (RabbitMQ PerfTest's pinned jars), machine (loopback, fsync),
suite (the plan and the runner), report (ratios, tables, JSON), charts, claims (the seeds' figures),
cli (the `bench` command).
"""
from importlib import import_module

# imported on first use, so `python -m brokerlab --help` stays light before the course environment exists
_EXPORTS = {"LATENCY_FRACTION": "measure", "SIZES": "measure", "Result": "measure", "Report": "report",
            "Step": "suite", "plan": "suite", "run": "suite"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
