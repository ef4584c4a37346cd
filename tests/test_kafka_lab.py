"""Lab 05 checks: pass a correct implementation, fail wrong ones with a hint (real Kafka)."""
import time

import pytest
from confluent_kafka import KafkaError

import brokerlab as bl
from brokerlab.clients import kafka_consumer
from brokerlab.labs import kafka_lab
from brokerlab.labs.checking import LabCheckFailed


def manual_consumer(group_id):
    return kafka_consumer(group_id, **{"enable.auto.commit": False})


def auto_consumer(group_id):
    return kafka_consumer(group_id, **{"enable.auto.commit": True, "auto.commit.interval.ms": 100})


def _loop(consumer, topic, handle, max_messages, seconds, commit_first=False, commit=True):
    consumer.subscribe([topic])
    deadline = time.monotonic() + seconds
    handled = 0
    while handled < max_messages and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            continue
        if commit and commit_first:
            consumer.commit(message=msg, asynchronous=False)
        handle(msg)
        if commit and not commit_first:
            consumer.commit(message=msg, asynchronous=False)
        handled += 1
    return handled


def good(consumer, topic, handle, max_messages, seconds):
    return _loop(consumer, topic, handle, max_messages, seconds)


def commit_first(consumer, topic, handle, max_messages, seconds):
    return _loop(consumer, topic, handle, max_messages, seconds, commit_first=True)


def never_commits(consumer, topic, handle, max_messages, seconds):
    return _loop(consumer, topic, handle, max_messages, seconds, commit=False)


def swallows(consumer, topic, handle, max_messages, seconds):
    try:
        return _loop(consumer, topic, handle, max_messages, seconds)
    except Exception:
        return 0


def test_at_least_once_passes_a_correct_worker():
    bl.require("kafka")
    result = kafka_lab.check_at_least_once(manual_consumer, good)
    assert set(result["handled"]) == {f"payment {i}" for i in range(10)} and result["duplicates"] == 0


@pytest.mark.parametrize("make, loop, hint", [
    (manual_consumer, commit_first, "after handle"),
    (auto_consumer, good, "enable.auto.commit=False"),
    (manual_consumer, never_commits, "consumer.commit"),
    (manual_consumer, swallows, "swallow"),
])
def test_at_least_once_fails_wrong_workers_with_a_hint(make, loop, hint):
    with pytest.raises(LabCheckFailed) as failed:
        kafka_lab.check_at_least_once(make, loop)
    assert hint in failed.value.hint


def test_untouched_exercise_fails_with_a_hint():
    def make_consumer(group_id):
        raise NotImplementedError("your code here")

    with pytest.raises(LabCheckFailed, match="not written yet") as failed:
        kafka_lab.check_at_least_once(make_consumer, good)
    assert "kafka_consumer" in failed.value.hint


def rebuild(topic, group_id=None, reset="earliest", commit=False):
    consumer = kafka_consumer(group_id or bl.run_name("rebuild"),
                              **{"auto.offset.reset": reset, "enable.partition.eof": True})
    try:
        partitions = len(consumer.list_topics(topic, timeout=5).topics[topic].partitions)
        consumer.subscribe([topic])
        balances, at_end = {}, set()
        deadline = time.monotonic() + 8
        while len(at_end) < partitions and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                continue
            kind, amount = msg.value().decode().split()
            key = msg.key().decode()
            balances[key] = balances.get(key, 0) + (int(amount) if kind == "deposit" else -int(amount))
        if commit:
            consumer.commit(asynchronous=False)
        return balances
    finally:
        consumer.close()


def test_rebuild_passes_a_correct_replay():
    assert kafka_lab.check_rebuild(rebuild, seed=1) == kafka_lab.check_rebuild(rebuild, seed=1)


def test_rebuild_fails_the_latest_trap():
    with pytest.raises(LabCheckFailed, match="no balances") as failed:
        kafka_lab.check_rebuild(lambda t: rebuild(t, reset="latest"), seed=2)
    assert "earliest" in failed.value.hint


def test_rebuild_fails_a_fixed_group_that_resumes():
    fixed = bl.run_name("fixed")
    with pytest.raises(LabCheckFailed, match="second replay") as failed:
        kafka_lab.check_rebuild(lambda t: rebuild(t, group_id=fixed, commit=True), seed=3)
    assert "new group id" in failed.value.hint


def test_rebuild_fails_a_wrong_fold():
    with pytest.raises(LabCheckFailed, match="differ"):
        kafka_lab.check_rebuild(lambda t: {k: -v for k, v in rebuild(t).items()}, seed=4)
