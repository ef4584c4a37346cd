"""kafka_tools against the real Kafka broker: topics, keys, offsets/lag, group state."""
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
