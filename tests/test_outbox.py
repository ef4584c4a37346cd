"""brokerlab.outbox against the real Kafka: one transaction per order, a relay killed at its worst moment."""
from __future__ import annotations

import signal

import pytest

from brokerlab import kafka_tools as kt
from brokerlab import outbox
from brokerlab.clients import kafka_admin
from brokerlab.runs import run_name
from brokerlab.workers import BoundedWorkers


@pytest.fixture
def db(tmp_path):
    connection = outbox.open_db(tmp_path / "orders.sqlite")
    yield connection
    connection.close()


@pytest.fixture
def topic():
    admin = kafka_admin()
    name = kt.create_topic(admin, run_name("t-outbox"), partitions=2)
    yield name
    kt.delete_topics(admin, [name])


def test_an_order_and_its_event_are_written_together_or_not_at_all(db):
    with pytest.raises(outbox.ServiceCrash):
        outbox.place_order(db, "o-crash", "alice", 100, crash_before_commit=True)
    assert outbox.counts(db) == {"orders": 0, "events": 0, "unpublished": 0}
    event = outbox.place_order(db, "o-1", "alice", 100)
    assert event["event_id"] == "o-1:placed" and event["customer"] == "alice"
    assert outbox.counts(db) == {"orders": 1, "events": 1, "unpublished": 1}
    row = outbox.event_row(db, "o-1")
    assert row["event_id"] == "o-1:placed" and row["published_at"] is None
    outbox.save_order(db, "o-naive", "bob", 5)                 # the naive service: no outbox row
    assert outbox.counts(db) == {"orders": 2, "events": 1, "unpublished": 1}


def test_a_service_killed_before_commit_leaves_neither_row(db, tmp_path):
    with BoundedWorkers(seconds=30) as workers:
        doomed = workers.process(outbox.place_order_process, str(tmp_path / "orders.sqlite"), "o-1", "alice", 1,
                                 "kill")
        workers.wait(until=lambda: not doomed.is_alive())
    assert doomed.exitcode == -signal.SIGKILL
    assert outbox.counts(db) == {"orders": 0, "events": 0, "unpublished": 0}
    outbox.place_order(db, "o-2", "alice", 2)                # the database is usable: nothing is left locked
    assert outbox.counts(db)["orders"] == 1


def test_the_relay_publishes_in_order_and_marks_only_what_kafka_acknowledged(db, topic):
    for i in range(7):
        outbox.place_order(db, f"o-{i}", "alice", i)
    producer = outbox.idempotent_producer()
    assert outbox.relay_once(db, producer, topic, batch=3) == 3
    assert outbox.counts(db)["unpublished"] == 4
    assert outbox.relay_until_drained(db, producer, topic, batch=3) == 4
    assert outbox.relay_once(db, producer, topic) == 0
    records = kt.read_all(topic)
    assert sorted(r.key for r in records) == sorted(f"o-{i}" for i in range(7))
    assert {outbox.decode(r)["event_id"] for r in records} == {f"o-{i}:placed" for i in range(7)}


def test_a_relay_killed_after_kafkas_ack_repeats_its_batch_and_loses_nothing(db, topic, tmp_path):
    for i in range(8):
        outbox.place_order(db, f"o-{i}", "alice", i)
    with BoundedWorkers(seconds=30) as workers:
        relay = workers.process(outbox.relay_process, str(tmp_path / "orders.sqlite"), topic, 3, 2)
        workers.wait(until=lambda: not relay.is_alive())
    assert relay.exitcode == -signal.SIGKILL
    assert len(kt.read_all(topic)) == 6 and outbox.counts(db)["unpublished"] == 5
    assert outbox.relay_until_drained(db, outbox.idempotent_producer(), topic, batch=3) == 5
    records = kt.read_all(topic)
    assert len(records) == 8 + 3 and len({r.key for r in records}) == 8
