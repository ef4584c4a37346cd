"""Delivery semantics produced and broken on purpose (notebook 07a): one consumer, three systems, three policies.

A delivery guarantee is a pair: what the *producer* can know (a reply, a publisher confirm, `acks`) and when the
*consumer* tells the broker "done" (before or after the work).  This module runs the consumer side the same way on
each system and counts the outcome:

    policy             acknowledges / commits            the effect                  a SIGKILL mid-batch gives
    at-most-once       the whole batch, before working   applied                     lost messages
    at-least-once      the whole batch, after working    applied                     redelivered, effect applied twice
    effectively-once   the whole batch, after working    applied only if the id is   redelivered, effect applied once
                                                          new (Lua: SADD + RPUSH)

    outcome = crash_consumers("redis")["at-least-once"]   # publish, crash a consumer process, restart, count
    outcome.lost, outcome.redelivered, outcome.applied_twice

(`ConsumerCrash` is the same experiment as an object, so a live view can watch it while it runs in a thread.)
The pitfall policy "dedupe marked first" records the id, then applies the effect, in two commands: killed between
them, the redelivered message is skipped and its effect is lost.

The "effect" is what a real consumer does with a message (charge a card, send a mail): here an RPUSH of the id on a
per-run Redis list, so "applied twice" is counted, not assumed.  The crash is a real child process, SIGKILLed once the
broker shows the state of interest (the batch acknowledged, or not) and the effect store shows `crash_after` effects:
a state-observed moment, never a timed one.  The restarted consumer reads exactly what the broker says is left
(Redis: pending + lag; RabbitMQ: ready; Kafka: log end - committed), so no idle timeout decides the count.

`transactional_crash()` does the same for a Kafka consume-transform-produce loop with a transactional producer
(`send_offsets_to_transaction`), killed with its transaction open.  `unroutable_publishes()` and `kafka_acks()` are
the producer side.  Counting uses brokerlab.checker (History / Report).
"""
from __future__ import annotations

import signal
import time
from collections import Counter
from dataclasses import dataclass, field

from . import timeouts
from .checker import History, Report
from .clients import kafka_admin, kafka_consumer, kafka_producer, rabbit_connection, redis_client
from .rabbitmq_tools import _close
from .runs import run_name
from .waiting import wait_for
from .workers import BoundedWorkers

SYSTEMS = ("redis", "rabbitmq", "kafka")
ACK_BEFORE, ACK_AFTER = "before", "after"


@dataclass(frozen=True)
class Policy:
    ack: str                   # ACK_BEFORE or ACK_AFTER the work
    dedupe: str | None = None  # None; "atomic": the processed-ids record and the effect in one Lua script;
                               # "mark-first": SADD the id, then apply the effect (two commands: the pitfall)


POLICIES = {
    "at-most-once": Policy(ACK_BEFORE),
    "at-least-once": Policy(ACK_AFTER),
    "effectively-once": Policy(ACK_AFTER, dedupe="atomic"),
    "dedupe marked first": Policy(ACK_AFTER, dedupe="mark-first"),  # a pitfall: not one of the three semantics
}
SEMANTICS = ("at-most-once", "at-least-once", "effectively-once")


# --- names and the effect store (per-run keys on the course Redis) -----------------------------------------

@dataclass(frozen=True)
class Names:
    base: str  # per run: bl-delivery-redis-at-most-once-<time>-<hex>

    @classmethod
    def new(cls, label: str) -> "Names":
        return cls(run_name(f"delivery-{label}"))

    @property
    def source(self) -> str:      # the stream, queue or topic
        return self.base

    @property
    def output(self) -> str:      # the output topic of a consume-transform-produce loop
        return f"{self.base}-out"

    @property
    def group(self) -> str:       # consumer group
        return f"{self.base}-group"

    @property
    def deliveries(self) -> str:  # Redis list: every id the consumer received, once per delivery
        return f"{self.base}:deliveries"

    @property
    def effects(self) -> str:     # Redis list: every time the effect was applied
        return f"{self.base}:effects"

    @property
    def processed(self) -> str:   # Redis set: ids whose effect was applied (the idempotent consumer's memory)
        return f"{self.base}:processed"


# The idempotent effect: the dedupe record and the effect in ONE atomic step.  Marking "processed" first and
# applying the effect after (two commands) loses the effect to a crash in between: at-most-once again.
APPLY_ONCE = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[1])
    return 1
end
return 0
"""


def apply_effect(r, names: Names, msg_id: str, idempotent: bool) -> bool:
    """Do the work for `msg_id`; returns whether the effect was applied (False: a duplicate, skipped)."""
    if idempotent:
        return bool(r.eval(APPLY_ONCE, 2, names.processed, names.effects, msg_id))
    r.rpush(names.effects, msg_id)
    return True


def effects(r, names: Names) -> list[str]:
    return r.lrange(names.effects, 0, -1)


def deliveries(r, names: Names) -> list[str]:
    return r.lrange(names.deliveries, 0, -1)


def message_ids(n: int) -> list[str]:
    return [f"m{i:04d}" for i in range(n)]


# --- one source per system: publish with confirmation, fetch a batch, acknowledge it, the broker's view ------

class RedisStreamSource:
    """A stream and a consumer group. Fetch: XREADGROUP; acknowledge: XACK (the pending entries list forgets)."""

    system = "redis"

    def __init__(self, names: Names, consumer: str):
        self.names, self.consumer = names, consumer
        self.r = redis_client()

    @staticmethod
    def publish(names: Names, ids: list[str], history: History) -> None:
        r = redis_client()
        try:
            r.xgroup_create(names.source, names.group, id="0", mkstream=True)
            for msg_id in ids:
                history.attempt(msg_id)
                r.xadd(names.source, {"id": msg_id})  # the reply (an entry id) is Redis's acknowledgement
                history.acked(msg_id)
        finally:
            r.close()

    def recover(self) -> list:
        """A restarted consumer first takes over what the dead one held (XAUTOCLAIM: we know it is dead)."""
        claimed = []
        cursor = "0-0"
        for _ in range(100):  # bounded: 100 pages of 100
            reply = self.r.xautoclaim(self.names.source, self.names.group, self.consumer, 0, start_id=cursor,
                                      count=100)
            cursor = reply[0]
            claimed += [(entry_id, fields["id"]) for entry_id, fields in reply[1] if fields]
            if cursor == "0-0":
                break
        return claimed

    def fetch(self, n: int, seconds: float) -> list:
        reply = self.r.xreadgroup(self.names.group, self.consumer, {self.names.source: ">"}, count=n,
                                  block=max(1, int(min(seconds, 1.0) * 1000)))  # BLOCK 0 would wait forever
        return [(entry_id, fields["id"]) for entry_id, fields in (reply[0][1] if reply else [])]

    def ack(self, batch: list) -> None:
        self.r.xack(self.names.source, self.names.group, *[token for token, _ in batch])

    @staticmethod
    def _group(names: Names) -> dict:
        """XINFO GROUPS' entry for the run's group."""
        r = redis_client()
        try:
            return next(g for g in r.xinfo_groups(names.source) if g["name"] == names.group)
        finally:
            r.close()

    @staticmethod
    def acknowledged(names: Names) -> int:
        """The broker's view: entries delivered to the group and acknowledged."""
        group = RedisStreamSource._group(names)
        return int(group["entries-read"] or 0) - int(group["pending"])

    @staticmethod
    def remaining(names: Names) -> int:
        """What a restarted consumer must still handle: pending (unacknowledged) + never delivered (lag)."""
        group = RedisStreamSource._group(names)
        return int(group["pending"]) + int(group["lag"] or 0)

    @staticmethod
    def delete(names: Names) -> None:
        r = redis_client()
        try:
            r.delete(names.source)
        finally:
            r.close()

    def close(self) -> None:
        self.r.close()


class RabbitQueueSource:
    """A durable queue, persistent messages published with confirms; basic.qos(prefetch=batch), manual acks."""

    system = "rabbitmq"

    def __init__(self, names: Names, consumer: str, prefetch: int = 10):
        self.names = names
        self.connection = rabbit_connection()
        self.channel = self.connection.channel()
        self.channel.basic_qos(prefetch_count=prefetch)
        self._messages = self.channel.consume(names.source, inactivity_timeout=0.1)

    @staticmethod
    def publish(names: Names, ids: list[str], history: History) -> None:
        import pika

        connection = rabbit_connection()
        try:
            channel = connection.channel()
            channel.queue_declare(names.source, durable=True)
            channel.confirm_delivery()  # basic_publish now returns once the broker confirmed, raises if it refused
            persistent = pika.BasicProperties(delivery_mode=2)
            for msg_id in ids:
                history.attempt(msg_id)
                channel.basic_publish("", names.source, msg_id.encode(), persistent, mandatory=True)
                history.acked(msg_id)
        finally:
            _close(connection)

    def recover(self) -> list:
        return []  # the broker requeued what the dead consumer held when its connection closed

    def fetch(self, n: int, seconds: float) -> list:
        """Exactly n deliveries (or what came by the deadline).  No "quiet for 0.1 s, so the batch is done": on a
        loaded machine a gap in the broker's pushes would cut the batch short and move the crash out of it.
        Callers ask only for messages the queue holds (all published first; a restart asks for what is left)."""
        batch: list = []
        deadline = time.monotonic() + seconds
        while len(batch) < n and time.monotonic() < deadline:
            method, _properties, body = next(self._messages)
            if method is not None:  # None: nothing for 0.1 s, look at the deadline and wait again
                batch.append((method.delivery_tag, body.decode()))
        return batch

    def ack(self, batch: list) -> None:
        self.channel.basic_ack(batch[-1][0], multiple=True)  # every delivery up to the last one of the batch
        # basic.ack has no reply; a synchronous call on the same channel returns once the broker processed it
        self.channel.queue_declare(self.names.source, passive=True)

    @staticmethod
    def acknowledged(names: Names, published: int) -> int:
        from .rabbitmq_tools import counts

        c = counts(names.source)  # management API, refreshed every second
        return published - c["ready"] - c["unacked"]

    @staticmethod
    def remaining(names: Names) -> int:
        """Ready messages once no consumer is attached (the dead one's unacked messages are back by then)."""
        connection = rabbit_connection()
        try:
            channel = connection.channel()

            def declare():
                return channel.queue_declare(names.source, passive=True).method

            wait_for(lambda: declare().consumer_count == 0, 15, f"{names.source}: the dead consumer to be gone")
            return declare().message_count
        finally:
            _close(connection)

    @staticmethod
    def delete(names: Names) -> None:
        connection = rabbit_connection()
        try:
            connection.channel().queue_delete(names.source)
        finally:
            _close(connection)

    def close(self) -> None:
        try:
            self.channel.cancel()
        finally:
            _close(self.connection)


class KafkaTopicSource:
    """A one-partition topic; a consumer of the group that assign()s the partition (no rebalance to wait for),
    enable.auto.commit=false; acknowledge = commit the offset after the batch, synchronously."""

    system = "kafka"

    def __init__(self, names: Names, consumer: str, **config):
        from confluent_kafka import TopicPartition

        self.names = names
        self.consumer = kafka_consumer(names.group, **{"enable.auto.commit": False, **config})
        self.consumer.assign([TopicPartition(names.source, 0)])  # no offset: the committed one, else earliest

    @staticmethod
    def publish(names: Names, ids: list[str], history: History) -> None:
        from .kafka_tools import create_topic

        admin = _admin()
        create_topic(admin, names.source, partitions=1)
        producer = kafka_producer(acks="all")

        def delivered(err, msg):
            msg_id = msg.value().decode()
            if err is None:
                history.acked(msg_id)
            else:
                history.failed(msg_id, err)

        for msg_id in ids:
            history.attempt(msg_id)
            producer.produce(names.source, msg_id.encode(), on_delivery=delivered)
        if producer.flush(15):
            raise TimeoutError(f"{names.source}: Kafka did not acknowledge every record within 15 s")

    def recover(self) -> list:
        return []  # the partition resumes at the committed offset

    def fetch(self, n: int, seconds: float) -> list:
        from confluent_kafka import KafkaException

        batch: list = []
        deadline = time.monotonic() + seconds
        while len(batch) < n and time.monotonic() < deadline:
            for msg in self.consumer.consume(n - len(batch), timeout=min(0.5, max(0.0, deadline - time.monotonic()))):
                if msg.error():
                    if msg.error().retriable() or msg.error().code() in _COORDINATOR_MOVING + _CLIENT_WAITING:
                        continue  # librdkafka retries (a coordinator still loading or moving)
                    raise KafkaException(msg.error())
                batch.append((msg, msg.value().decode()))
        return batch

    def ack(self, batch: list) -> None:
        from confluent_kafka import TopicPartition

        from confluent_kafka import KafkaException

        last = batch[-1][0]
        offsets = [TopicPartition(last.topic(), last.partition(), last.offset() + 1)]
        deadline = time.monotonic() + 10
        while True:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
                return
            except KafkaException as exc:  # a coordinator still loading (a fresh broker): retry, bounded
                if not _transient(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    @staticmethod
    def acknowledged(names: Names) -> int:
        from .kafka_tools import committed_offsets

        return committed_offsets(_admin(), names.group, names.source, [0])[0] or 0

    @staticmethod
    def remaining(names: Names) -> int:
        from .kafka_tools import watermarks

        def committed():  # a read that timed out on a loaded broker is repeated, bounded (a 1-tuple: 0 is falsy)
            offset = _acknowledged("kafka", names, 0)
            return None if offset is None else (offset,)

        (offset,) = wait_for(committed, timeouts.REPLY * 3, f"{names.group}: its committed offset")
        return watermarks(_admin(), names.source)[0][1] - offset

    @staticmethod
    def delete(names: Names) -> None:
        from .kafka_tools import delete_groups, delete_topics

        admin = _admin()
        delete_topics(admin, [names.source, names.output])
        delete_groups(admin, [names.group])

    def close(self) -> None:
        self.consumer.close()


def _admin():
    """One AdminClient per Kafka address for the many polls of a wait (a new client per poll costs threads)."""
    from .endpoints import current

    bootstrap = current().kafka_bootstrap
    if bootstrap not in _ADMINS:
        _ADMINS[bootstrap] = kafka_admin()
    return _ADMINS[bootstrap]


_ADMINS: dict = {}
_COORDINATOR_MOVING = (14, 15, 16)  # COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
# librdkafka's own codes for the same moment on a just-started or loaded broker: still looking for the group
# coordinator (_WAIT_COORD), or a request that timed out (_TIMED_OUT).  Their retriable() is False, yet a commit of
# the same offsets or a read of the committed offsets is safe to repeat (kafka_tools retries _TIMED_OUT likewise).
_CLIENT_WAITING = (-180, -185)


def _transient(exc) -> bool:
    error = exc.args[0] if exc.args else None
    return hasattr(error, "code") and (error.retriable() or error.code() in _COORDINATOR_MOVING + _CLIENT_WAITING)

SOURCES = {"redis": RedisStreamSource, "rabbitmq": RabbitQueueSource, "kafka": KafkaTopicSource}


def _source(system: str, names: Names, consumer: str, batch: int):
    if system == "rabbitmq":
        return RabbitQueueSource(names, consumer, prefetch=batch)
    return SOURCES[system](names, consumer)


# --- the consumer (the target of the process the experiment kills) -----------------------------------------

def consume(system: str, names: Names, policy_name: str, batch: int, limit: int, crash_after: int | None = None,
            consumer: str = "c1", seconds: float = 30.0) -> int:
    """Handle up to `limit` messages of `names.source`, `batch` at a time, acknowledging as `policy_name` says.

    crash_after=k: after applying the k-th effect, stop still (as if stuck on the next message) until killed or
    `seconds` pass; the experiment SIGKILLs the process there.  Returns how many messages it handled."""
    policy = POLICIES[policy_name]
    r = redis_client()
    source = _source(system, names, consumer, batch)
    deadline = time.monotonic() + seconds
    handled = 0
    try:
        pending = source.recover()
        while handled < limit and time.monotonic() < deadline:
            if pending:
                messages, pending = pending[:batch], pending[batch:]
            else:
                messages = source.fetch(min(batch, limit - handled), max(0.0, deadline - time.monotonic()))
            if not messages:
                continue
            r.rpush(names.deliveries, *[msg_id for _, msg_id in messages])
            if policy.ack == ACK_BEFORE:
                source.ack(messages)  # "got it" before the work: a crash from here on loses the rest of the batch
            for _, msg_id in messages:
                if policy.dedupe == "mark-first":
                    new = r.sadd(names.processed, msg_id) == 1  # "seen" recorded, the effect not yet applied
                    if crash_after is not None and handled == crash_after:
                        return _stuck(deadline, handled)  # dies between the mark and the effect
                    if new:
                        r.rpush(names.effects, msg_id)
                else:
                    apply_effect(r, names, msg_id, idempotent=policy.dedupe == "atomic")
                handled += 1
                if crash_after is not None and handled == crash_after and policy.dedupe != "mark-first":
                    return _stuck(deadline, handled)
            if policy.ack == ACK_AFTER:
                source.ack(messages)  # after the work: a crash before here redoes the batch
    finally:
        source.close()
        r.close()
    return handled


def _stuck(deadline: float, handled: int) -> int:
    """Stand still, as if stuck on the next message, until killed (or the deadline: then the demo failed)."""
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return handled


# --- the experiment: publish, crash, restart, count -----------------------------------------------------------

@dataclass
class Outcome:
    """What a consumer crash did under one policy."""

    system: str
    policy: str
    report: Report        # checker report: acknowledged by the broker vs effects applied (lost / applied twice)
    redelivered: int      # ids the consumer received more than once
    batch: int
    crash_after: int
    deliveries: int = 0   # messages received, counting every redelivery
    applications: int = 0  # times the effect was applied, counting every repeat
    names: Names = field(repr=False, default=None)

    @property
    def lost(self) -> int:
        return self.report.lost

    @property
    def applied_twice(self) -> int:
        return self.report.duplicated

    def row(self, system: str | None = None) -> dict:
        """A summary row; `system` renames the system for display (e.g. "Redis Streams")."""
        return {"system": system or self.system, "policy": self.policy, "lost": self.lost,
                "redelivered": self.redelivered, "applied twice": self.applied_twice}

    def __str__(self) -> str:
        return (f"{self.system:<8} {self.policy:<16} published {self.report.acknowledged}, effects "
                f"{self.report.received} distinct, lost {self.lost}, redelivered {self.redelivered}, "
                f"applied twice {self.applied_twice}")


def _acknowledged(system: str, names: Names, published: int) -> int | None:
    """The broker's count of acknowledged messages, or None while Kafka's group coordinator is still loading."""
    from confluent_kafka import KafkaException

    if system == "rabbitmq":
        return RabbitQueueSource.acknowledged(names, published)
    try:
        return SOURCES[system].acknowledged(names)
    except KafkaException as exc:
        if _transient(exc):
            return None
        raise


class ConsumerCrash:
    """One crash experiment per policy on one system, run in parallel (one consumer process each):

    1. publish n messages with confirmation (the checker records each confirmed id);
    2. start a consumer process per policy; SIGKILL it once the effect store shows `crash_after` effects of its
       first batch and the broker shows that batch acknowledged (ack before) or not (ack after);
    3. a fresh consumer handles exactly what the broker says is left; count, then delete everything.

    `run()` returns {policy: Outcome} (also kept in `outcomes`); `phase` and `progress()` say how far each run got,
    for a live view (brokerlab.views.delivery.CrashView) watching from the notebook while `run()` works in a thread.
    """

    def __init__(self, system: str, policies=SEMANTICS, n: int = 30, batch: int = 10, crash_after: int = 4,
                 seconds: float = 30.0):
        if system not in SOURCES:
            raise ValueError(f"system must be one of {tuple(SOURCES)}")
        if not 0 < crash_after < batch <= n:
            raise ValueError("need 0 < crash_after < batch <= n: the crash must come in the middle of a batch")
        self.system, self.n, self.batch, self.crash_after, self.seconds = system, n, batch, crash_after, seconds
        self.runs = {p: (Names.new(f"{system}-{p}"), History(f"{system} {p}")) for p in policies}
        self.phase = {p: "not started" for p in policies}
        self.outcomes: dict[str, Outcome] = {}
        self.finished = False

    def progress(self, r) -> dict[str, dict]:
        """Per policy: phase, messages received (deliveries), effects applied, ids applied twice."""
        out = {}
        for policy, (names, _) in self.runs.items():
            outcome = self.outcomes.get(policy)
            if outcome is not None:  # counted: the keys may be gone already
                out[policy] = {"phase": self.phase[policy], "received": outcome.deliveries,
                               "applied": outcome.applications, "applied twice": outcome.applied_twice}
                continue
            received, applied = r.llen(names.deliveries), r.lrange(names.effects, 0, -1)
            out[policy] = {"phase": self.phase[policy], "received": received, "applied": len(applied),
                           "applied twice": sum(1 for c in Counter(applied).values() if c > 1)}
        return out

    def run(self) -> dict[str, Outcome]:
        system, n, batch, crash_after, seconds = self.system, self.n, self.batch, self.crash_after, self.seconds
        r = redis_client()
        try:
            for policy, (names, history) in self.runs.items():
                self.phase[policy] = "publishing"
                SOURCES[system].publish(names, message_ids(n), history)
                history.done_publishing()
            with BoundedWorkers(seconds=seconds + 10, name=f"{system}-consumers") as workers:
                processes = {}
                for policy, (names, _) in self.runs.items():
                    processes[policy] = workers.process(consume, system, names, policy, batch, n, crash_after,
                                                        "c1", seconds)
                    self.phase[policy] = "consuming"
                for policy, (names, history) in self.runs.items():
                    acked_by_then = batch if POLICIES[policy].ack == ACK_BEFORE else 0
                    marked = crash_after + 1 if POLICIES[policy].dedupe == "mark-first" else None
                    process = processes[policy]

                    def ready_to_kill(names=names, process=process, policy=policy, acked_by_then=acked_by_then,
                                      marked=marked):
                        if process.exitcode is not None:  # it died on its own: say so now, not at the deadline
                            raise RuntimeError(f"{system} {policy}: the consumer process exited (code "
                                               f"{process.exitcode}) before the kill; its error is above")
                        return (r.llen(names.effects) == crash_after
                                and (marked is None or r.scard(names.processed) == marked)
                                and _acknowledged(system, names, n) == acked_by_then)

                    def seen(names=names):  # the last state, for the timeout message
                        return (f"{system} {policy}: {crash_after} effects applied and {acked_by_then} "
                                f"acknowledged (last seen: {r.llen(names.effects)} effects, "
                                f"{_acknowledged(system, names, n)} acknowledged)")

                    wait_for(ready_to_kill, seconds, seen, poll=0.1)
                    history.inject(processes[policy].pid, signal.SIGKILL,
                                   f"{system} consumer ({policy}) after {crash_after} of a batch of {batch}")
                    self.phase[policy] = "killed"
                for process in processes.values():
                    process.join(timeouts.REPLY)
            for policy, (names, history) in self.runs.items():
                left = SOURCES[system].remaining(names)
                self.phase[policy] = f"restarted, {left} left"
                handled = consume(system, names, policy, batch, left, consumer="c2", seconds=seconds)
                if handled != left:
                    raise AssertionError(f"{system} {policy}: the restarted consumer handled {handled} of {left}")
                received, applied = deliveries(r, names), effects(r, names)
                self.outcomes[policy] = Outcome(system, policy, history.check(applied),
                                                sum(1 for c in Counter(received).values() if c > 1), batch,
                                                crash_after, len(received), len(applied), names)
                self.phase[policy] = "counted"
            return self.outcomes
        finally:
            for names, _ in self.runs.values():
                cleanup(system, names, r)
            r.close()
            self.finished = True


def crash_consumers(system: str, policies=SEMANTICS, n: int = 30, batch: int = 10, crash_after: int = 4,
                    seconds: float = 30.0) -> dict[str, Outcome]:
    """ConsumerCrash(...).run(): {policy: Outcome}."""
    return ConsumerCrash(system, policies, n, batch, crash_after, seconds).run()


def cleanup(system: str, names: Names, r=None) -> None:
    """Delete the source and the effect-store keys of one run."""
    own = r is None
    r = r or redis_client()
    try:
        r.delete(names.deliveries, names.effects, names.processed)
        SOURCES[system].delete(names)
    finally:
        if own:
            r.close()


# --- Kafka to Kafka: a transactional consume-transform-produce loop, killed mid-transaction ---------------------

def transform(names: Names, batch: int, limit: int, crash_after: int | None = None, seconds: float = 30.0) -> int:
    """Read names.source, write each id to names.output and apply an outside effect (Redis), committing the
    output and the consumer's offsets in ONE transaction per batch (send_offsets_to_transaction).

    crash_after=k: after producing (and flushing) k records of a batch, with the transaction still open, stop
    still until killed.  The transactional.id is fixed per run: a restarted instance fences the dead one and
    aborts its open transaction in init_transactions()."""
    r = redis_client()
    source = KafkaTopicSource(names, "transformer", **{"isolation.level": "read_committed"})
    producer = kafka_producer(**{"transactional.id": names.base})
    deadline = time.monotonic() + seconds
    handled = 0
    try:
        producer.init_transactions(15)
        while handled < limit and time.monotonic() < deadline:
            messages = source.fetch(min(batch, limit - handled), max(0.0, deadline - time.monotonic()))
            if not messages:
                continue
            producer.begin_transaction()
            for _, msg_id in messages:
                producer.produce(names.output, msg_id.encode())
                r.rpush(names.effects, msg_id)  # outside Kafka: no transaction covers it
                handled += 1
                if crash_after is not None and handled == crash_after:
                    producer.flush(10)  # the records are in the output log, their transaction open
                    return _stuck(deadline, handled)
            consumer = source.consumer
            producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                                 consumer.consumer_group_metadata(), 15)
            producer.commit_transaction(15)  # the output and the input offsets, atomically
    finally:
        source.close()
        r.close()
    return handled


@dataclass
class TransactionOutcome:
    committed: Report      # what a read_committed consumer of the output saw
    uncommitted: Report    # what a read_uncommitted consumer saw (aborted records included)
    outside: Report        # the Redis effect applied by the loop (no transaction covers it)
    aborted_before_restart: int  # records the killed instance had written into its open transaction
    names: Names = field(repr=False, default=None)

    def rows(self) -> list[dict]:
        """Summary rows: the output as each reader saw it, and the outside effect (no redelivery count)."""
        seen = (("Kafka → Kafka", "transaction, read_committed", self.committed),
                ("Kafka → Kafka", "transaction, read_uncommitted", self.uncommitted),
                ("Kafka → Redis", "transaction, outside effect", self.outside))
        return [{"system": system, "policy": policy, "lost": report.lost, "redelivered": None,
                 "applied twice": report.duplicated} for system, policy, report in seen]


def transactional_crash(n: int = 20, batch: int = 10, crash_after: int = 4,
                        seconds: float = 30.0) -> TransactionOutcome:
    """Publish n records, run transform() in a process and SIGKILL it once its open transaction holds
    `crash_after` records in the output log; restart it in this process; read the output both ways."""
    from .kafka_tools import create_topic, read_all, watermarks

    names = Names.new("kafka-transactions")
    history = History("kafka consume-transform-produce, transactional")
    r = redis_client()
    try:
        KafkaTopicSource.publish(names, message_ids(n), history)
        history.done_publishing()
        admin = _admin()
        create_topic(admin, names.output, partitions=1)
        with BoundedWorkers(seconds=seconds + 10, name="transformer") as workers:
            process = workers.process(transform, names, batch, n, crash_after, seconds)
            def open_transaction_holds_records():
                if process.exitcode is not None:  # it died on its own: say so now, not at the deadline
                    raise RuntimeError(f"the transformer process exited (code {process.exitcode}) before the kill")
                return (watermarks(admin, names.output)[0][1] == crash_after
                        and watermarks(admin, names.output, isolation="read_committed")[0][1] == 0)

            wait_for(open_transaction_holds_records, seconds,
                     f"{names.output}: {crash_after} records in an open transaction")
            history.inject(process.pid, signal.SIGKILL,
                           f"transformer with an open transaction of {crash_after} records")
            process.join(timeouts.REPLY)
        left = KafkaTopicSource.remaining(names)
        handled = transform(names, batch, left, seconds=seconds)
        if handled != left:
            raise AssertionError(f"the restarted transformer handled {handled} of {left}")
        committed = [rec.value for rec in read_all(names.output, **{"isolation.level": "read_committed"})]
        everything = [rec.value for rec in read_all(names.output, **{"isolation.level": "read_uncommitted"})]
        return TransactionOutcome(history.check(committed), history.check(everything),
                                  history.check(effects(r, names)), crash_after, names)
    finally:
        cleanup("kafka", names, r)
        r.close()


# --- the producer side --------------------------------------------------------------------------------------

PRODUCER_MODES = ("fire-and-forget", "confirms", "confirms + mandatory")


def unroutable_publishes(mode: str, n: int = 20) -> Report:
    """Publish n messages to a direct exchange; every second one carries a routing key no queue is bound to
    (a typo: 'ordres').  What the producer believes delivered is recorded as acknowledged:

    fire-and-forget        basic_publish returned                    -> half of them silently dropped
    confirms               the broker confirmed (it did: routed to    -> the same loss, now *confirmed*
                           no queue is a successful publish)
    confirms + mandatory   confirmed and not returned                 -> the unroutable ones raise UnroutableError
    """
    import pika
    import pika.exceptions

    from .rabbitmq_tools import get_all

    if mode not in PRODUCER_MODES:
        raise ValueError(f"mode must be one of {PRODUCER_MODES}")
    names = Names.new("unroutable")
    exchange = f"{names.base}.orders"
    history = History(f"RabbitMQ publish, {mode}")
    connection = rabbit_connection()
    channel = connection.channel()
    try:
        channel.exchange_declare(exchange, "direct", auto_delete=False)
        channel.queue_declare(names.source, durable=True)
        channel.queue_bind(names.source, exchange, routing_key="orders")
        publisher = connection.channel()
        if mode != "fire-and-forget":
            publisher.confirm_delivery()
        for i, msg_id in enumerate(message_ids(n)):
            key = "orders" if i % 2 == 0 else "ordres"
            history.attempt(msg_id)
            try:
                publisher.basic_publish(exchange, key, msg_id.encode(), pika.BasicProperties(delivery_mode=2),
                                        mandatory=(mode == "confirms + mandatory"))
                history.acked(msg_id)  # what the producer believes: the call returned without an error
            except pika.exceptions.UnroutableError as returned:
                history.failed(msg_id, returned.messages[0].method.reply_text)
        history.done_publishing()
        # a synchronous call on the publishing channel: the broker has routed every publish before it answers
        publisher.queue_declare(names.source, passive=True)
        return history.check([m.body for m in get_all(channel, names.source)])
    finally:
        if channel.is_open:
            channel.queue_delete(names.source)
            channel.exchange_delete(exchange)
        _close(connection)


def kafka_acks(acks: str, n: int = 20) -> dict:
    """Produce n records with the given acks and report what the delivery reports told the producer:
    {'reported': how many delivery reports said OK, 'with_offset': how many carried the offset the broker
    assigned, 'stored': records read back}.  With acks=0 the broker never answers: a report says "sent",
    the report carries no offset (None)."""
    from .kafka_tools import create_topic, delete_topics, read_all

    names = Names.new(f"acks{acks}")
    admin = _admin()
    create_topic(admin, names.source, partitions=1)
    config = {"acks": acks}
    if acks == "0":
        config["enable.idempotence"] = False  # idempotence needs acks=all
    producer = kafka_producer(**config)
    reports: list = []
    try:
        for msg_id in message_ids(n):
            producer.produce(names.source, msg_id.encode(),
                             on_delivery=lambda err, msg: reports.append((err, msg.offset())))
        if producer.flush(15):
            raise TimeoutError(f"{names.source}: delivery reports missing after 15 s")
        stored = len(read_all(names.source))
        known = [offset for err, offset in reports if err is None and offset is not None and offset >= 0]
        return {"reported": sum(1 for err, _ in reports if err is None),
                "with_offset": len(known),
                "stored": stored}
    finally:
        delete_topics(admin, [names.source])


# --- the summary -------------------------------------------------------------------------------------------

def format_table(rows: list[dict]) -> str:
    """Rows of {system, policy, lost, redelivered, applied twice} as aligned text ("-": not counted)."""
    lines = [f"{'system':<15} {'policy':<30} {'lost':>5} {'redelivered':>12} {'applied twice':>14}"]
    for row in rows:
        redelivered = "-" if row["redelivered"] is None else row["redelivered"]
        lines.append(f"{row['system']:<15} {row['policy']:<30} {row['lost']:>5} {redelivered:>12} "
                     f"{row['applied twice']:>14}")
    return "\n".join(lines)
