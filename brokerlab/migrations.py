"""Moving traffic from RabbitMQ to Kafka, as notebook 08b runs it: the seeds' dual write, and a bridge.

- `dual_write` is the seeds' recipe: the publisher sends each event to RabbitMQ, then to Kafka.  `crash_at`
  makes it die between the two writes for chosen events: the two systems then disagree, and nothing notices.
- `bridge_once` / `bridge_process` is the recipe without dual writes: publishers keep publishing to RabbitMQ
  only; the bridge consumes a queue bound to their exchange (manual acknowledgements), produces each batch to
  Kafka with an idempotent producer, waits until Kafka acknowledged every record, and only then acknowledges
  the batch to RabbitMQ (basic_ack multiple=True).  A bridge killed between the two leaves the batch
  unacknowledged; RabbitMQ re-delivers it (marked redelivered) and Kafka gets those records twice, never zero
  times.  Every record carries the message id, so consumers deduplicate (brokerlab.hybrid.apply_once).
- `consume_queue` is the legacy consumer on RabbitMQ, applying each event once through the same
  deduplication as the moved consumer on Kafka (brokerlab.hybrid.consume_events), so an event applied before
  the cut-over is absorbed after it.
"""
from __future__ import annotations

import json
import os
import signal
import time
from typing import Callable

from .kafka_tools import produce


class PublisherCrash(RuntimeError):
    """Raised on purpose between the dual write's two writes."""


def dual_write(channel, exchange: str, producer, topic: str, events: list[dict], crash_at=()) -> list[str]:
    """For each event: publish to the RabbitMQ exchange (channel in confirm mode: returns once RabbitMQ has it),
    then produce to Kafka (flushed). For the event ids in `crash_at` the publisher dies in between.
    Returns the ids of the events whose second write never happened."""
    import pika

    lost = []
    for event in events:
        body = json.dumps(event)
        channel.basic_publish(exchange, "order.created", body.encode(),
                              pika.BasicProperties(message_id=event["event_id"], delivery_mode=2))
        try:
            if event["event_id"] in crash_at:
                raise PublisherCrash(f"died between the two writes of {event['event_id']}")
            produce(producer, topic, [(event["customer"], body)])
        except PublisherCrash:
            lost.append(event["event_id"])
    return lost


def publish(channel, exchange: str, events: list[dict]) -> None:
    """What publishers do during the migration: RabbitMQ only, as before (confirm mode: returns once it has them)."""
    import pika

    for event in events:
        channel.basic_publish(exchange, "order.created", json.dumps(event).encode(),
                              pika.BasicProperties(message_id=event["event_id"], delivery_mode=2))


def bridge_once(channel, queue: str, producer, topic: str, batch: int = 10, die_after_produce: bool = False) -> int:
    """Move up to `batch` ready messages from `queue` to `topic`; returns how many. RabbitMQ gets its ack only after
    Kafka acknowledged every record of the batch. die_after_produce=True SIGKILLs this process in between."""
    taken = []
    for _ in range(batch):
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            break
        taken.append((method, properties, body))
    if not taken:
        return 0
    # the record key is the customer (the seed's choice): one customer's events stay in one partition, in order
    produce(producer, topic, [(json.loads(body)["customer"], body,
                               {"headers": {"message_id": props.message_id or "",
                                            "redelivered": str(method.redelivered)}})
                              for method, props, body in taken], timeout=10.0)
    if die_after_produce:
        os.kill(os.getpid(), signal.SIGKILL)
    channel.basic_ack(taken[-1][0].delivery_tag, multiple=True)
    return len(taken)


def bridge_process(queue: str, topic: str, batch: int = 10, die_in_batch: int | None = None,
                   seconds: float = 20.0) -> None:
    """The bridge as its own process (a target for BoundedWorkers.process): moves what `queue` holds, then stops;
    with die_in_batch=k it is killed (SIGKILL, by itself) after Kafka acknowledged its k-th batch."""
    from .clients import rabbit_connection
    from .outbox import idempotent_producer

    connection = rabbit_connection()
    channel = connection.channel()
    producer = idempotent_producer()
    deadline, batches = time.monotonic() + seconds, 0
    try:
        while time.monotonic() < deadline:
            batches += 1
            if not bridge_once(channel, queue, producer, topic, batch, die_after_produce=(batches == die_in_batch)):
                break
    finally:
        producer.flush(5)
        connection.close()


def consume_queue(channel, queue: str, handle: Callable[[dict], object], limit: int = 10_000) -> int:
    """The legacy consumer: take what `queue` holds now (basic_get), handle each event, ack it after. Returns how
    many it handled."""
    handled = 0
    for _ in range(limit):
        method, _properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            break
        handle(json.loads(body))
        channel.basic_ack(method.delivery_tag)
        handled += 1
    return handled


def events(prefix: str, n: int, start: int = 0, customers: int = 4) -> list[dict]:
    """n order events with ids prefix-<i>, spread over a few customers."""
    return [{"event_id": f"{prefix}-{i}", "order_id": f"{prefix}-{i}", "customer": f"customer-{i % customers}",
             "total_cents": 100 + i} for i in range(start, start + n)]
