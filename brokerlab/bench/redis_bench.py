"""Redis measured with redis-py: a list as a queue (without and with pipelining), Pub/Sub, and
Streams (XADD, then XREADGROUP + XACK). Every key and channel is named per run and deleted after.

The pipeline depth and the payload are the ones redis-benchmark gets in brokerlab.bench.native,
so each figure has a native counterpart with the same settings.
"""
from __future__ import annotations

import socket
import threading
import time

from ..clients import redis_client
from ..runs import scaled
from .names import scratch
from .measure import Result, latency_plan, latency_run, payload

PIPELINE = 16          # the depth compared with `redis-benchmark -P 16`
STREAM_BATCH = 100     # XREADGROUP COUNT: entries a consumer takes per call


def counts() -> dict:
    return {"messages": scaled(20000, 2000), "latency": scaled(5000, 1000), "latency_seconds": scaled(2.0, 0.4)}


def _client():
    # a 5 s socket timeout: the blocking reads below block for at most 0.1 s
    client = redis_client(decode_responses=False, socket_timeout=5.0)
    client.ping()  # connect now, outside any timed section
    return client


def push_pop(r, key: str, data: bytes, n: int, depth: int) -> tuple[float, float]:
    """LPUSH n items, then RPOP n, `depth` commands per round trip; returns (push s, pop s)."""
    def run(command: str, *args) -> float:
        start = time.perf_counter()
        if depth == 1:
            call = getattr(r, command)
            for _ in range(n):
                call(key, *args)
        else:
            for done in range(0, n, depth):
                pipe = r.pipeline(transaction=False)
                for _ in range(min(depth, n - done)):
                    getattr(pipe, command)(key, *args)
                pipe.execute()
        return time.perf_counter() - start

    push = run("lpush", data)
    length = r.llen(key)
    pop = run("rpop")
    if length < n or r.llen(key) != 0:
        raise AssertionError(f"list {key}: {length} pushed of {n}, {r.llen(key)} left after popping")
    return push, pop


def lists(size: int) -> list[Result]:
    """LPUSH then RPOP, one command per round trip and PIPELINE per round trip; latency LPUSH -> BRPOP."""
    c = counts()
    r, reader = _client(), _client()
    key = scratch("list", "redis")
    data = payload(size)
    results = []
    try:
        for depth in (1, PIPELINE):
            push, pop = push_pop(r, key, data, c["messages"], depth)
            setting = f"pipeline {depth}"
            results.append(Result("Redis", "list LPUSH", setting, size, c["messages"], push, "redis-py"))
            results.append(Result("Redis", "list RPOP", setting, size, c["messages"], pop, "redis-py"))
        unpipelined = results[0]
        rate, n = latency_plan(unpipelined.rate, c["latency"], c["latency_seconds"])

        def receive(timeout):
            item = reader.brpop([key], timeout=timeout)
            return [item[1]] if item else []

        p50, p99, got = latency_run(lambda d: r.lpush(key, d), receive, count=n, rate=rate, size=size,
                                    seconds=n / rate + 10)
        unpipelined.set_latency(p50, p99, rate, got, base_rate=unpipelined.rate)
        return results
    finally:
        r.delete(key)
        r.close()
        reader.close()


class DrainSubscriber:
    """A subscriber that only reads and discards bytes: it makes Redis do the fan-out work of a
    PUBLISH without the Python parser becoming the bottleneck. Used for the Python and the native
    publish runs alike, so both publish to a channel with one live subscriber."""

    def __init__(self, channel: str):
        from ..endpoints import current

        ep = current()
        self.sock = socket.create_connection((ep.host, ep.ports["redis"]), timeout=5)
        name = channel.encode()
        self.sock.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(name), name))
        self.sock.recv(1024)  # the subscribe confirmation
        self.bytes = 0
        self._stop = threading.Event()
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._drain, daemon=True, name="pubsub-drain")
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            self.bytes += len(chunk)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def pubsub(size: int) -> list[Result]:
    """PUBLISH, PIPELINE per round trip, to a channel with one subscriber; latency PUBLISH -> receive
    measured with redis-py's own subscriber (PubSub.get_message)."""
    c = counts()
    r = _client()
    channel = scratch("chan", "channel")
    data = payload(size)
    try:
        with DrainSubscriber(channel):
            start = time.perf_counter()
            for done in range(0, c["messages"], PIPELINE):
                pipe = r.pipeline(transaction=False)
                for _ in range(min(PIPELINE, c["messages"] - done)):
                    pipe.publish(channel, data)
                receivers = pipe.execute()
            seconds = time.perf_counter() - start
        if receivers[-1] != 1:
            raise AssertionError(f"PUBLISH reached {receivers[-1]} subscribers, expected the 1 drain subscriber")
        result = Result("Redis", "Pub/Sub PUBLISH", f"pipeline {PIPELINE}", size, c["messages"], seconds, "redis-py")

        # latency needs a rate without pipelining: measure it first (a short unpaced burst)
        sub = _client().pubsub(ignore_subscribe_messages=True)
        sub.subscribe(channel)
        sub.get_message(timeout=1.0)
        try:
            burst = max(100, c["latency"])
            unpaced = _timed_publish(r, channel, data, burst)
            _drain_pubsub(sub, burst)
            rate, n = latency_plan(burst / unpaced, c["latency"], c["latency_seconds"])

            def receive(timeout):
                msg = sub.get_message(timeout=timeout)
                return [msg["data"]] if msg and msg["type"] == "message" else []

            p50, p99, got = latency_run(lambda d: r.publish(channel, d), receive, count=n, rate=rate, size=size,
                                        seconds=n / rate + 10)
            result.set_latency(p50, p99, rate, got, base_rate=burst / unpaced)
            result.extra["latency_setting"] = "pipeline 1, redis-py subscriber"
        finally:
            sub.close()
        return [result]
    finally:
        r.close()


def _timed_publish(r, channel, data, n) -> float:
    start = time.perf_counter()
    for _ in range(n):
        r.publish(channel, data)
    return time.perf_counter() - start


def _drain_pubsub(sub, n, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    got = 0
    while got < n and time.monotonic() < deadline:
        if sub.get_message(timeout=0.1):
            got += 1


def streams(size: int) -> list[Result]:
    """XADD, PIPELINE per round trip; then one consumer in a group reads STREAM_BATCH entries per
    XREADGROUP and XACKs them in one call; latency XADD -> XREADGROUP (BLOCK) -> XACK."""
    c = counts()
    r = _client()
    key, group = scratch("stream", "redis"), "bench"
    data = payload(size)
    n = c["messages"]
    try:
        r.xgroup_create(key, group, id="0", mkstream=True)
        start = time.perf_counter()
        for done in range(0, n, PIPELINE):
            pipe = r.pipeline(transaction=False)
            for _ in range(min(PIPELINE, n - done)):
                pipe.xadd(key, {"d": data})
            pipe.execute()
        add = time.perf_counter() - start

        start = time.perf_counter()
        read = 0
        deadline = time.monotonic() + 30
        while read < n and time.monotonic() < deadline:
            reply = r.xreadgroup(group, "c1", {key: ">"}, count=STREAM_BATCH)
            ids = [entry_id for _, entries in reply for entry_id, _ in entries]
            if ids:
                r.xack(key, group, *ids)
            read += len(ids)
        consume = time.perf_counter() - start
        if read != n:
            raise AssertionError(f"stream {key}: read {read} of {n} entries")
        added = Result("Redis", "Streams XADD", f"pipeline {PIPELINE}", size, n, add, "redis-py")
        consumed = Result("Redis", "Streams XREADGROUP+XACK", f"COUNT {STREAM_BATCH}", size, n, consume, "redis-py")

        # latency: unpipelined XADD (rate measured unpaced first) to a blocking group reader
        reader = _client()
        try:
            burst = max(100, c["latency"])
            start = time.perf_counter()
            for _ in range(burst):
                r.xadd(key, {"d": data})
            unpaced = time.perf_counter() - start
            r.xgroup_setid(key, group, id="$")
            rate, m = latency_plan(burst / unpaced, c["latency"], c["latency_seconds"])

            def receive(timeout):
                reply = reader.xreadgroup(group, "c2", {key: ">"}, count=STREAM_BATCH, block=int(timeout * 1000))
                entries = [(entry_id, fields) for _, es in reply or [] for entry_id, fields in es]
                if entries:
                    reader.xack(key, group, *[e[0] for e in entries])
                return [fields[b"d"] for _, fields in entries]

            p50, p99, got = latency_run(lambda d: r.xadd(key, {"d": d}), receive, count=m, rate=rate, size=size,
                                        seconds=m / rate + 10)
            consumed.set_latency(p50, p99, rate, got, base_rate=burst / unpaced)
            consumed.extra["latency_setting"] = "XADD pipeline 1 -> XREADGROUP BLOCK -> XACK"
        finally:
            reader.close()
        return [added, consumed]
    finally:
        r.delete(key)
        r.close()
