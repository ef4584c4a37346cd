"""RabbitMQ measured with pika: transient vs persistent messages; no publisher confirms vs one
confirm awaited per message vs a window of unconfirmed messages; classic vs quorum vs stream queues.

One publisher and one consumer run at the same time on their own connections, as PerfTest's
`-x 1 -y 1` does, with the same prefetch, multi-ack and confirm window (brokerlab.bench.native
passes the same numbers to PerfTest). The publisher uses pika's asynchronous SelectConnection,
the only pika API that can keep a window of confirms in flight; the consumer a BlockingConnection.
Every queue is declared per run and deleted after.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ..clients import rabbit_connection, rabbit_parameters
from ..runs import scaled
from ..workers import BoundedWorkers
from .names import scratch
from .measure import Result, age_ms, latency_plan, payload, percentile, stamped

CONFIRM_WINDOW = 64   # unconfirmed messages in flight (PerfTest -c)
PREFETCH = 500        # consumer prefetch (PerfTest -q)
ACK_EVERY = 50        # the consumer acks with multiple=True every ACK_EVERY messages (PerfTest -A)


@dataclass(frozen=True)
class Setting:
    queue_type: str         # "classic", "quorum", "stream"
    persistent: bool        # delivery_mode 2 (written to disk) or 1 (kept in memory)
    confirms: int | None    # None: no confirms; 1: wait for each; N: window of N

    @property
    def name(self) -> str:
        confirms = {None: "no confirms", 1: "confirm each"}.get(self.confirms, f"confirm window {self.confirms}")
        durability = "persistent" if self.persistent else "transient"
        return f"{self.queue_type}, {durability}, {confirms}"


SETTINGS = (
    Setting("classic", False, None),
    Setting("classic", True, None),
    Setting("classic", True, 1),
    Setting("classic", True, CONFIRM_WINDOW),
    Setting("quorum", True, CONFIRM_WINDOW),    # quorum queues are always durable and replicate via Raft
    Setting("stream", True, CONFIRM_WINDOW),    # an append-only log, read over AMQP with x-stream-offset
)


def counts() -> dict:
    return {"messages": scaled(30000, 1500), "confirm_each": scaled(2000, 300),
            "latency": scaled(5000, 1000), "latency_seconds": scaled(2.0, 0.4)}


def declare(channel, queue: str, setting: Setting) -> None:
    """Every queue is durable (RabbitMQ 4 deprecates transient non-exclusive queues); "transient" and
    "persistent" are the messages' delivery mode, which is what decides whether they are written to disk."""
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": setting.queue_type})


class WindowedPublisher:
    """Publish `count` messages on a SelectConnection, keeping at most `window` unconfirmed
    (window None: no confirm mode at all), optionally paced at `rate` per second."""

    def __init__(self, queue: str, count: int, size: int, setting: Setting, rate: float | None = None,
                 stamp: bool = False, seconds: float = 60.0):
        self.queue, self.count, self.size, self.setting = queue, count, size, setting
        self.rate, self.stamp, self.seconds = rate, stamp, seconds
        self.sent = 0
        self.outstanding: set[int] = set()
        self.error: str | None = None
        self.started = self.finished = 0.0
        self.connection = self.channel = None

    def run(self) -> float:
        """Publish everything; returns seconds from the first publish to the last confirm (or the
        last publish when there are no confirms)."""
        import pika

        self.connection = pika.SelectConnection(
            rabbit_parameters(), on_open_callback=self._opened,
            on_open_error_callback=lambda _c, exc: self._fail(f"connection failed: {exc}"),
            on_close_callback=lambda conn, _reason: conn.ioloop.stop())
        self.connection.ioloop.call_later(self.seconds, lambda: self._fail(
            f"publisher did not finish within {self.seconds:g} s ({self.sent} of {self.count} sent)"))
        self.connection.ioloop.start()
        if self.error:
            raise AssertionError(f"RabbitMQ publisher ({self.setting.name}): {self.error}")
        return self.finished - self.started

    def _opened(self, connection) -> None:
        connection.channel(on_open_callback=self._channel_open)

    def _channel_open(self, channel) -> None:
        import pika

        self.channel = channel
        self.properties = pika.BasicProperties(delivery_mode=2 if self.setting.persistent else 1)
        self.body = payload(self.size)
        if self.setting.confirms:
            channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._begin())
        else:
            self._begin()

    def _begin(self) -> None:
        self.started = time.perf_counter()
        self._pump()

    def _pump(self) -> None:
        window = self.setting.confirms
        burst = 0
        while self.sent < self.count and not self.error:
            if window and len(self.outstanding) >= window:
                return  # the next confirm calls _pump again
            if self.rate:
                delay = self.started + self.sent / self.rate - time.perf_counter()
                if delay > 0.001:
                    self.connection.ioloop.call_later(delay, self._pump)
                    return
            body = stamped(self.size) if self.stamp else self.body
            self.channel.basic_publish("", self.queue, body, self.properties)
            self.sent += 1
            if window:
                self.outstanding.add(self.sent)  # delivery tags count from 1 in confirm mode
            burst += 1
            if not window and burst >= 200:
                # let the ioloop write what is buffered before queueing more
                self.connection.ioloop.call_later(0, self._pump)
                return
        if self.sent >= self.count and not (window and self.outstanding):
            self._done()

    def _on_confirm(self, frame) -> None:
        method = frame.method
        if method.NAME != "Basic.Ack":
            self._fail(f"broker refused message {method.delivery_tag} ({method.NAME})")
            return
        if method.multiple:
            self.outstanding = {t for t in self.outstanding if t > method.delivery_tag}
        else:
            self.outstanding.discard(method.delivery_tag)
        self._pump()

    def _done(self) -> None:
        if not self.finished:
            self.finished = time.perf_counter()
            self.connection.close()

    def _fail(self, why: str) -> None:
        if self.finished or self.error:
            return
        self.error = why
        self.finished = time.perf_counter()
        if self.connection.is_open:
            self.connection.close()
        else:
            self.connection.ioloop.stop()


def _consume(queue: str, count: int, setting: Setting, workers: BoundedWorkers, ready: threading.Event,
             state: dict, ages: list | None) -> None:
    """Consume `count` messages with prefetch PREFETCH, acking with multiple=True every ACK_EVERY."""
    connection = rabbit_connection()
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=PREFETCH)

        def on_message(ch, method, _properties, body):
            state["got"] += 1
            if ages is not None:
                ages.append(age_ms(body))
            if state["got"] % ACK_EVERY == 0 or state["got"] >= count:
                ch.basic_ack(method.delivery_tag, multiple=True)
            if state["got"] >= count:
                state["last"] = time.perf_counter()

        arguments = {"x-stream-offset": "first"} if setting.queue_type == "stream" else None
        channel.basic_consume(queue, on_message, arguments=arguments)
        ready.set()
        while state["got"] < count and workers.running():
            connection.process_data_events(time_limit=0.05)
    finally:
        connection.close()


def through_queue(setting: Setting, size: int, count: int, rate: float | None = None,
                   seconds: float = 60.0) -> tuple[float, float, list[float]]:
    """One publisher and one consumer through a fresh queue. Returns (end-to-end seconds,
    publisher seconds, latencies in ms when paced)."""
    queue = scratch("q", "queue")
    admin = rabbit_connection()
    try:
        declare(admin.channel(), queue, setting)
        ages: list[float] | None = [] if rate else None
        state = {"got": 0, "last": 0.0}
        ready = threading.Event()
        with BoundedWorkers(seconds, name="rabbit-bench") as workers:
            workers.thread(_consume, queue, count, setting, workers, ready, state, ages, name="consumer")
            if not ready.wait(10):
                raise AssertionError(f"RabbitMQ consumer on {queue} did not start within 10 s")
            publisher = WindowedPublisher(queue, count, size, setting, rate=rate, stamp=bool(rate),
                                          seconds=max(1.0, workers.remaining() - 1))
            publish_seconds = publisher.run()
            workers.wait(until=lambda: state["got"] >= count)
            workers.stop()
        if state["got"] < count:
            raise AssertionError(f"RabbitMQ ({setting.name}): {state['got']} of {count} messages consumed")
        return state["last"] - publisher.started, publish_seconds, ages or []
    finally:
        try:
            admin.channel().queue_delete(queue)
        finally:
            admin.close()


def run(setting: Setting, size: int) -> Result:
    c = counts()
    count = c["confirm_each"] if setting.confirms == 1 else c["messages"]
    seconds, publish_seconds, _ = through_queue(setting, size, count)
    result = Result("RabbitMQ", "publish+consume", setting.name, size, count, seconds, "pika")
    result.extra["publish_rate"] = count / publish_seconds
    rate, n = latency_plan(result.rate, c["latency"], c["latency_seconds"])
    _, _, ages = through_queue(setting, size, n, rate=rate, seconds=n / rate + 15)
    result.set_latency(percentile(ages, 50), percentile(ages, 99), rate, len(ages), base_rate=result.rate)
    return result
