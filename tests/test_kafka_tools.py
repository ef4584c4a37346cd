"""kafka_tools against the real Kafka broker: topics, keys, offsets/lag, group state."""
import time

import pytest

import brokerlab as bl
from brokerlab import kafka_tools as kt
from brokerlab.clients import kafka_admin, kafka_consumer, kafka_producer


@pytest.fixture(scope="module")
def admin():
    bl.require("kafka")
    return kafka_admin()


@pytest.fixture
def topic(admin):
    name = kt.create_topic(admin, bl.run_name("t-tools"), partitions=3)
    yield name
    kt.delete_topics(admin, [name])


def test_create_and_delete_topic(admin):
    name = kt.create_topic(admin, bl.run_name("t-create"), partitions=2, config={"retention.ms": 123456})
    assert name in kt.topic_names(admin)
    assert kt.partition_count(admin, name) == 2
    assert kt.topic_config(admin, name, ["retention.ms"]) == {"retention.ms": "123456"}
    assert kt.delete_topics(admin, [name, "bl-never-created"]) == [name]
    assert name not in kt.topic_names(admin)


def test_same_key_same_partition_and_watermarks(admin, topic):
    placed = kt.produce(kafka_producer(), topic, [(f"k{i % 4}", f"v{i}") for i in range(20)])
    partitions = {}
    for i, (p, _) in enumerate(placed):
        partitions.setdefault(f"k{i % 4}", set()).add(p)
    assert all(len(s) == 1 for s in partitions.values())
    marks = kt.watermarks(admin, topic)
    assert sorted(marks) == [0, 1, 2] and sum(high - low for low, high in marks.values()) == 20
    assert len(kt.read_all(topic)) == 20


def test_offsets_table_committed_and_lag(admin, topic):
    kt.produce(kafka_producer(), topic, [(f"k{i}", "v") for i in range(12)])
    group = bl.run_name("g-tools")
    before = kt.offsets_table(admin, topic, [group])["groups"][group]
    assert before["lag"] == 12 and all(p["committed"] is None for p in before["partitions"].values())
    consumer = kafka_consumer(group, **{"enable.auto.commit": False})
    consumer.subscribe([topic])
    try:
        got = kt.consume(consumer, max_messages=5, seconds=15,
                         on_message=lambda m: consumer.commit(message=m, asynchronous=False))
    finally:
        consumer.close()
    assert len(got) == 5
    after = kt.offsets_table(admin, topic, [group])
    assert after["groups"][group]["lag"] == 7
    assert sum(p["committed"] or 0 for p in after["groups"][group]["partitions"].values()) == 5
    assert kt.delete_groups(admin, [group]) == [group]


def test_settle_group_assignment_and_rebalance(admin, topic):
    kt.produce(kafka_producer(), topic, [(f"k{i}", "v") for i in range(6)])
    group = bl.run_name("g-settle")
    consumers = {}
    try:
        for n in range(1, 5):
            consumers[f"c{n}"] = kafka_consumer(group, **{"client.id": f"c{n}", "enable.auto.commit": False})
            consumers[f"c{n}"].subscribe([topic])
            state = kt.settle_group(admin, group, consumers, partitions=3)
            assert state.state == "STABLE" and state.assigned == [0, 1, 2]
            assert len(state.members) == n
        assert len(state.idle) == 1
        busy = next(name for name, parts in state.members.items() if parts)
        consumers.pop(busy).close()
        after = kt.settle_group(admin, group, consumers, partitions=3)
        assert busy not in after.members and not after.idle
        # waiting polled the consumers, but swallowed nothing: together they still read all 6
        got = []
        for c in consumers.values():
            got += kt.consume(c, max_messages=6, seconds=3, idle=1)
        assert len(got) == 6
    finally:
        for c in consumers.values():
            c.close()


def test_retention_moves_log_start(admin):
    import time

    name = kt.create_topic(admin, bl.run_name("t-ret"), partitions=1,
                           config={"retention.ms": 60000, "segment.ms": 600000})
    try:
        old = int(time.time() * 1000) - 3600_000
        producer = kafka_producer()
        kt.produce(producer, name, [(None, f"old{i}", {"timestamp": old}) for i in range(4)])
        kt.produce(producer, name, [(None, "new")])
        assert kt.wait_for_log_start(admin, name, 0, 4, timeout=30) == 4
        assert [r.value for r in kt.read_all(name)] == ["new"]
    finally:
        kt.delete_topics(admin, [name])


def test_partition_for_matches_the_broker_acknowledged_partition(admin, topic):
    keys = [f"key-{i}" for i in range(16)]
    for partitioner in ("consistent_random", "murmur2_random"):
        placed = kt.produce(kafka_producer(**{"partitioner": partitioner}), topic, [(k, "v") for k in keys])
        assert [p for p, _ in placed] == [kt.partition_for(k, 3, partitioner) for k in keys], partitioner
    # the two hashes disagree on some keys: the reason Python and Java producers can split a key
    assert any(kt.partition_for(k, 3) != kt.partition_for(k, 3, "murmur2_random") for k in keys)


def test_murmur2_matches_kafkas_reference_values():
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2
    assert kt.murmur2(b"21") == -973932308
    assert kt.murmur2(b"foobar") == -790332482
    assert kt.murmur2(b"a-little-bit-long-string") == -985981536
    assert kt.murmur2(b"") == 275646681


def test_consume_stop_at_eof_returns_when_every_partition_is_read(admin, topic):
    kt.produce(kafka_producer(), topic, [(f"k{i}", "v") for i in range(7)])
    consumer = kafka_consumer(bl.run_name("g-eof"), **{"enable.auto.commit": False, "enable.partition.eof": True})
    consumer.subscribe([topic])
    try:
        started = time.monotonic()
        got = kt.consume(consumer, max_messages=100, seconds=20, stop_at_eof=True)
        assert len(got) == 7 and time.monotonic() - started < 15
    finally:
        consumer.close()


def _crash(admin, topic, config, process_first, until, tmp_path):
    group = bl.run_name("g-crash")
    log = tmp_path / "processed"
    return kt.crash_and_restart(group, topic, config, process_first, lambda: until(group, log), log)


@pytest.fixture
def payments(admin):
    name = kt.create_topic(admin, bl.run_name("t-pay"), partitions=1)
    kt.produce(kafka_producer(), name, [("a", f"p{i}") for i in range(6)])
    yield name
    kt.delete_topics(admin, [name])


def test_auto_commit_crash_loses_what_was_handed_over(admin, payments, tmp_path):
    done, redone = _crash(admin, payments, {"auto.commit.interval.ms": 200}, 2,
                          lambda g, log: len(kt.lines(log)) == 2
                          and kt.committed_offsets(admin, g, payments, [0])[0] == 6, tmp_path)
    assert done == ["p0", "p1"] and redone == []


def test_store_offsets_after_processing_loses_nothing(admin, payments, tmp_path):
    done, redone = _crash(admin, payments, {"auto.commit.interval.ms": 200, "enable.auto.offset.store": False}, 2,
                          lambda g, log: len(kt.lines(log)) == 2
                          and kt.committed_offsets(admin, g, payments, [0])[0] == 2, tmp_path)
    assert done + redone == [f"p{i}" for i in range(6)]


def test_share_group_config_and_share_consume(admin, payments):
    from confluent_kafka import AcknowledgeType

    from brokerlab.clients import kafka_share_consumer

    group = bl.run_name("g-share")
    kt.set_group_config(admin, group, share_auto_offset_reset="earliest")
    consumer = kafka_share_consumer(group)
    consumer.subscribe([payments])
    seen = []

    def release_p0_once(msg):
        seen.append((msg.value().decode(), msg.delivery_count()))
        first_p0 = msg.value() == b"p0" and msg.delivery_count() == 1
        consumer.acknowledge(msg, AcknowledgeType.RELEASE if first_p0 else AcknowledgeType.ACCEPT)

    try:
        kt.share_consume(consumer, max_messages=7, seconds=20, on_message=release_p0_once)
    finally:
        consumer.close()
    assert sorted(seen) == sorted([(f"p{i}", 1) for i in range(6)] + [("p0", 2)])
    kt.delete_groups(admin, [group])


def test_kip848_consumer_is_accepted_and_assigned(admin, topic):
    group = bl.run_name("g-848")
    consumer = kafka_consumer(group, **{"group.protocol": "consumer", "enable.auto.commit": False})
    consumer.subscribe([topic])
    try:
        assert kt.wait_for_assignment(consumer) == [0, 1, 2]
    finally:
        consumer.close()
    kt.delete_groups(admin, [group])
