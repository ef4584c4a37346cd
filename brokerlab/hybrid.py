"""The "order placed" system of notebook 08b, two ways: the seeds' MessagingFacade, and the consumers
downstream of an outbox.

`NaiveFacade` is the seed's facade: per order, four writes to three systems, one after another, with
nothing tying them together (an audit event to Kafka, an email task to RabbitMQ through Celery, a live
notification and a cache invalidation through Redis Pub/Sub).  `order_placed(..., crash_after=k)` raises
`FacadeCrash` after its k-th write: what a killed process or a failed call between two writes leaves.

Downstream of the outbox (brokerlab.outbox), the systems are fed from one Kafka topic by consumers that apply
each event's effect once, however many times the event arrives (the outbox and Kafka deliver at least once):
- `consume_events` is a bounded Kafka group consumer that hands each event to a function and commits after it;
- `apply_once` is the idempotence: one Redis Lua script sets a per-event marker with SET NX and, only if the
  marker is new, performs the effect (and records it in a journal list); a repeat is recorded as absorbed;
- `notify_once` is the Redis effect: invalidate the cached order list (DEL), publish the live notification,
  record it, all in the same script, so the marker and the effect cannot part;
- `queue_email` sends the Celery email task for an event (each time it arrives) and records that it did.

Journal entries are JSON objects on a Redis list (the format of brokerlab.celery_journal), so the notebook and
the trace view read what happened, where and when, from the broker.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Callable

from .kafka_tools import produce

STEPS = ("audit event → Kafka", "email task → RabbitMQ (Celery)", "live notification → Redis",
         "cache invalidation → Redis")


class FacadeCrash(RuntimeError):
    """Raised on purpose between two of the facade's writes."""


class NaiveFacade:
    """The seeds' MessagingFacade: log_event, enqueue_task, notify_realtime, invalidate_cache, called in a row."""

    def __init__(self, producer, audit_topic: str, email_task, email_queue: str, redis, live_channel: str,
                 cache_channel: str, cache_prefix: str):
        self.producer, self.audit_topic = producer, audit_topic
        self.email_task, self.email_queue = email_task, email_queue
        self.r, self.live_channel, self.cache_channel, self.cache_prefix = (redis, live_channel, cache_channel,
                                                                             cache_prefix)

    def log_event(self, event: dict) -> None:
        produce(self.producer, self.audit_topic, [(event["order_id"], json.dumps(event))])  # flushed: acked

    def enqueue_task(self, event: dict, journal: str) -> None:
        self.email_task.apply_async((event, journal), queue=self.email_queue)

    def notify_realtime(self, event: dict) -> None:
        self.r.publish(self.live_channel, json.dumps({"order_id": event["order_id"], "status": "placed"}))

    def invalidate_cache(self, event: dict) -> None:
        self.r.delete(f"{self.cache_prefix}{event['customer']}")
        self.r.publish(self.cache_channel, event["customer"])

    def order_placed(self, event: dict, journal: str, crash_after: int | None = None,
                     order: tuple[int, ...] = (1, 2, 3, 4)) -> None:
        """The four writes (numbered as in STEPS), in the seed's order unless `order` says otherwise;
        crash_after=k raises FacadeCrash right after the k-th write made."""
        writes = {1: lambda: self.log_event(event), 2: lambda: self.enqueue_task(event, journal),
                  3: lambda: self.notify_realtime(event), 4: lambda: self.invalidate_cache(event)}
        for made, step in enumerate(order, start=1):
            writes[step]()
            if made == crash_after:
                raise FacadeCrash(f"the service died after write {made} ({STEPS[step - 1]}) of "
                                  f"{event['order_id']}")


def subscribed(r, *channels: str, seconds: float = 5.0):
    """A Pub/Sub subscriber of `channels`, returned once Redis confirmed every subscription (a message published
    before that would not reach it)."""
    from .waiting import wait_for

    pubsub = r.pubsub()
    pubsub.subscribe(*channels)
    confirmed: set = set()

    def all_confirmed() -> bool:
        message = pubsub.get_message(timeout=0.1)
        if message and message["type"] == "subscribe":
            confirmed.add(message["channel"])
        return confirmed == set(channels)

    wait_for(all_confirmed, seconds, f"Redis to confirm the subscriptions {channels}")
    return pubsub


def drain_pubsub(pubsub, seconds: float = 5.0) -> dict[str, int]:
    """Count, per channel, the messages a Pub/Sub subscriber has received: every message whose PUBLISH completed
    before this call. It subscribes the same connection to a fresh channel of its own and reads up to Redis's
    confirmation of that: Redis answers a connection in order, so whatever it pushed to this subscriber before
    arrives before the confirmation (an exact end, not a guess from a quiet interval, which a busy machine can
    stretch). Then it unsubscribes that channel again. Raises WaitTimeout if the confirmation does not arrive
    within `seconds`. Only messages sent while it was subscribed are there: Pub/Sub keeps nothing."""
    from .waiting import WaitTimeout

    marker = f"brokerlab-drain-{uuid.uuid4().hex}"
    pubsub.subscribe(marker)
    got: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if not message:
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            if message["type"] == "subscribe" and channel == marker:
                return got
            if message["type"] in ("message", "pmessage"):
                got[channel] = got.get(channel, 0) + 1
        raise WaitTimeout(f"Redis did not confirm the subscriber's marker subscription within {seconds:g} s "
                          f"(counted so far: {got})")
    finally:
        pubsub.unsubscribe(marker)


# --- downstream of the outbox: idempotent consumers ------------------------------------------------------

# KEYS: marker, journal, [cache key]; ARGV: the applied entry, the absorbed entry, [channel, notification].
# Markers expire after an hour (a lesson's lifetime); a real system keeps them as long as repeats can arrive.
_APPLY_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', 3600) then
  if KEYS[3] then redis.call('DEL', KEYS[3]) end
  if ARGV[3] then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 0
"""


def _entry(what: str, event: dict, **fields) -> str:
    return json.dumps({"what": what, "at": time.time(), "order": event["order_id"], "event": event["event_id"],
                       **fields})


def apply_once(r, effect: str, event: dict, journal: str, cache_key: str | None = None,
               channel: str | None = None, notification: str | None = None, **fields) -> bool:
    """Apply `effect` for this event once: True the first time (journal entry `effect`), False for a repeat
    (journal entry `<effect>-absorbed`). The marker, the optional DEL/PUBLISH and the entry are one script."""
    keys = [f"{journal}:done:{effect}:{event['event_id']}", journal, *([cache_key] if cache_key else [])]
    args = [_entry(effect, event, **fields), _entry(f"{effect}-absorbed", event, **fields),
            *([channel, notification] if channel else [])]
    return bool(r.eval(_APPLY_ONCE, len(keys), *keys, *args))


def queue_email(r, task, event: dict, journal: str) -> str:
    """Send the email task for this event, every time the event arrives (the task itself absorbs repeats), and
    journal it ('email-queued', with the task id and queue). Returns the task id."""
    task_id = str(uuid.uuid4())
    entry = _entry("email-queued", event, task_id=task_id, queue=task.app.conf.task_default_queue)  # the send time
    task.apply_async((event, journal), task_id=task_id)
    r.rpush(journal, entry)
    return task_id


def notify_once(r, event: dict, journal: str, live_channel: str, cache_prefix: str) -> bool:
    """The Redis effects of one order: drop the customer's cached order list and publish the live notification,
    once per event."""
    notification = json.dumps({"order_id": event["order_id"], "status": "placed"})
    return apply_once(r, "notified", event, journal, cache_key=f"{cache_prefix}{event['customer']}",
                      channel=live_channel, notification=notification)


def consume_events(topic: str, group: str, handle: Callable[[dict], object], seconds: float = 15.0,
                   start: str = "earliest") -> int:
    """A Kafka group consumer: hand each event (the record's JSON) to `handle`, commit its offset after, and stop
    once it has reached the end of every partition assigned to it. Returns how many records it handled, repeats
    included; raises WaitTimeout if it did not reach every end within `seconds` (so 0 means "read to the end,
    found nothing", never "gave up"). `start`: where a new group begins (auto.offset.reset): "earliest" (the
    whole topic) or "latest" (only what is produced after it joined)."""
    from confluent_kafka import KafkaError, KafkaException

    from .clients import kafka_consumer
    from .kafka_tools import enable_partition_eof
    from .waiting import WaitTimeout

    consumer = kafka_consumer(group, **enable_partition_eof({"auto.offset.reset": start}))
    handled, at_end = 0, set()
    deadline = time.monotonic() + seconds
    try:
        consumer.subscribe([topic])
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(msg.error())
                at_end.add(msg.partition())
                assigned = {tp.partition for tp in consumer.assignment()}
                if assigned and assigned <= at_end:
                    return handled
                continue
            at_end.discard(msg.partition())
            handle(json.loads(msg.value()))
            consumer.commit(msg, asynchronous=False)   # after the effect: at least once, never at most once
            handled += 1
        raise WaitTimeout(f"group {group} did not reach the end of {topic} within {seconds:g} s "
                          f"(handled {handled}, at the end of partitions {sorted(at_end)})")
    finally:
        consumer.close()


def journal_entries(r, journal: str, what: str | None = None) -> list[dict]:
    return [e for e in (json.loads(x) for x in r.lrange(journal, 0, -1)) if what is None or e["what"] == what]


def effect_counts(r, journal: str) -> dict[str, int]:
    """{what: how many entries} in the journal, e.g. {'emailed': 20, 'emailed-absorbed': 5, ...}."""
    found: dict[str, int] = {}
    for entry in journal_entries(r, journal):
        found[entry["what"]] = found.get(entry["what"], 0) + 1
    return found
