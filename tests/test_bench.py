"""brokerlab.bench against the real brokers, in quick mode: relations that hold on any machine, never
absolute numbers. Each relation compares the medians of interleaved repeats (A, B, A, B, ...), so a
burst of load from another process hits both sides instead of deciding the outcome."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest

from brokerlab.bench import kafka_bench, native, rabbit_bench, redis_bench
from brokerlab.bench.measure import LATENCY_FRACTION, interleaved, percentile
from brokerlab.bench.report import Report
from brokerlab.bench.suite import QUICK_KAFKA_NATIVE, QUICK_RABBIT_NATIVE, Step, plan, run
from brokerlab.clients import redis_client
from brokerlab.runs import run_name

@pytest.fixture(autouse=True)
def quick_mode(monkeypatch):
    monkeypatch.setenv("BROKERLAB_QUICK", "1")


def test_redis_pipelined_beats_one_command_per_round_trip():
    r = redis_client(decode_responses=False)
    key = run_name("test-bench-pipe")
    try:
        def rate(depth):
            return lambda: 1000 / redis_bench.push_pop(r, key, b"x" * 100, 1000, depth)[0]

        pipelined, unpipelined = interleaved(rate(redis_bench.PIPELINE), rate(1))
        assert pipelined > unpipelined, (pipelined, unpipelined)
    finally:
        r.delete(key)
        r.close()


def test_rabbitmq_windowed_confirms_beat_a_confirm_per_message():
    def rate(confirms, count):
        setting = rabbit_bench.Setting("classic", True, confirms)
        return lambda: count / rabbit_bench.through_queue(setting, 100, count)[1]  # the publisher's rate

    windowed, each = interleaved(rate(rabbit_bench.CONFIRM_WINDOW, 600), rate(1, 200))
    assert windowed > each, (windowed, each)


def test_kafka_acks_0_at_least_as_fast_as_acks_all():
    # Waiting for each delivery report, acks=all adds the broker's append and answer to every message.
    # (A batching producer with unlimited requests in flight hides acks on a fast local broker: there the
    # two are within noise either way, so that is not a relation that holds on any machine.)
    with kafka_bench.Topic("test-bench-acks") as topic:
        def rate(acks):
            return lambda: kafka_bench.produce_each(topic.name, acks, 100, 300).rate

        acks_0, acks_all = interleaved(rate("0"), rate("all"))
    assert acks_0 >= acks_all, (acks_0, acks_all)


@pytest.fixture(scope="module")
def native_report():
    """The quick plan's Redis steps, one PerfTest run and the Kafka perf tools, through the real runner."""
    rabbit = f"RabbitMQ {QUICK_RABBIT_NATIVE[0].name} 100 B"  # the Python side of the PerfTest run
    steps = [s for s in plan(quick_run=True) if s.label.endswith("100 B") and
             (s.system == "Redis" or s.native or s.label.startswith("Kafka") or s.label == rabbit)]
    return run(steps, quick_run=True)


def test_every_figure_is_positive_and_finite(native_report):
    assert native_report.problems() == []
    assert native_report.results
    for r in native_report.results:
        assert math.isfinite(r.rate) and r.rate > 0 and r.mb_per_s >= 0
    with_latency = [r for r in native_report.python if r.p50_ms is not None]
    assert {r.system for r in with_latency} == {"Redis", "RabbitMQ", "Kafka"}
    for r in with_latency:
        assert 0 < r.p50_ms <= r.p99_ms and r.latency_count > 0
        # paced at the stated fraction of an unpaced rate measured on the same workload, never at saturation
        assert r.latency_rate == pytest.approx(max(1.0, LATENCY_FRACTION * r.latency_base_rate))


def test_every_native_tool_ran_and_its_output_was_parsed(native_report):
    clients = {r.client for r in native_report.native}
    assert clients == {"redis-benchmark", "PerfTest", "kafka-producer-perf-test", "kafka-consumer-perf-test"}
    for r in native_report.native:
        assert r.extra["output"].strip(), r.label()
    perf = native_report.get("RabbitMQ", "publish+consume", QUICK_RABBIT_NATIVE[0].name, native=True)
    assert "consumer latency" in perf.extra["output"] and perf.extra["publish_rate"] > 0
    kafka = native_report.get("Kafka", "produce", QUICK_KAFKA_NATIVE[0].name, native=True)
    assert "records sent" in kafka.extra["output"] and kafka.extra["ack_p99_ms"] >= kafka.extra["ack_p50_ms"]
    # every native figure has a Python figure with the same settings, so every one gives a ratio
    paired = {n.key for _, n, _ in native_report.ratios()}
    assert paired == {n.key for n in native_report.native}


def test_report_round_trips_through_json(native_report, tmp_path):
    loaded = Report.load(native_report.save(tmp_path / "bench.json"))
    assert [r.key for r in loaded.results] == [r.key for r in native_report.results]
    assert [round(x, 6) for _, _, x in loaded.ratios()] == [round(x, 6) for _, _, x in native_report.ratios()]
    assert "Python ÷ native" in loaded.text()


def test_a_failing_step_is_reported_not_hidden():
    def broken():
        raise native.NativeToolError("redis-benchmark printed no CSV result")

    report = run([Step("broken tool", "Redis", broken, native=True)], quick_run=True)
    assert report.results == []
    assert any("broken tool" in p and "no CSV result" in p for p in report.problems())


def test_a_tool_that_fails_raises_with_its_output():
    with pytest.raises(native.NativeToolError, match="exited with 1"):
        native.run_tool([sys.executable, "-c", "import sys; print('boom'); sys.exit(1)"])


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile([7.0], 99) == 7.0


def test_quick_plan_covers_every_system_and_both_sizes():
    steps = plan(quick_run=True)
    assert {s.system for s in steps} == {"Redis", "RabbitMQ", "Kafka", "Celery"}
    assert any("1024 B" in s.label for s in steps) and any("100 B" in s.label for s in steps)
    assert len(plan(quick_run=False)) > len(steps)  # the full run adds native runs, same code


def test_bench_command_is_registered():
    out = subprocess.run([sys.executable, "-m", "brokerlab", "bench", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "--json" in out.stdout and "--quick" in out.stdout
