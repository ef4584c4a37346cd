"""The brokers' own benchmark tools, run by the same harness against the same broker in the same run,
with the settings the Python clients get, and their output parsed into Results:

- redis-benchmark (from the stack's Redis: `python -m brokerlab tool redis-benchmark`), one client
  (-c 1), the same pipeline depth, payload and per-run key or channel as brokerlab.bench.redis_bench;
- kafka-producer-perf-test / kafka-consumer-perf-test (the stack's pinned Kafka jars, through
  brokerlab.stack.tools), the same acks, linger.ms, batch.size and compression as kafka_bench;
- RabbitMQ PerfTest (brokerlab.bench.perftest), one producer and one consumer, the same confirm
  window, prefetch, multi-ack, persistence and queue type as rabbit_bench.

A tool that fails, or whose output does not contain the figure, raises NativeToolError with its
output: a native figure is never guessed.
"""
from __future__ import annotations

import re
import subprocess
import time

from ..clients import kafka_admin, rabbit_connection, redis_client
from ..endpoints import current
from ..runs import run_name
from ..stack import tools
from . import perftest
from .kafka_bench import ProducerSetting
from .names import scratch
from .measure import Result
from .rabbit_bench import ACK_EVERY, PREFETCH, Setting, declare
from .redis_bench import PIPELINE, DrainSubscriber

TOOL_TIMEOUT = 120.0


class NativeToolError(RuntimeError):
    pass


def run_tool(argv: list[str], env: dict | None = None, timeout: float = TOOL_TIMEOUT) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise NativeToolError(f"{argv[0]} did not finish within {timeout:g} s: {' '.join(argv[:12])} ...") from exc
    if done.returncode != 0:
        raise NativeToolError(f"{' '.join(argv[:12])} ... exited with {done.returncode}:\n"
                              f"{(done.stdout + done.stderr)[-1500:]}")
    return done.stdout + done.stderr


def _tail(text: str, lines: int = 4) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --- Redis: redis-benchmark ---------------------------------------------------------------------

def redis_benchmark(command: list[str], count: int, pipeline: int) -> tuple[float, str]:
    """Run one custom command `count` times on one connection, `pipeline` per round trip; (rps, output)."""
    argv, env = tools.command("redis-benchmark", ["-c", "1", "-n", str(count), "-P", str(pipeline), "--csv",
                                                  *command])
    out = run_tool(argv, env)
    rows = [line for line in out.splitlines() if line.startswith('"') and not line.startswith('"test"')]
    if not rows:
        raise NativeToolError(f"redis-benchmark printed no CSV result:\n{_tail(out, 10)}")
    rps = float(rows[-1].split('","')[1].strip('"'))
    if not rps > 0:
        raise NativeToolError(f"redis-benchmark reported {rps} requests/s:\n{_tail(out)}")
    return rps, out


def _redis_result(workload: str, setting: str, size: int, count: int, rps: float, out: str) -> Result:
    result = Result("Redis", workload, setting, size, count, count / rps, "redis-benchmark", native=True)
    result.extra["output"] = _tail(out, 2)
    return result


def redis(size: int, count: int) -> list[Result]:
    """The Redis workloads of redis_bench, by redis-benchmark: LPUSH/RPOP at depth 1 and PIPELINE,
    PUBLISH to a channel with one subscriber, XADD. (XREADGROUP has no redis-benchmark counterpart.)"""
    key, channel, stream = scratch("nlist", "redis"), scratch("nchan", "channel"), scratch("nstream", "redis")
    data = "x" * size
    results = []
    r = redis_client()
    try:
        for depth in (1, PIPELINE):
            rps, out = redis_benchmark(["LPUSH", key, data], count, depth)
            results.append(_redis_result("list LPUSH", f"pipeline {depth}", size, count, rps, out))
            rps, out = redis_benchmark(["RPOP", key], count, depth)
            results.append(_redis_result("list RPOP", f"pipeline {depth}", size, count, rps, out))
        with DrainSubscriber(channel):
            rps, out = redis_benchmark(["PUBLISH", channel, data], count, PIPELINE)
        results.append(_redis_result("Pub/Sub PUBLISH", f"pipeline {PIPELINE}", size, count, rps, out))
        rps, out = redis_benchmark(["XADD", stream, "*", "d", data], count, PIPELINE)
        results.append(_redis_result("Streams XADD", f"pipeline {PIPELINE}", size, count, rps, out))
        return results
    finally:
        r.delete(key, stream)
        r.close()


# --- Kafka: kafka-producer-perf-test, kafka-consumer-perf-test --------------------------------------

_PRODUCER_LINE = re.compile(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency,"
                            r" ([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th")


def kafka_producer(topic: str, setting: ProducerSetting, size: int, count: int) -> Result:
    props = [f"{k}={v}" for k, v in setting.config().items()]
    argv, env = tools.command("kafka-producer-perf-test", [
        "--topic", topic, "--num-records", str(count), "--record-size", str(size), "--throughput", "-1",
        "--producer-props", f"bootstrap.servers={current().kafka_bootstrap}", *props])
    out = run_tool(argv, env)
    matches = _PRODUCER_LINE.findall(out)
    if not matches:
        raise NativeToolError(f"kafka-producer-perf-test printed no summary line:\n{_tail(out, 10)}")
    sent, rate, _mb, _avg, _max, p50, _p95, p99 = matches[-1]
    if int(sent) != count:
        raise NativeToolError(f"kafka-producer-perf-test sent {sent} of {count} records:\n{_tail(out)}")
    result = Result("Kafka", "produce", setting.name, size, count, count / float(rate),
                    "kafka-producer-perf-test", native=True)
    # the tool's own latency is send -> acknowledgement at saturation, not end to end at a paced rate
    result.extra.update(output=_tail(out, 1), ack_p50_ms=float(p50), ack_p99_ms=float(p99))
    return result


def kafka_consumer(topic: str, size: int, count: int) -> Result:
    group = run_name("bench-ngroup")
    argv, env = tools.command("kafka-consumer-perf-test", [
        "--topic", topic, "--messages", str(count), "--group", group, "--timeout", "30000"])
    try:
        out = run_tool(argv, env)
    finally:
        _delete_group(group)
    lines = [line for line in out.splitlines() if line.strip()]
    header = next((i for i, line in enumerate(lines) if "nMsg.sec" in line), None)
    if header is None or header + 1 >= len(lines):
        raise NativeToolError(f"kafka-consumer-perf-test printed no CSV result:\n{_tail(out, 10)}")
    row = dict(zip([h.strip() for h in lines[header].split(",")], [v.strip() for v in lines[header + 1].split(",")]))
    consumed, rate = int(float(row["data.consumed.in.nMsg"])), float(row["fetch.nMsg.sec"])
    if consumed < count or not rate > 0:
        raise NativeToolError(f"kafka-consumer-perf-test consumed {consumed} of {count} at {rate}/s:\n{_tail(out)}")
    result = Result("Kafka", "consume", "consume(500)", size, count, count / rate, "kafka-consumer-perf-test",
                    native=True)
    result.extra["output"] = f"{lines[header]}\n{lines[header + 1]}"
    return result


def _delete_group(group: str) -> None:
    admin = kafka_admin()
    try:
        for future in admin.delete_consumer_groups([group], request_timeout=10).values():
            future.result(10)
    except Exception:  # the group may not exist if the tool failed before joining
        pass


# --- RabbitMQ: PerfTest ----------------------------------------------------------------------------

_RATE = re.compile(r"(sending|receiving) rate avg: (\d+) msg/s")


def rabbit(setting: Setting, size: int, count: int) -> Result:
    """PerfTest with one producer and one consumer through a queue declared per run exactly as
    rabbit_bench declares it (PerfTest is told it is predeclared)."""
    queue = scratch("nq", "queue")
    admin = rabbit_connection()
    try:
        declare(admin.channel(), queue, setting)
        args = ["--uri", current().amqp_url.rstrip("/") + "/%2F", "-x", "1", "-y", "1", "-s", str(size),
                "-C", str(count), "-D", str(count), "-u", queue, "-p", "-ad", "false",
                "-q", str(PREFETCH), "-A", str(ACK_EVERY), "-z", str(int(TOOL_TIMEOUT - 20))]
        if setting.persistent:
            args += ["-f", "persistent"]
        if setting.confirms:
            args += ["-c", str(setting.confirms)]
        if setting.queue_type == "stream":
            args += ["-ca", "x-stream-offset=first"]
        start = time.perf_counter()
        out = run_tool(perftest.command(args))
        wall = time.perf_counter() - start
    finally:
        try:
            admin.channel().queue_delete(queue)
        finally:
            admin.close()
    rates = dict(_RATE.findall(out))
    if "receiving" not in rates or not int(rates["receiving"]) > 0:
        raise NativeToolError(f"PerfTest printed no receiving rate:\n{_tail(out, 10)}")
    result = Result("RabbitMQ", "publish+consume", setting.name, size, count, count / int(rates["receiving"]),
                    "PerfTest", native=True)
    result.extra.update(output=_tail(out, 2), publish_rate=float(rates.get("sending", 0)), wall_seconds=wall)
    return result

