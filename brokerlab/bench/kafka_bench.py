"""Kafka measured with confluent-kafka (librdkafka): the producer under acks 0/1/all, linger.ms 0 vs 5
vs 20, compression off vs lz4 vs zstd; a producer waiting for each delivery (acks 0/1/all); then a
consumer reading what was produced.

The producer settings are the ones kafka-producer-perf-test gets in brokerlab.bench.native
(batch.size is set explicitly on both sides: librdkafka's default is 1 MB, Java's 16 KB).
One topic with one partition per run and size, deleted after.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from .. import kafka_tools
from ..waiting import wait_for
from ..clients import kafka_admin, kafka_consumer, kafka_producer
from ..runs import run_name, scaled
from .names import scratch
from .measure import Result, latency_plan, latency_run, payload

BATCH_SIZE = 65536     # bytes per partition batch, the same for librdkafka and the Java tool
FETCH_BATCH = 500      # messages per Consumer.consume() call


@dataclass(frozen=True)
class ProducerSetting:
    acks: str
    linger_ms: int
    compression: str = "none"

    @property
    def name(self) -> str:
        text = f"acks={self.acks} linger.ms={self.linger_ms}"
        return text if self.compression == "none" else f"{text} {self.compression}"

    def config(self) -> dict:
        return {"acks": self.acks, "linger.ms": self.linger_ms, "compression.type": self.compression,
                "batch.size": BATCH_SIZE}


SETTINGS = (
    ProducerSetting("0", 5),
    ProducerSetting("1", 5),
    ProducerSetting("all", 5),
    ProducerSetting("1", 0),
    ProducerSetting("1", 20),
    ProducerSetting("1", 5, "lz4"),
    ProducerSetting("1", 5, "zstd"),
)
ACKS = ("0", "1", "all")   # the one-at-a-time producer, where acks decides the rate
LATENCY_SETTINGS = {ProducerSetting("1", 0), ProducerSetting("1", 5), ProducerSetting("1", 20),
                    ProducerSetting("all", 5)}


def counts() -> dict:
    return {"messages": scaled(100000, 10000), "each": scaled(2000, 300), "latency": scaled(5000, 1000),
            "latency_seconds": scaled(2.0, 0.4)}


class Topic:
    """A one-partition topic named per run, deleted when the block ends."""

    def __init__(self, label: str = "bench"):
        self.name = scratch(label.removeprefix("bench-"), "topic")
        self.admin = kafka_admin()

    def __enter__(self) -> "Topic":
        kafka_tools.create_topic(self.admin, self.name, partitions=1)
        return self

    def __exit__(self, *exc) -> None:
        kafka_tools.delete_topics(self.admin, [self.name])


def produce(topic: str, setting: ProducerSetting, size: int, count: int, **config) -> Result:
    """Produce `count` messages as fast as the client takes them, then flush: throughput includes
    the wait for the last delivery report. `config`: further producer settings."""
    producer = kafka_producer(**setting.config(), **config)
    failures: list = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(err)

    data = payload(size)
    producer.produce(topic, data)  # warm-up, not counted: connects to the partition leader
    producer.flush(10)
    start = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, data, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: serve delivery reports, then retry
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    left = producer.flush(30)
    seconds = time.perf_counter() - start
    if left or failures:
        raise AssertionError(f"Kafka producer ({setting.name}): {left} undelivered, {len(failures)} failed "
                             f"{failures[:1]}")
    return Result("Kafka", "produce", setting.name, size, count, seconds, "confluent-kafka")


def produce_each(topic: str, acks: str, size: int, count: int) -> Result:
    """Produce `count` messages one at a time, waiting for each delivery report (flush after every
    produce), as code that needs "it is stored" before going on does. Here acks decides the rate:
    acks=0 reports delivery once the request is written, acks=all after the broker appended it."""
    producer = kafka_producer(**ProducerSetting(acks, 0).config())
    data = payload(size)
    producer.produce(topic, data)  # warm-up, not counted
    producer.flush(10)
    start = time.perf_counter()
    for _ in range(count):
        producer.produce(topic, data)
        if producer.flush(10):
            raise AssertionError(f"Kafka producer (acks={acks}): a message was not delivered within 10 s")
    return Result("Kafka", "produce, flush each", f"acks={acks}", size, count, time.perf_counter() - start,
                  "confluent-kafka")


def consume(topic: str, size: int, count: int) -> Result:
    """Read `count` messages from the start of partition 0 (assigned, so no group rebalance is timed,
    as kafka-consumer-perf-test reports its fetch rate after the rebalance); timed from assign()."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer = kafka_consumer(run_name("bench-group"), **{"enable.auto.commit": False, "fetch.wait.max.ms": 100})
    try:
        start = time.perf_counter()
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = 0
        deadline = time.monotonic() + 60
        while got < count and time.monotonic() < deadline:
            got += sum(1 for msg in consumer.consume(FETCH_BATCH, timeout=0.2) if not msg.error())
        seconds = time.perf_counter() - start
        if got < count:
            raise AssertionError(f"Kafka consumer read {got} of {count} messages from {topic}")
        return Result("Kafka", "consume", f"consume({FETCH_BATCH})", size, count, seconds, "confluent-kafka")
    finally:
        consumer.close()


def latency(topic: "Topic", setting: ProducerSetting, size: int, max_rate: float) -> tuple[float, float, float, int]:
    """Produce stamped messages at LATENCY_FRACTION of `max_rate` to a consumer assigned at the log end."""
    from confluent_kafka import TopicPartition

    c = counts()
    rate, n = latency_plan(max_rate, c["latency"], c["latency_seconds"])
    producer = kafka_producer(**setting.config())
    consumer = kafka_consumer(run_name("bench-lat"), **{"enable.auto.commit": False, "fetch.wait.max.ms": 10,
                                                        "fetch.min.bytes": 1})
    try:
        end = kafka_tools.watermarks(topic.admin, topic.name, [0])[0][1]
        consumer.assign([TopicPartition(topic.name, 0, end)])

        def receive(timeout):
            # poll() returns as soon as one message is there; consume(timeout=0) takes what else arrived
            first = consumer.poll(timeout)
            if first is None:
                return []
            messages = [first, *consumer.consume(FETCH_BATCH, timeout=0)]
            return [m.value() for m in messages if not m.error()]

        def send(data):
            producer.produce(topic.name, data)
            producer.poll(0)

        # warm-up, not counted: one message through, so the consumer is connected and fetching
        send(b"\0" * 8)
        producer.flush(10)
        wait_for(lambda: receive(0.1), 15, f"the warm-up message on {topic.name}")
        p50, p99, got = latency_run(send, receive, count=n, rate=rate, size=size, seconds=n / rate + 15,
                                    flush=lambda: producer.flush(10))
        return p50, p99, rate, got
    finally:
        consumer.close()


def run(size: int, settings=SETTINGS) -> list[Result]:
    """Every producer setting into one topic, then the consumer over everything produced."""
    c = counts()
    results = []
    with Topic() as topic:
        for setting in settings:
            result = produce(topic.name, setting, size, c["messages"])
            if setting in LATENCY_SETTINGS:
                p50, p99, rate, got = latency(topic, setting, size, result.rate)
                result.set_latency(p50, p99, rate, got, base_rate=result.rate)
                result.extra["latency_setting"] = "consumer fetch.wait.max.ms=10"
            results.append(result)
        for acks in ACKS:
            results.append(produce_each(topic.name, acks, size, c["each"]))
        results.append(consume(topic.name, size, c["messages"]))  # reads the first c["messages"] produced
    return results
