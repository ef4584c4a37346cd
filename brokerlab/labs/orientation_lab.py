"""Checks for lab 00 (first messages): each runs the learner's function against the real broker."""
from __future__ import annotations

from .. import kafka_tools
from ..clients import kafka_admin, kafka_producer, rabbit_connection, redis_client
from ..runs import run_name
from .checking import call_learner, check, passed


def check_redis_queue(enqueue, dequeue) -> None:
    """enqueue(r, key, text) and dequeue(r, key) must make a Redis list behave as a FIFO queue."""
    r = redis_client()
    key = run_name("lab00-queue")
    try:
        for text in ("first", "second", "third"):
            call_learner(enqueue, r, key, text, hint="push onto the list with r.lpush(key, text)")
        check(r.llen(key) == 3, f"after three enqueue calls the list {key!r} holds {r.llen(key)} items, not 3",
              "enqueue must add one item to the Redis list at `key` (LPUSH)")
        got = [call_learner(dequeue, r, key, hint="take from the other end: r.rpop(key)") for _ in range(3)]
        check(got == ["first", "second", "third"], f"dequeue returned {got}, expected ['first', 'second', 'third']",
              "a queue is first-in first-out: LPUSH on one end, RPOP on the other")
        empty = call_learner(dequeue, r, key, hint="return what r.rpop returns; it is None on an empty list")
        check(empty is None, f"dequeue on an empty queue returned {empty!r}, expected None",
              "RPOP returns None when the list is empty; return that as it is")
    finally:
        r.delete(key)
        r.close()
    passed("Redis: first in, first out, and None when empty")


def check_rabbit_publish(publish) -> None:
    """publish(channel, queue, body) must put exactly one message with that body on the queue."""
    connection = rabbit_connection()
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = run_name("lab00-queue")
        channel.queue_declare(queue, auto_delete=False)
        try:
            call_learner(publish, channel, queue, b"ping",
                         hint="channel.basic_publish(exchange='', routing_key=queue, body=body)")
            depth = channel.queue_declare(queue, passive=True).method.message_count
            check(depth == 1, f"the queue holds {depth} messages after one publish, expected 1",
                  "the default exchange ('') routes a message to the queue named by routing_key")
            method, _, body = channel.basic_get(queue, auto_ack=True)
            check(body == b"ping", f"the message body is {body!r}, expected b'ping'", "publish `body` as it is")
        finally:
            channel.queue_delete(queue)
    finally:
        connection.close()
    passed("RabbitMQ: one message, on the right queue, with the right body")


def check_kafka_produce(produce_event) -> None:
    """produce_event(producer, topic, key, value) must have the event on the broker when it returns."""
    admin = kafka_admin()
    topic = run_name("lab00-events")
    kafka_tools.create_topic(admin, topic, partitions=1)
    try:
        # a producer that batches for 10 s: only a flush gets the event out before produce_event returns
        producer = kafka_producer(**{"linger.ms": 10000})
        call_learner(produce_event, producer, topic, "account-1", "opened",
                     hint="producer.produce(topic, key=key, value=value), then producer.flush(timeout)")
        end = kafka_tools.watermarks(admin, topic, [0])[0][1]
        check(end == 1, f"when produce_event returned, the broker held {end} events, expected 1",
              "produce() only queues the event inside your process: call producer.flush(10) before returning")
    finally:
        kafka_tools.delete_topics(admin, [topic])
    passed("Kafka: the event is on the broker when produce_event returns")
