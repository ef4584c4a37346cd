"""One work-queue job, three brokers (notebook 08a, "queues converging in 2026").

The same job runs on a Redis Streams consumer group, a RabbitMQ quorum queue and a Kafka share group (KIP-932):
N tasks, a consumer that takes a few, acknowledges every other one and is SIGKILLed holding the rest, then a few
competing consumers that finish the job. `run_job()` measures, from what the consumers saw:

- every task done? done twice? (the crashed consumer's acknowledged tasks must not come back: per-message acks)
- what the crashed consumer held: redelivered? with which delivery count? how long after the kill?
- completion order against publish order (inversions), and whether a fresh reader can replay the job afterwards;
- `poison_deliveries()`: how often a task that always fails is delivered before the broker stops (a delivery limit).

Each backend is a small class with the same five verbs (publish, take, ack, release, replay); the notebook shows the
brokers' own calls in earlier lessons (02, 04b, 05b), this module only lines them up. Every loop is bounded by a
count and a deadline; every connection is closed; names are per run (`bl.run_name`).
"""
from __future__ import annotations

import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .runs import run_name
from .waiting import wait_for
from .workers import BoundedWorkers

CLAIM_IDLE_MS = 2000    # Redis: a pending entry idle this long is claimed by a live consumer (XAUTOCLAIM)
DELIVERY_LIMIT = 3      # the delivery limit set on RabbitMQ and Kafka for the poison test


@dataclass
class Delivery:
    task: str
    count: int              # which delivery of this task this is: 1 = first
    handle: object = None   # what the backend needs to ack or release it


# --- the three backends ---------------------------------------------------------------------------------------

class RedisStreamsGroup:
    """A stream + one consumer group. Entries a dead consumer held stay pending under its name until a live
    consumer claims them (XAUTOCLAIM, after CLAIM_IDLE_MS): the recovery policy is the consumers' code."""
    label = "Redis Streams group"

    def __init__(self, name: str | None = None):
        self.name = name or run_name("wq-redis")
        self.group = "workers"

    def setup(self) -> None:
        from .clients import redis_client
        with redis_client() as r:
            r.xgroup_create(self.name, self.group, id="0", mkstream=True)

    def publish(self, tasks: list[str]) -> None:
        from .clients import redis_client
        with redis_client() as r:
            pipe = r.pipeline(transaction=False)
            for task in tasks:
                pipe.xadd(self.name, {"task": task})
            pipe.execute()

    def consumer(self, name: str, batch: int = 5) -> "_RedisConsumer":
        return _RedisConsumer(self, name)

    def replay(self, expected: int, seconds: float = 10.0) -> int:
        """A new group created at id 0 reads the whole stream again: how many entries it gets."""
        from .clients import redis_client
        with redis_client() as r:
            r.xgroup_create(self.name, "replay", id="0")
            got = r.xreadgroup("replay", "reader", {self.name: ">"}, count=expected + 10)
            return len(got[0][1]) if got else 0

    def set_delivery_limit(self, limit: int) -> None:
        pass  # Redis has no delivery limit: times_delivered is counted, the policy is application code

    def cleanup(self) -> None:
        from .clients import redis_client
        with redis_client() as r:
            r.delete(self.name)


class _RedisConsumer:
    def __init__(self, queue: RedisStreamsGroup, name: str):
        from .clients import redis_client
        self.q, self.name, self.r = queue, name, redis_client()
        self._claim_cursor, self._last_claim = "0-0", 0.0

    def take(self, count: int, timeout: float = 0.2) -> list[Delivery]:
        now = time.monotonic()
        if now - self._last_claim >= CLAIM_IDLE_MS / 4000:  # look for abandoned entries a few times a second
            self._last_claim = now
            cursor, claimed, *_ = self.r.xautoclaim(self.q.name, self.q.group, self.name, CLAIM_IDLE_MS,
                                                    start_id=self._claim_cursor, count=count)
            self._claim_cursor = cursor
            if claimed:
                # XAUTOCLAIM counted a new delivery; XPENDING says how many there have been
                counts = {p["message_id"]: p["times_delivered"] for p in self.r.xpending_range(
                    self.q.name, self.q.group, claimed[0][0], claimed[-1][0], len(claimed) + 10,
                    consumername=self.name)}
                # 0 when XPENDING does not report the entry: a count the broker did not give fails the asserts
                return [Delivery(fields["task"], counts.get(entry_id, 0), entry_id) for entry_id, fields in claimed]
        reply = self.r.xreadgroup(self.q.group, self.name, {self.q.name: ">"}, count=count,
                                  block=max(1, int(timeout * 1000)))
        return [Delivery(fields["task"], 1, entry_id) for entry_id, fields in (reply[0][1] if reply else [])]

    def stop_taking(self) -> None:
        pass  # nothing is pushed: XREADGROUP only hands out what is asked for

    def keep_alive(self, held: list[Delivery]) -> None:
        """Renew the claim on entries still being worked on: XCLAIM to oneself with JUSTID resets their idle
        time without counting a delivery, so peers (XAUTOCLAIM after CLAIM_IDLE_MS) leave a live, slow
        consumer alone. A dead consumer stops renewing: then its entries go idle."""
        if held:
            self.r.xclaim(self.q.name, self.q.group, self.name, 0, [d.handle for d in held], justid=True)

    def ack(self, delivery: Delivery) -> None:
        self.r.xack(self.q.name, self.q.group, delivery.handle)

    def release(self, delivery: Delivery) -> None:
        pass  # no "give back" verb: the entry stays pending until someone claims it

    def redeliver_released(self, count: int) -> list[Delivery]:
        """The retry after a failure: claim pending entries again at once (XAUTOCLAIM, idle 0), which counts
        a delivery."""
        _, claimed, *_ = self.r.xautoclaim(self.q.name, self.q.group, self.name, 0, start_id="0-0", count=count)
        counts = {p["message_id"]: p["times_delivered"]
                  for p in self.r.xpending_range(self.q.name, self.q.group, "-", "+", count + 10)}
        return [Delivery(f["task"], counts.get(i, 0), i) for i, f in claimed if f]

    def close(self) -> None:
        self.r.close()


class RabbitMQQuorumQueue:
    """A quorum queue. Messages a dead consumer held (unacked) return to the queue when its connection closes;
    a redelivered message carries redelivered=True and, in quorum queues, an x-delivery-count header."""
    label = "RabbitMQ quorum queue"

    def __init__(self, name: str | None = None):
        self.name = name or run_name("wq-rabbit")
        self.arguments = {"x-queue-type": "quorum"}

    def set_delivery_limit(self, limit: int) -> None:
        self.arguments["x-delivery-limit"] = limit  # then dropped (or dead-lettered, with a DLX)

    def setup(self) -> None:
        from .clients import rabbit_connection
        connection = rabbit_connection()
        try:
            connection.channel().queue_declare(self.name, durable=True, arguments=self.arguments)
        finally:
            connection.close()

    def publish(self, tasks: list[str]) -> None:
        import pika

        from .clients import rabbit_connection
        connection = rabbit_connection()
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            for task in tasks:
                channel.basic_publish("", self.name, task.encode(), pika.BasicProperties(delivery_mode=2))
        finally:
            connection.close()

    def consumer(self, name: str, batch: int = 5) -> "_RabbitConsumer":
        return _RabbitConsumer(self, name, batch)

    def replay(self, expected: int, seconds: float = 10.0) -> int:
        """What a new reader can read again once the job is done: an acked message is deleted, so nothing.
        (The queue's own count, by a passive declare: the management API's figures lag by seconds.)"""
        from . import rabbitmq_tools
        from .clients import rabbit_connection
        connection = rabbit_connection()
        try:
            return rabbitmq_tools.ready(connection.channel(), self.name)
        finally:
            connection.close()

    def cleanup(self) -> None:
        from .clients import rabbit_connection
        connection = rabbit_connection()
        try:
            connection.channel().queue_delete(self.name)
        finally:
            connection.close()


class _RabbitConsumer:
    def __init__(self, queue: RabbitMQQuorumQueue, name: str, batch: int):
        from .clients import rabbit_connection
        self.q, self.name = queue, name
        self.connection = rabbit_connection()
        self.channel = self.connection.channel()
        self.channel.basic_qos(prefetch_count=batch)  # at most `batch` unacked messages pushed to this consumer
        self.pushed = self.channel.consume(queue.name, inactivity_timeout=0.02)

    def take(self, count: int, timeout: float = 0.2) -> list[Delivery]:
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            method, properties, body = next(self.pushed)
            if method is None:
                if got:
                    break
                continue
            # x-delivery-count: how many earlier deliveries were returned (absent on the first delivery). The
            # count is the broker's alone (not the redelivered flag): a broker that did not count a crashed
            # consumer's return would show 1 here and fail the notebook's assert
            previous = int((properties.headers or {}).get("x-delivery-count", 0))
            got.append(Delivery(body.decode(), previous + 1, method.delivery_tag))
        return got

    def keep_alive(self, held: list[Delivery]) -> None:
        pass  # the broker knows the consumer is alive while its connection is (heartbeats)

    def stop_taking(self) -> None:
        """Cancel the subscription: what the broker pushed but take() did not hand out goes back (rejected);
        what was taken stays unacked with this consumer."""
        self.channel.cancel()

    def ack(self, delivery: Delivery) -> None:
        self.channel.basic_ack(delivery.handle)

    def release(self, delivery: Delivery) -> None:
        self.channel.basic_nack(delivery.handle, requeue=True)

    def redeliver_released(self, count: int) -> list[Delivery]:
        return self.take(count, timeout=1.0)

    def close(self) -> None:
        from .rabbitmq_tools import _close
        try:
            self.channel.cancel()  # unacked messages go back to the queue
        except Exception:  # a broken channel: closing the connection returns them anyway
            pass
        _close(self.connection)


class KafkaShareGroup:
    """A one-partition topic and a share group (KIP-932): records are acquired by one member at a time and
    acknowledged one by one (ACCEPT / RELEASE / REJECT); a dead member's acquired records are released."""
    label = "Kafka share group"

    def __init__(self, name: str | None = None):
        self.name = name or run_name("wq-kafka")
        self.group = f"{self.name}-sharers"
        self.group_config = {"share_auto_offset_reset": "earliest"}
        self.replay_group = f"{self.name}-replay"

    def set_delivery_limit(self, limit: int) -> None:
        self.group_config["share_delivery_count_limit"] = limit  # then the record is archived

    def setup(self) -> None:
        from . import kafka_tools
        from .clients import kafka_admin
        admin = kafka_admin()
        kafka_tools.create_topic(admin, self.name, partitions=1)
        kafka_tools.set_group_config(admin, self.group, **self.group_config)

    def publish(self, tasks: list[str]) -> None:
        from .clients import kafka_producer
        producer = kafka_producer(**{"linger.ms": 0})
        for task in tasks:  # one batch per record: a share fetch hands out whole batches
            producer.produce(self.name, task.encode())
            producer.flush(10)
        assert producer.flush(10) == 0, f"{self.name}: records not delivered"

    def consumer(self, name: str, batch: int = 5) -> "_KafkaConsumer":
        return _KafkaConsumer(self, name, batch)

    def replay(self, expected: int, seconds: float = 20.0) -> int:
        """A new share group starting at the earliest offset reads the log again."""
        from . import kafka_tools
        from .clients import kafka_admin, kafka_share_consumer
        kafka_tools.set_group_config(kafka_admin(), self.replay_group, share_auto_offset_reset="earliest")
        reader = kafka_share_consumer(self.replay_group)
        reader.subscribe([self.name])
        try:
            # no idle cut-off: a new share member needs a heartbeat or two before its first records
            got = kafka_tools.share_consume(reader, expected, seconds=seconds, on_message=reader.acknowledge)
        finally:
            reader.close()
        return len(got)

    def cleanup(self) -> None:
        from confluent_kafka import KafkaException

        from . import kafka_tools
        from .clients import kafka_admin
        admin = kafka_admin()
        kafka_tools.delete_topics(admin, [self.name])
        try:
            kafka_tools.delete_groups(admin, [self.group, self.replay_group])
        except KafkaException as exc:
            # the killed member stays in the share group until its session times out (45 s): the group, named
            # per run and with its topic gone, is left to the broker; the replay group was empty and is gone
            if "NON_EMPTY_GROUP" not in exc.args[0].name():
                raise
            kafka_tools.delete_groups(admin, [self.replay_group])


class _KafkaConsumer:
    def __init__(self, queue: KafkaShareGroup, name: str, batch: int):
        from .clients import kafka_share_consumer
        self.q, self.name = queue, name
        self.consumer = kafka_share_consumer(queue.group, **{"client.id": name, "max.poll.records": batch})
        self.consumer.subscribe([queue.name])

    def take(self, count: int, timeout: float = 0.2) -> list[Delivery]:
        batch = self.consumer.poll(timeout) or []
        return [Delivery(m.value().decode(), m.delivery_count(), m) for m in batch if not m.error()]

    def stop_taking(self) -> None:
        pass  # a share consumer fetches only when it polls

    def keep_alive(self, held: list[Delivery]) -> None:
        pass  # acquired records stay locked for share.record.lock.duration.ms (30 s) or until the member leaves

    def ack(self, delivery: Delivery) -> None:
        self.consumer.acknowledge(delivery.handle)
        self.consumer.commit_sync(10)

    def release(self, delivery: Delivery) -> None:
        from confluent_kafka import AcknowledgeType
        self.consumer.acknowledge(delivery.handle, AcknowledgeType.RELEASE)
        self.consumer.commit_sync(10)

    def redeliver_released(self, count: int) -> list[Delivery]:
        return self.take(count, timeout=1.0)

    def close(self) -> None:
        self.consumer.close()


BACKENDS = {"redis": RedisStreamsGroup, "rabbitmq": RabbitMQQuorumQueue, "kafka": KafkaShareGroup}


# --- the crashing consumer (a process the job kills) ----------------------------------------------------------

def _hold_and_die(kind: str, name: str, hold: int, report: str, seconds: float = 60.0) -> None:
    """Take `hold` tasks, acknowledge every other one, report what was taken and acked, then hang holding the
    rest until killed (at most `seconds`), renewing its hold where the broker needs that (Redis)."""
    queue = BACKENDS[kind](name)
    consumer = queue.consumer("doomed", batch=hold)
    deadline = time.monotonic() + seconds
    taken: list[Delivery] = []
    while len(taken) < hold and time.monotonic() < deadline:
        # RabbitMQ pushes the prefetched messages in frames that may arrive apart on a loaded machine: take again
        taken += consumer.take(hold - len(taken), timeout=0.5)
        if taken and isinstance(consumer, _KafkaConsumer):  # one poll: a share consumer acks before the next
            break
    consumer.stop_taking()  # acking frees prefetch room: no more tasks for the doomed consumer
    acked = [d.task for d in taken[::2]]
    for delivery in taken[::2]:
        consumer.ack(delivery)
    held = taken[1::2]
    # written aside, then renamed: the job waits for the file to exist and must never read it half-written
    partial = Path(f"{report}.partial")
    partial.write_text(json.dumps({"taken": [d.task for d in taken], "acked": acked}))
    partial.replace(report)
    while time.monotonic() < deadline:  # "working" on the rest: the crash comes from outside
        consumer.keep_alive(held)
        time.sleep(0.1)


# --- the job --------------------------------------------------------------------------------------------------

@dataclass
class JobResult:
    system: str
    tasks: int
    name: str = ""                                              # the per-run stream / queue / topic
    done: dict[str, int] = field(default_factory=dict)          # task -> times completed (crashed one included)
    held: list[str] = field(default_factory=list)               # taken by the crashed consumer, not acked
    acked_before_crash: list[str] = field(default_factory=list)
    redelivery_counts: dict[str, int] = field(default_factory=dict)  # held task -> delivery count when redone
    recovered_after: float | None = None                        # s from the kill to the last held task done
    seconds: float = 0.0                                        # s from the kill to the job done
    completion_order: list[str] = field(default_factory=list)
    per_consumer: dict[str, int] = field(default_factory=dict)
    replayed: int = 0                                           # tasks a fresh reader read again afterwards

    @property
    def every_task_done(self) -> bool:
        return sorted(self.done) == sorted(task_names(self.tasks)) and all(n >= 1 for n in self.done.values())

    @property
    def done_twice(self) -> list[str]:
        return sorted(t for t, n in self.done.items() if n > 1)

    @property
    def redelivered(self) -> bool:
        return bool(self.held) and all(self.redelivery_counts.get(t, 0) >= 2 for t in self.held)

    @property
    def per_message_ack(self) -> bool:
        """Only the unacknowledged tasks came back: none the crashed consumer had acked was done again."""
        return bool(self.acked_before_crash) and not set(self.acked_before_crash) & set(self.redelivery_counts)

    @property
    def inversions(self) -> int:
        """Pairs completed in the opposite order to their publishing."""
        index = [int(t.rsplit("-", 1)[1]) for t in self.completion_order]
        return sum(1 for i in range(len(index)) for j in range(i + 1, len(index)) if index[i] > index[j])


def task_names(n: int) -> list[str]:
    return [f"task-{i}" for i in range(n)]


def run_job(kind: str, tasks: int = 60, consumers: int = 3, hold: int = 6, seconds: float = 40.0,
            name: str | None = None) -> JobResult:
    """Run the job on one backend ('redis', 'rabbitmq', 'kafka') and clean up after it: the doomed consumer
    (a process) takes `hold` tasks and acks every other one; `consumers` worker threads do the rest; once they
    have, the doomed one is SIGKILLed and the workers (already running) must finish what it held."""
    queue = BACKENDS[kind](name)
    result = JobResult(system=queue.label, tasks=tasks, name=queue.name)
    queue.setup()
    started = time.monotonic()
    try:
        queue.publish(task_names(tasks))
        scratch = tempfile.TemporaryDirectory(prefix="bl-wq-")  # the doomed consumer's report, deleted below
        report = Path(scratch.name) / "doomed.json"
        with scratch, BoundedWorkers(seconds=seconds, name=f"wq-{kind}") as workers:
            doomed = workers.process(_hold_and_die, kind, queue.name, hold, str(report), seconds)
            wait_for(lambda: report.exists() or not doomed.is_alive(), seconds,
                     f"{queue.label}: the doomed consumer to take its tasks")
            if not report.exists():
                raise RuntimeError(f"{queue.label}: the doomed consumer died before taking tasks "
                                   f"(exit code {doomed.exitcode})")
            taken = json.loads(report.read_text())
            result.acked_before_crash = taken["acked"]
            result.held = [t for t in taken["taken"] if t not in taken["acked"]]
            result.done = {t: 1 for t in taken["acked"]}
            progress = _Progress(result)
            for k in range(consumers):
                workers.thread(_work, queue, progress, f"worker-{k + 1}", workers.running, name=f"worker-{k + 1}")
            wait_for(lambda: len(result.done) >= tasks - len(result.held) or workers.errors, seconds,
                     f"{queue.label}: the workers to finish every task the doomed consumer does not hold")
            # the clock starts just before the kill: set after it, a fast redelivery (RabbitMQ: ~20 ms) could finish
            # first and be taken for work stolen from a live consumer
            progress.killed_at = time.monotonic()
            doomed.kill()  # SIGKILL, the crash: no ack, no close, no goodbye
            wait_for(lambda: len(result.done) == tasks or workers.errors, seconds,
                     lambda: f"{queue.label}: every task done (missing "
                             f"{sorted(set(task_names(tasks)) - set(result.done))[:5]})")
            workers.stop()  # the with-block joins the threads (and re-raises what one raised)
        if result.recovered_after is None:
            raise AssertionError(f"{queue.label}: the held tasks were redone before the kill (a live consumer's "
                                 f"work was taken from it): {result.redelivery_counts}")
        result.seconds = round(time.monotonic() - started, 2)
        result.replayed = queue.replay(tasks)
    finally:
        queue.cleanup()
    return result


class _Progress:
    """What the worker threads record, under one lock."""

    def __init__(self, result: JobResult):
        self.result = result
        self.lock = threading.Lock()
        self.killed_at: float | None = None

    def done(self, consumer: str, delivery: Delivery) -> None:
        result = self.result
        with self.lock:
            result.done[delivery.task] = result.done.get(delivery.task, 0) + 1
            result.completion_order.append(delivery.task)
            result.per_consumer[consumer] = result.per_consumer.get(consumer, 0) + 1
            if delivery.task in result.held or delivery.count > 1:
                result.redelivery_counts[delivery.task] = delivery.count
            if (delivery.task in result.held and self.killed_at is not None
                    and all(t in result.redelivery_counts for t in result.held)):
                result.recovered_after = round(time.monotonic() - self.killed_at, 2)


def _work(queue, progress: _Progress, name: str, running) -> None:
    """A competing consumer: take, ack, record, while `running()` (BoundedWorkers.running)."""
    consumer = queue.consumer(name)
    try:
        while running():
            for delivery in consumer.take(5, timeout=0.2):
                consumer.ack(delivery)
                progress.done(name, delivery)
    finally:
        consumer.close()


POISON_BOUND = 6  # the consumer gives up first when the broker has no delivery limit


def poison_deliveries(kind: str, limit: int = DELIVERY_LIMIT, bound: int = POISON_BOUND, settle: float = 3.0,
                      name: str | None = None) -> list[int]:
    """A task that always fails: one consumer takes it and gives it back (nack/RELEASE/claim again) until the
    broker stops delivering it for `settle` s or `bound` deliveries were made. Returns each delivery's count.
    The broker's delivery limit is set to `limit` where one exists (RabbitMQ, Kafka)."""
    queue = BACKENDS[kind](name)
    queue.set_delivery_limit(limit)
    queue.setup()
    counts: list[int] = []
    try:
        queue.publish(["poison"])
        consumer = queue.consumer("unlucky")
        try:
            got = consumer.take(1, timeout=10)
            while got and len(counts) < bound:
                counts.append(got[0].count)
                consumer.release(got[0])
                deadline = time.monotonic() + settle
                got = []
                while not got and time.monotonic() < deadline:
                    got = consumer.redeliver_released(1)
        finally:
            consumer.close()
    finally:
        queue.cleanup()
    return counts
