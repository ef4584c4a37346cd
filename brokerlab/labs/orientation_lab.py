"""Checks for lab 00 (first messages): each runs the learner's functions against the real broker.

    enqueue(r, key, text) / dequeue(r, key)          a Redis list as a FIFO queue
    declare_queue(channel, name) / publish(...)      a RabbitMQ queue of the kind the learner decided
    QUEUE_KIND = "durable" | "exclusive"             the design decision
    produce_event(producer, topic, key, value)       a Kafka event on the broker, key and value intact
    stretch: produce_all(producer, topic, events)    every event's (partition, offset) from delivery reports
"""
from __future__ import annotations

from urllib.parse import quote

from .. import kafka_tools as kt
from ..clients import kafka_admin, kafka_producer, rabbit_api, rabbit_connection, redis_client
from .checking import Lab, LabCheckFailed, call, decided, expect, passed

lab = Lab("00 · first messages")
hint = lab.hint


# --- Redis ---------------------------------------------------------------------------------------------

@lab.check("redis queue",
           idea="A queue hands out messages in the order they came: first in, first out. A Redis list has two "
                "ends; a queue adds at one and takes from the other.",
           code="LPUSH adds at the left end, RPOP takes from the right end (RPUSH and LPOP are the mirror pair). "
                "RPOP on an empty list returns None.")
def check_redis_queue(enqueue, dequeue) -> None:
    r = redis_client()
    key = lab.scratch("lab00-queue", kind="redis")
    try:
        for text in ("first", "second", "third"):
            call(enqueue, r, key, text)
        kind = r.type(key)
        expect(kind == "list", f"after three enqueue calls, the key {key!r} holds a Redis {kind!r}, not a list",
               "A queue of several messages is a Redis list: add to it, do not overwrite it.", blame="enqueue")
        held = r.lrange(key, 0, -1)
        expect(sorted(held) == ["first", "second", "third"],
               f"after enqueue('first'), enqueue('second'), enqueue('third') the list holds {held}",
               "Each enqueue adds exactly its own message to the list.", blame="enqueue")
        got = [call(dequeue, r, key) for _ in range(3)]
        left = r.lrange(key, 0, -1)
        expect(left == [], f"three dequeues returned {got}, and the list still holds {left}",
               "Taking a message removes it from the list, or the next worker gets it again.", blame="dequeue")
        expect(got == ["first", "second", "third"],
               f"dequeue returned {got} after enqueueing 'first', 'second', 'third'",
               "Take from the end opposite to the one enqueue adds to: first in, first out.", blame="dequeue")
        empty = call(dequeue, r, key)
        expect(empty is None, f"dequeue on an empty queue returned {empty!r}, expected None",
               "An empty queue has no message: say so with None, not with a made-up value.", blame="dequeue")
    finally:
        r.delete(key)
        r.close()
    passed("Redis: first in, first out, and None when empty")


# --- RabbitMQ ------------------------------------------------------------------------------------------

QUEUE_KINDS = ("durable", "exclusive")


def _queue_info(name: str) -> dict | None:
    import urllib.error

    try:
        return rabbit_api(f"queues/%2F/{quote(name, safe='')}")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


@lab.check("rabbitmq",
           idea="RabbitMQ 4 keeps queues that outlive their connection only if they are durable; a queue that "
                "should vanish with its connection is exclusive. And a publisher confirm means the broker took "
                "the message, not that any queue got it.",
           code="channel.queue_declare(queue=name, durable=...) or (..., exclusive=True). "
                "channel.basic_publish(exchange='', routing_key=queue, body=body, mandatory=..., "
                "properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)): on a channel with "
                "confirms, pika raises pika.exceptions.UnroutableError for a mandatory message no queue took.")
def check_rabbitmq(declare_queue, publish, queue_kind) -> None:
    import pika

    kind = decided(queue_kind, "QUEUE_KIND", QUEUE_KINDS,
                   "Durable: the queue (and its persistent messages) survive a broker restart, and it stays when "
                   "your program exits. Exclusive: it belongs to your connection and is deleted with it. RabbitMQ "
                   "4 deprecates the third kind, transient and shared.")
    connection = rabbit_connection()
    queue = lab.scratch("lab00-queue", kind="queue")
    nowhere = lab.scratch("lab00-nowhere", kind="queue")  # never declared: a message to it reaches no queue
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        call(declare_queue, channel, queue)
        info = _queue_info(queue)
        expect(info is not None, f"after declare_queue(channel, {queue!r}) RabbitMQ has no queue of that name",
               "Declare the queue named `name` on the channel you were given.", blame="declare_queue")
        durable, exclusive = bool(info.get("durable")), bool(info.get("exclusive"))
        expect(durable or exclusive, f"declare_queue made {queue!r} transient and not exclusive (durable=False, "
               "exclusive=False)", "RabbitMQ 4 deprecates transient non-exclusive queues (from 4.3 they are "
               "refused by default): a queue is durable, or exclusive to its connection.", blame="declare_queue")
        got_kind = "exclusive" if exclusive else "durable"
        expect(got_kind == kind, f"you chose QUEUE_KIND={kind!r}, but RabbitMQ says the queue is "
               f"durable={durable}, exclusive={exclusive}", "Declare the kind of queue you decided on.",
               blame="declare_queue")

        call(publish, channel, queue, b"ping")
        depth = channel.queue_declare(queue, passive=True).method.message_count
        expect(depth == 1, f"after one publish the queue {queue!r} holds {depth} messages, expected 1",
               "The default exchange ('') routes a message to the queue whose name is the routing key.",
               blame="publish")
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        expect(body == b"ping", f"the message in the queue is {body!r}, expected b'ping'",
               "Publish the body you were given, unchanged.", blame="publish")
        if kind == "durable":
            mode = getattr(properties, "delivery_mode", None)
            expect(mode == 2, f"the message in your durable queue has delivery_mode={mode!r}: RabbitMQ drops it "
                   "if it restarts", "A durable queue survives a restart; a message in it survives only if it "
                   "was published as persistent.", blame="publish")

        try:
            call(publish, channel, nowhere, b"lost", passthrough=(pika.exceptions.UnroutableError,))
        except pika.exceptions.UnroutableError:
            pass
        else:
            raise LabCheckFailed(
                f"publish to {nowhere!r}, a queue that does not exist, returned normally: the broker confirmed "
                "the message and dropped it, and your caller believes it was queued",
                "A confirm says the broker took responsibility for the message, not that a queue received it. "
                "Ask the broker to hand back messages it cannot route, and let that failure reach the caller.",
                function="publish")
    finally:
        try:
            if connection.is_open:
                fresh = connection.channel()
                fresh.queue_delete(queue)
        finally:
            connection.close()
    passed(f"RabbitMQ: a {kind} queue, one persistent message on it, and an unroutable message reported, "
           "not silently dropped" if kind == "durable" else
           f"RabbitMQ: an {kind} queue, one message on it, and an unroutable message reported, not silently dropped")


# --- Kafka ---------------------------------------------------------------------------------------------

EVENTS = [("account-1", "opened"), ("account-2", "opened"), ("account-1", "deposit 10")]


def _discard(producer) -> None:
    """Drop what the learner's code left queued in the producer: sent after the topic is deleted, it would
    create the topic again (auto.create.topics.enable)."""
    producer.purge()
    producer.flush(0)


def _produce_topic(admin, topic_name: str) -> str:
    return kt.create_topic(admin, lab.scratch(topic_name, kind="topic"), partitions=3)


def _judge_events(records, blame: str) -> None:
    by_key: dict = {}
    for rec in sorted(records, key=lambda rec: (rec.partition, rec.offset)):
        by_key.setdefault(rec.key, []).append(rec)
    seen = [(rec.key, rec.value) for rec in sorted(records, key=lambda rec: (rec.partition, rec.offset))]
    expect(sorted(seen, key=str) == sorted(EVENTS, key=str),
           f"the topic holds (key, value) events {seen}, expected {EVENTS}",
           "Each event is stored with its key and its value, each in its own place: the key says which "
           "entity (account) the event is about, the value what happened.", blame=blame)
    account = by_key["account-1"]
    expect(len({rec.partition for rec in account}) == 1 and [rec.value for rec in account] == ["opened", "deposit 10"],
           f"account-1's events are on partitions {[rec.partition for rec in account]} in the order "
           f"{[rec.value for rec in account]}", "Events with the same key go to the same partition, where they "
           "keep their order: let the key choose the partition.", blame=blame)


@lab.check("kafka",
           idea="produce() puts the event in a buffer inside your process and returns at once; the event reaches "
                "the broker later. Your function promises it is there when it returns.",
           code="producer.produce(topic, key=key, value=value), then producer.flush(timeout) and check what it "
                "returns (the number of events still waiting).")
def check_kafka_produce(produce_event) -> None:
    admin = kafka_admin()
    topic = _produce_topic(admin, "lab00-events")
    # a producer that batches for 10 s, as a busy one would: only a flush gets events out at once
    producer = kafka_producer(**{"linger.ms": 10000})
    try:
        for done, (key, value) in enumerate(EVENTS, start=1):
            call(produce_event, producer, topic, key, value)
            held = sum(high for _, high in kt.watermarks(admin, topic).values())
            expect(held == done, f"when produce_event({key!r}, {value!r}) returned, the broker held {held} "
                   f"event(s), expected {done}", "Make sure the event has left your process and been "
                   "acknowledged before returning.", blame="produce_event")
        _judge_events(kt.read_all(topic, seconds=10), "produce_event")
    finally:
        _discard(producer)
        kt.delete_topics(admin, [topic])
    passed("Kafka: each event is on the broker when produce_event returns, with its key and value; "
           "one account's events share a partition, in order")


# --- stretch -------------------------------------------------------------------------------------------

class _CountingProducer:
    """The producer, passed through unchanged, counting flush() calls."""

    def __init__(self, producer):
        self._producer = producer
        self.flushes = 0

    def flush(self, *args, **kwargs):
        self.flushes += 1
        return self._producer.flush(*args, **kwargs)

    def __len__(self):
        return len(self._producer)

    def __getattr__(self, name):
        return getattr(self._producer, name)


@lab.check("stretch: delivery reports",
           idea="Waiting for each event before sending the next costs a round trip per event. Send them all, wait "
                "once, and learn where each one landed from the broker's own reports.",
           code="producer.produce(..., on_delivery=callback): librdkafka calls callback(err, msg) during "
                "poll()/flush(), with msg.partition() and msg.offset() as the broker stored them; err is not None "
                "if it failed. One flush() at the end.")
def check_produce_all(produce_all) -> None:
    admin = kafka_admin()
    topic = _produce_topic(admin, "lab00-reports")
    producer = _CountingProducer(kafka_producer(**{"linger.ms": 50}))
    try:
        positions = call(produce_all, producer, topic, list(EVENTS))
        expect(isinstance(positions, list) and len(positions) == len(EVENTS),
               f"produce_all returned {positions!r}, expected one (partition, offset) per event, in send order",
               "Return a list of (partition, offset) tuples, one per event, in the order of `events`.",
               blame="produce_all")
        expect(producer.flushes <= 1, f"produce_all called flush() {producer.flushes} times for {len(EVENTS)} "
               "events", "Send every event first, then wait once.", blame="produce_all")
        records = {(rec.partition, rec.offset): rec for rec in kt.read_all(topic, seconds=10)}
        _judge_events(list(records.values()), "produce_all")
        for (key, value), position in zip(EVENTS, positions):
            rec = records.get(tuple(position) if isinstance(position, (list, tuple)) else position)
            expect(rec is not None and (rec.key, rec.value) == (key, value),
                   f"produce_all said ({key!r}, {value!r}) is at (partition, offset) {position!r}; the broker has "
                   f"{(rec.key, rec.value) if rec else 'nothing'} there",
                   "Take the partition and offset from the delivery report of that very event.",
                   blame="produce_all")
    finally:
        _discard(producer)
        kt.delete_topics(admin, [topic])
    passed("Kafka: every event's partition and offset, from the broker's delivery reports, with one flush")


__all__ = ["LabCheckFailed", "check_kafka_produce", "check_produce_all", "check_rabbitmq", "check_redis_queue",
           "hint", "lab"]
