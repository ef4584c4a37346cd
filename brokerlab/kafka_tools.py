"""Kafka machinery for notebooks 05a/05b and lab 05: topics, offsets, lag and group state, with waits
that read the broker's own answers (metadata, list_offsets, describe_consumer_groups), never sleeps.

Every function takes ready-made clients or makes short-lived ones from brokerlab.clients, and every
loop is bounded by a deadline.

    from brokerlab import kafka_tools as kt
    kt.create_topic(admin, topic, partitions=3, config={"retention.ms": "60000"})
    kt.produce(producer, topic, [("alice", "deposit 10"), ...])   # flushed; returns (partition, offset) list
    kt.consume(consumer, max_messages=10, seconds=10)             # bounded poll loop
    kt.offsets_table(admin, topic, [group])                       # log start / committed / log end / lag
    kt.settle_group(admin, group, consumers, partitions=3)        # poll members until the group is stable
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from . import timeouts
from .waiting import WaitTimeout, wait_for

DEFAULT_WAIT = 20.0
_NOT_READY = None


# --- topics ------------------------------------------------------------------------------

def create_topic(admin, name: str, partitions: int = 3, config: dict | None = None,
                 timeout: float = DEFAULT_WAIT) -> str:
    """Create a topic (replication factor 1: the course runs one broker) and wait until its metadata
    lists every partition with a leader, so the next produce() does not race the creation."""
    from confluent_kafka.admin import NewTopic

    new = NewTopic(name, num_partitions=partitions, replication_factor=1,
                   config={k: str(v) for k, v in (config or {}).items()})
    admin.create_topics([new], operation_timeout=timeout, request_timeout=timeout)[name].result(timeout)
    wait_for(lambda: _topic_ready(admin, name, partitions), timeout, f"topic {name} with {partitions} partitions")
    watermarks(admin, name, range(partitions), retry_seconds=timeout)  # the leader serves every partition
    return name


def _topic_ready(admin, name: str, partitions: int) -> bool:
    meta = admin.list_topics(name, timeout=timeouts.REPLY).topics.get(name)
    if meta is None or meta.error is not None or len(meta.partitions) != partitions:
        return False
    return all(p.leader >= 0 and p.error is None for p in meta.partitions.values())


def delete_topics(admin, names: Iterable[str], timeout: float = DEFAULT_WAIT) -> list[str]:
    """Delete topics (missing ones are ignored) and wait until the metadata no longer lists them."""
    from confluent_kafka import KafkaError, KafkaException

    names = [n for n in names if n]
    existing = set(topic_names(admin))
    doomed = [n for n in names if n in existing]
    if doomed:
        for name, future in admin.delete_topics(doomed, operation_timeout=timeout,
                                                request_timeout=timeout).items():
            try:
                future.result(timeout)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
    wait_for(lambda: not set(doomed) & set(topic_names(admin)), timeout, f"topics {doomed} deleted")
    return doomed


def topic_names(admin) -> list[str]:
    return sorted(t for t in admin.list_topics(timeout=timeouts.REPLY).topics if not t.startswith("__"))


def topic_config(admin, name: str, keys: Iterable[str] | None = None) -> dict[str, str]:
    """The topic's effective configuration as the broker reports it (describe_configs)."""
    from confluent_kafka.admin import ConfigResource, ResourceType

    resource = ConfigResource(ResourceType.TOPIC, name)
    entries = admin.describe_configs([resource], request_timeout=timeouts.REPLY * 2)[resource].result(
        timeouts.REPLY * 2)
    wanted = set(keys) if keys is not None else None
    return {k: e.value for k, e in entries.items() if wanted is None or k in wanted}


def partition_count(admin, name: str) -> int:
    return len(admin.list_topics(name, timeout=timeouts.REPLY).topics[name].partitions)


# --- producing and consuming ---------------------------------------------------------------

def produce(producer, topic: str, records: Iterable, timeout: float = 10.0, **produce_kwargs) -> list[tuple[int, int]]:
    """Produce (key, value) pairs, or (key, value, extra_kwargs) triples (e.g. {"timestamp": ms}),
    flush, and return each record's (partition, offset) in send order, as acknowledged by the broker."""
    results: list = []

    def delivered(slot):
        def callback(err, msg):
            results[slot] = err if err is not None else (msg.partition(), msg.offset())
        return callback

    for record in records:
        key, value, *extra = record if isinstance(record, tuple) else (None, record)
        kwargs = {**produce_kwargs, **(extra[0] if extra else {})}
        results.append(None)
        producer.produce(topic, key=_bytes(key), value=_bytes(value), on_delivery=delivered(len(results) - 1),
                         **kwargs)
        producer.poll(0)
    left = producer.flush(timeout)
    if left:
        raise WaitTimeout(f"{left} message(s) still queued after flush({timeout}): is Kafka up?")
    errors = [r for r in results if not isinstance(r, tuple)]
    if errors:
        raise RuntimeError(f"{len(errors)} message(s) failed: {errors[0]}")
    return results


def _bytes(value):
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()


def text(value) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def partition_for(key, partitions: int, partitioner: str = "consistent_random") -> int:
    """The partition a producer picks for a non-empty key, computed here so a notebook can check the
    broker-acknowledged partition against the formula:
    - "consistent_random" (librdkafka's default, so confluent-kafka's): CRC32(key) % partitions;
    - "murmur2_random" (the Java client's default partitioner): (murmur2(key) & 0x7fffffff) % partitions."""
    import zlib

    data = _bytes(key)
    if partitioner == "consistent_random":
        return zlib.crc32(data) % partitions
    if partitioner == "murmur2_random":
        return (murmur2(data) & 0x7FFFFFFF) % partitions
    raise ValueError(f"unknown partitioner {partitioner!r}")


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2, seed 0x9747b28c), as a signed 32-bit int."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    tail = length % 4
    base = length - tail
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@dataclass
class Record:
    """A consumed message in plain Python types (what the notebooks print and assert on)."""
    partition: int
    offset: int
    key: str | None
    value: str | None
    timestamp: int

    @classmethod
    def of(cls, msg) -> "Record":
        return cls(msg.partition(), msg.offset(), text(msg.key()), text(msg.value()), msg.timestamp()[1])


def consume(consumer, max_messages: int, seconds: float = 10.0, idle: float | None = None,
            on_message: Callable | None = None, raw: bool = False, poll: float = 0.2,
            stop_at_eof: bool = False) -> list:
    """Poll until `max_messages` arrived, `seconds` passed, (if given) `idle` seconds passed
    without a message, or (stop_at_eof=True, needs enable.partition.eof=true) every assigned
    partition reported its end. Returns Records (or the raw messages with raw=True).
    `on_message(msg)` runs for each message before the next poll (e.g. process, then commit)."""
    from confluent_kafka import KafkaError, KafkaException

    got: list = []
    at_end: set = set()
    deadline = time.monotonic() + seconds
    last = time.monotonic()
    while len(got) < max_messages and time.monotonic() < deadline:
        msg = consumer.poll(min(poll, max(0.0, deadline - time.monotonic())))
        if msg is None:
            if idle is not None and time.monotonic() - last >= idle:
                break
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                at_end.add((msg.topic(), msg.partition()))
                assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
                if stop_at_eof and assigned and assigned <= at_end:
                    break
                continue
            raise KafkaException(msg.error())
        at_end.discard((msg.topic(), msg.partition()))
        last = time.monotonic()
        if on_message is not None:
            on_message(msg)
        got.append(msg if raw else Record.of(msg))
    return got


def read_all(topic: str, seconds: float = 10.0, **config) -> list[Record]:
    """Every record currently in the topic, read by a throwaway consumer that assigns all partitions
    from their log start and stops at each partition's end (no group, no commit)."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from .clients import kafka_consumer

    consumer = kafka_consumer("bl-read-all", **enable_partition_eof(config))
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=timeouts.REPLY).topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeouts.REPLY,
                                                  cached=False) for p in partitions}
        todo = {p for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[Record] = []
        deadline = time.monotonic() + seconds
        while todo and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF: this partition is read to its end
                    todo.discard(msg.partition())
                    continue
                from confluent_kafka import KafkaException

                raise KafkaException(msg.error())
            records.append(Record.of(msg))
        if todo:
            raise WaitTimeout(f"read_all({topic}): partitions {sorted(todo)} not read to the end in {seconds} s")
        return records
    finally:
        consumer.close()


def enable_partition_eof(config: dict) -> dict:
    return {"enable.partition.eof": True, "enable.auto.commit": False, **config}


# --- offsets and lag ---------------------------------------------------------------------------

def watermarks(admin, topic: str, partitions: Iterable[int] | None = None,
               isolation: str = "read_uncommitted", retry_seconds: float = 5.0) -> dict[int, tuple[int, int]]:
    """{partition: (log start offset, log end offset)} from the broker (AdminClient.list_offsets).
    With isolation="read_committed" the end is the last stable offset (open transactions excluded)."""
    from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    global _NOT_READY
    if _NOT_READY is None:
        _NOT_READY = _not_ready_codes()

    if partitions is None:
        partitions = range(partition_count(admin, topic))
    partitions = list(partitions)
    level = IsolationLevel.READ_COMMITTED if isolation == "read_committed" else IsolationLevel.READ_UNCOMMITTED
    out: dict[int, list[int]] = {p: [0, 0] for p in partitions}
    for slot, spec in ((0, OffsetSpec.earliest()), (1, OffsetSpec.latest())):
        deadline = time.monotonic() + retry_seconds
        while True:
            try:
                futures = admin.list_offsets({TopicPartition(topic, p): spec for p in partitions},
                                             isolation_level=level, request_timeout=timeouts.REPLY * 2)
                for tp, future in futures.items():
                    out[tp.partition][slot] = future.result(timeouts.REPLY * 2).offset
                break
            except KafkaException as exc:
                # right after creation (or a leader change) the partition may not be served yet
                if exc.args[0].code() not in _NOT_READY or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
    return {p: (low, high) for p, (low, high) in sorted(out.items())}


def _not_ready_codes():
    from confluent_kafka import KafkaError

    return {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
            KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.NOT_COORDINATOR,
            getattr(KafkaError, "FENCED_LEADER_EPOCH", -99), getattr(KafkaError, "UNKNOWN_LEADER_EPOCH", -99)}


def committed_offsets(admin, group: str, topic: str, partitions: Iterable[int]) -> dict[int, int | None]:
    """{partition: committed offset, or None when the group has committed nothing there}."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    partitions = list(partitions)
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    result = admin.list_consumer_group_offsets([request], request_timeout=timeouts.REPLY * 2)[group].result(
        timeouts.REPLY * 2)
    out: dict[int, int | None] = {p: None for p in partitions}
    for tp in result.topic_partitions:
        out[tp.partition] = tp.offset if tp.offset >= 0 else None
    return out


def offsets_table(admin, topic: str, groups: Iterable[str] = ()) -> dict:
    """Per partition: log start, log end; per group and partition: committed offset and lag.

    Lag is what the group still has to read: log end - committed. A group that has committed
    nothing would start at the log start (auto.offset.reset=earliest), so its lag is log end - log start.
    Returns {"topic", "partitions": {p: {"log_start", "log_end"}},
             "groups": {g: {"partitions": {p: {"committed", "lag"}}, "lag": total}}}."""
    marks = watermarks(admin, topic)
    model = {"topic": topic,
             "partitions": {p: {"log_start": low, "log_end": high} for p, (low, high) in marks.items()},
             "groups": {}}
    for group in groups:
        committed = committed_offsets(admin, group, topic, marks)
        parts = {}
        for p, (low, high) in marks.items():
            c = committed[p]
            parts[p] = {"committed": c, "lag": max(0, high - max(low, c if c is not None else low))}
        model["groups"][group] = {"partitions": parts, "lag": sum(v["lag"] for v in parts.values())}
    return model


# --- consumer groups -------------------------------------------------------------------------

@dataclass
class GroupState:
    """What the group coordinator says about a group (describe_consumer_groups)."""
    group: str
    state: str
    members: dict[str, list[int]] = field(default_factory=dict)  # client.id -> partitions (all topics)

    @property
    def assigned(self) -> list[int]:
        return sorted(p for parts in self.members.values() for p in parts)

    @property
    def idle(self) -> list[str]:
        return sorted(m for m, parts in self.members.items() if not parts)


def describe_group(admin, group: str) -> GroupState:
    description = admin.describe_consumer_groups([group], request_timeout=timeouts.REPLY * 2)[group].result(
        timeouts.REPLY * 2)
    members = {}
    for m in description.members:
        parts = [tp.partition for tp in (m.assignment.topic_partitions if m.assignment else [])]
        members[m.client_id or m.member_id] = sorted(parts)
    state = getattr(description.state, "name", str(description.state))
    return GroupState(group, state, dict(sorted(members.items())))


def settle_group(admin, group: str, consumers: dict, partitions: int, timeout: float = DEFAULT_WAIT) -> GroupState:
    """Poll every member (a member only takes part in a rebalance while it polls) until the
    coordinator reports the group STABLE with exactly these members, each consumer's own
    assignment() agrees, and the partitions are covered once. `consumers` maps client.id -> Consumer.
    Messages polled meanwhile are not committed, so nothing is lost. Returns the GroupState."""
    seen: list = []
    pending: dict = {}

    def settled() -> bool:
        for name, consumer in consumers.items():
            _poll_keep(consumer, name, pending)
        local = {name: sorted(tp.partition for tp in c.assignment()) for name, c in consumers.items()}
        if sorted(p for parts in local.values() for p in parts) != list(range(partitions)):
            return False
        state = describe_group(admin, group)
        seen[:] = [state]
        return state.state == "STABLE" and state.members == local

    wait_for(settled, timeout, lambda: f"group {group} to settle with {sorted(consumers)} (last seen: "
                                        f"{seen[0] if seen else 'no assignment yet'})", poll=0.0)
    _rewind(consumers, pending)
    return seen[0]


def _poll_keep(consumer, name, pending: dict, timeout: float = 0.05) -> None:
    """poll() so the consumer takes part in the group; remember the first offset of any message it
    returns, so _rewind can seek back to it: waiting must not swallow messages."""
    msg = consumer.poll(timeout)
    if msg is not None and not msg.error():
        key = (name, msg.topic(), msg.partition())
        pending[key] = min(pending.get(key, msg.offset()), msg.offset())


def _rewind(consumers: dict, pending: dict) -> None:
    from confluent_kafka import TopicPartition

    for (name, topic, partition), offset in pending.items():
        consumer = consumers[name]
        if any(tp.topic == topic and tp.partition == partition for tp in consumer.assignment()):
            consumer.seek(TopicPartition(topic, partition, offset))


def wait_for_assignment(consumer, timeout: float = DEFAULT_WAIT) -> list[int]:
    """Poll one consumer until it has been given partitions; returns them. A message that arrives
    meanwhile is not lost: the consumer is sought back to it."""
    pending: dict = {}

    def assigned() -> bool:
        _poll_keep(consumer, "c", pending, timeout=0.1)
        return bool(consumer.assignment())

    wait_for(assigned, timeout, "the consumer to be assigned partitions", poll=0.0)
    _rewind({"c": consumer}, pending)
    return sorted(tp.partition for tp in consumer.assignment())


# --- waiting -------------------------------------------------------------------------------

def wait_for_log_start(admin, topic: str, partition: int, at_least: int, timeout: float = 30.0) -> int:
    """Wait until retention has moved the partition's log-start offset to `at_least` or beyond."""
    seen = [0]

    def moved() -> bool:
        seen[0] = watermarks(admin, topic, [partition])[partition][0]
        return seen[0] >= at_least

    wait_for(moved, timeout, lambda: f"log start of {topic}[{partition}] >= {at_least} (still {seen[0]})",
             poll=0.5)
    return seen[0]


def wait_for_compaction(topic: str, expected_records: int, timeout: float = 30.0) -> list[Record]:
    """Re-read the topic until the log cleaner has left `expected_records` records (or fewer)."""
    found: list = []

    def compacted():
        found[:] = read_all(topic)
        return len(found) <= expected_records

    wait_for(compacted, timeout, lambda: f"compaction of {topic} to {expected_records} records "
                                         f"(still {len(found)})", poll=0.5)
    return found


def offset_for_time(consumer, topic: str, partition: int, timestamp_ms: int) -> int:
    """The earliest offset whose timestamp is >= timestamp_ms (Consumer.offsets_for_times);
    -1 means no such record yet (the log end)."""
    from confluent_kafka import TopicPartition

    found = consumer.offsets_for_times([TopicPartition(topic, partition, timestamp_ms)], timeout=timeouts.REPLY * 2)
    return found[0].offset


def delete_groups(admin, groups: Iterable[str], timeout: float = DEFAULT_WAIT) -> list[str]:
    """Delete consumer groups (their committed offsets); a group must have no members left.
    Groups that do not exist are ignored. Returns the groups deleted."""
    from confluent_kafka import KafkaException

    pending = [g for g in groups if g]
    deleted: list[str] = []
    deadline = time.monotonic() + timeout
    while pending:
        retry = []
        for group, future in admin.delete_consumer_groups(pending, request_timeout=timeout).items():
            try:
                future.result(timeout)
                deleted.append(group)
            except KafkaException as exc:
                name = exc.args[0].name()
                # a loaded or just-started broker: the request timed out or the coordinator is (re)loading
                if name in _TRANSIENT_GROUP_ERRORS and time.monotonic() < deadline:
                    retry.append(group)
                elif "GROUP_ID_NOT_FOUND" not in name:
                    raise
        pending = retry
        if pending:
            time.sleep(0.2)
    return deleted


_TRANSIENT_GROUP_ERRORS = ("_TIMED_OUT", "NOT_COORDINATOR", "COORDINATOR_LOAD_IN_PROGRESS", "COORDINATOR_NOT_AVAILABLE")


def set_group_config(admin, group: str, **configs) -> None:
    """Set dynamic GROUP configs (IncrementalAlterConfigs), e.g. share_auto_offset_reset="earliest" for a
    share group: underscores in the keyword become dots. They are deleted with the group."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    entries = [ConfigEntry(key.replace("_", "."), str(value), incremental_operation=AlterConfigOpType.SET)
               for key, value in configs.items()]
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)
    admin.incremental_alter_configs([resource], request_timeout=timeouts.REPLY * 2)[resource].result(
        timeouts.REPLY * 2)


def share_consume(consumer, max_messages: int, seconds: float = 10.0, idle: float | None = None,
                  on_message: Callable | None = None) -> list:
    """Bounded loop over ShareConsumer.poll() (which returns a batch). `on_message(msg)` must acknowledge
    each message in explicit mode (ACCEPT, RELEASE or REJECT); the acknowledgements are committed with
    commit_sync() after each batch. Returns the raw messages."""
    from confluent_kafka import KafkaException

    got: list = []
    deadline = time.monotonic() + seconds
    last = time.monotonic()
    while len(got) < max_messages and time.monotonic() < deadline:
        batch = consumer.poll(min(0.2, max(0.0, deadline - time.monotonic())))
        if not batch:
            if idle is not None and time.monotonic() - last >= idle:
                break
            continue
        last = time.monotonic()
        for msg in batch:
            if msg.error():
                raise KafkaException(msg.error())
            if on_message is not None:
                on_message(msg)
            got.append(msg)
        consumer.commit_sync(timeouts.REPLY * 2)
    return got


# --- crash demos ---------------------------------------------------------------------------

def crash_test_consumer(group: str, topic: str, config: dict, processed_file: str, process_first: int,
                        batch: int = 100, hang_seconds: float = 60.0) -> None:
    """The target of a process the notebook kills (BoundedWorkers.process): subscribe, take one batch
    with Consumer.consume(batch), "process" the first `process_first` records (append the value to
    `processed_file`; call store_offsets(msg) when enable.auto.offset.store=false), then hang as if stuck on
    the next record, without polling, until killed (at most `hang_seconds`). Auto commit, if on, keeps
    committing from librdkafka's background thread meanwhile: what gets committed is what was stored."""
    from .clients import kafka_consumer

    consumer = kafka_consumer(group, **config)
    consumer.subscribe([topic])
    store_by_hand = str(config.get("enable.auto.offset.store", True)).lower() == "false"
    deadline = time.monotonic() + hang_seconds
    messages: list = []
    while len(messages) < batch and time.monotonic() < deadline:
        messages += [m for m in consumer.consume(batch - len(messages), timeout=0.5) if not m.error()]
        if messages and len(messages) >= process_first:
            break
    with open(processed_file, "a") as out:
        for msg in messages[:process_first]:
            out.write(text(msg.value()) + "\n")
            out.flush()
            if store_by_hand:
                consumer.store_offsets(message=msg)
    while time.monotonic() < deadline:  # stuck: the crash comes from outside (kill)
        time.sleep(0.05)


def crash_and_restart(group: str, topic: str, config: dict, process_first: int, crash_when: Callable[[], bool],
                      processed_file, seconds: float = 20.0) -> tuple[list[str], list[str]]:
    """Fault injection for one-partition `topic`: run crash_test_consumer(group, ...) in its own process, kill it
    (SIGKILL: no close(), no final commit) as soon as crash_when() is true (a condition on the broker's state),
    then restart: a consumer of the same group assign()s partition 0 without an offset, so it starts at the group's
    committed offset, and reads to the end. Returns (values processed before the crash, values read after)."""
    from confluent_kafka import TopicPartition

    from .clients import kafka_consumer
    from .workers import BoundedWorkers

    with BoundedWorkers(seconds=seconds + 10) as workers:
        worker = workers.process(crash_test_consumer, group, topic, config, str(processed_file), process_first)
        wait_for(crash_when, seconds, f"{group}: the moment to crash")
        worker.kill()
    restarted = kafka_consumer(group, **{"enable.auto.commit": False, "enable.partition.eof": True})
    restarted.assign([TopicPartition(topic, 0)])  # no offset given: the committed one
    try:
        redone = [r.value for r in consume(restarted, 10_000, seconds=seconds, stop_at_eof=True)]
    finally:
        restarted.close()
    return lines(processed_file), redone


def lines(path) -> list[str]:
    """The lines a crash-test process wrote so far (a missing file: none)."""
    from pathlib import Path

    path = Path(path)
    return path.read_text().splitlines() if path.exists() else []
