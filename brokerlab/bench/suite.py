"""The benchmark plan (which workloads, in which order, Python and native) and the runner.

    from brokerlab import bench
    report = bench.run()                 # BROKERLAB_QUICK=1: smaller counts, fewer native runs, same code
    print(report.text())

Steps run one after another (never two at once: they would share the two cores and measure each
other). A step that fails is recorded in `report.errors` and the run goes on, so one broken tool
does not throw away ten minutes of figures; `report.problems()` lists it.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Callable

from ..runs import quick
from . import celery_bench, kafka_bench, machine, native, rabbit_bench, redis_bench
from .measure import SIZES, Result
from .report import Report


@dataclass
class Step:
    label: str
    system: str
    run: Callable[[], list[Result]]
    native: bool = False


def _kafka_native(size: int, settings) -> list[Result]:
    count = kafka_bench.counts()["messages"]
    results = []
    with kafka_bench.Topic("bench-native") as topic:
        for setting in settings:
            results.append(native.kafka_producer(topic.name, setting, size, count))
        results.append(native.kafka_consumer(topic.name, size, count))
    return results


def _rabbit_native(setting, size: int) -> list[Result]:
    c = rabbit_bench.counts()
    count = c["confirm_each"] if setting.confirms == 1 else c["messages"]
    return [native.rabbit(setting, size, count)]


# the native runs a quick pass keeps: each JVM start costs seconds on a small machine
QUICK_KAFKA_NATIVE = (kafka_bench.ProducerSetting("1", 5),)
QUICK_RABBIT_NATIVE = (rabbit_bench.Setting("classic", True, rabbit_bench.CONFIRM_WINDOW),)


def plan(quick_run: bool | None = None) -> list[Step]:
    quick_run = quick() if quick_run is None else quick_run
    steps: list[Step] = []
    for size in SIZES:
        steps += [Step(f"Redis lists {size} B", "Redis", lambda s=size: redis_bench.lists(s)),
                  Step(f"Redis Pub/Sub {size} B", "Redis", lambda s=size: redis_bench.pubsub(s)),
                  Step(f"Redis Streams {size} B", "Redis", lambda s=size: redis_bench.streams(s)),
                  Step(f"redis-benchmark {size} B", "Redis",
                       lambda s=size: native.redis(s, redis_bench.counts()["messages"]), native=True)]
    for size in SIZES:
        for setting in rabbit_bench.SETTINGS:
            steps.append(Step(f"RabbitMQ {setting.name} {size} B", "RabbitMQ",
                              lambda st=setting, s=size: [rabbit_bench.run(st, s)]))
        for setting in rabbit_bench.SETTINGS:
            if quick_run and (setting not in QUICK_RABBIT_NATIVE or size != SIZES[0]):
                continue
            steps.append(Step(f"PerfTest {setting.name} {size} B", "RabbitMQ",
                              lambda st=setting, s=size: _rabbit_native(st, s), native=True))
    for size in SIZES:
        steps.append(Step(f"Kafka producer settings + consumer {size} B", "Kafka",
                          lambda s=size: kafka_bench.run(s)))
        if quick_run and size != SIZES[0]:
            continue
        settings = QUICK_KAFKA_NATIVE if quick_run else kafka_bench.SETTINGS
        steps.append(Step(f"kafka-*-perf-test {size} B", "Kafka",
                          lambda s=size, st=settings: _kafka_native(s, st), native=True))
    for broker, name in celery_bench.BROKERS.items():
        steps.append(Step(f"Celery on {name}", "Celery", lambda b=broker: [celery_bench.run(b)]))
    return steps


def run(steps: list[Step] | None = None, progress: Callable[[int, list[Step], Report], None] | None = None,
        quick_run: bool | None = None, report: Report | None = None) -> Report:
    """Run `steps` (default: the whole plan) into `report` (default: a new one, which first records the
    broker and client versions and the machine's limits); returns the report.
    `progress(index of the step about to run (len(steps) at the end), steps, report)` is called between steps."""
    quick_run = quick() if quick_run is None else quick_run
    steps = plan(quick_run) if steps is None else steps
    started = time.perf_counter()
    if report is None:
        report = Report(quick=quick_run)
        report.versions = _versions()
        report.machine = machine.describe()
    for index, step in enumerate(steps):
        if progress is not None:
            progress(index, steps, report)
        step_started = time.perf_counter()
        try:
            report.results.extend(step.run())
        except Exception as exc:  # recorded, shown by report.problems(); the other steps still run
            report.errors[step.label] = f"{type(exc).__name__}: {exc}"[:2000]
            report.errors[step.label] += "\n" + "".join(traceback.format_exception(exc)[-3:])[-800:]
        report.steps[step.label] = time.perf_counter() - step_started
    for r in report.results:
        if r.system == "Celery" and not r.native:
            r.extra["overhead_us"] = celery_bench.overhead_us(r, report.results)
    report.seconds += time.perf_counter() - started
    if progress is not None:
        progress(len(steps), steps, report)
    return report


def _versions() -> dict:
    import celery
    import confluent_kafka
    import pika
    import redis

    from ..stack.versions import running_versions

    clients = {"redis-py": redis.__version__, "pika": pika.__version__,
               "confluent-kafka": confluent_kafka.__version__, "librdkafka": confluent_kafka.libversion()[0],
               "celery": celery.__version__}
    try:
        brokers = running_versions()
    except Exception as exc:  # versions are context, not a figure
        brokers = {"brokers": f"unknown ({type(exc).__name__})"}
    return {**{f"{k} (broker)": v for k, v in brokers.items()}, **clients}
