"""brokerlab.hybrid against the real brokers: the seeds' facade under a crash, idempotent effects, bounded
group consumers."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from brokerlab import hybrid, outbox
from brokerlab import kafka_tools as kt
from brokerlab import rabbitmq_tools as rt
from brokerlab.clients import kafka_admin, kafka_producer, rabbit_connection
from brokerlab.runs import run_name

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))


@pytest.fixture
def names(r):
    run = run_name("t-hybrid")
    admin = kafka_admin()
    topic = kt.create_topic(admin, f"{run}.audit", partitions=1)
    yield run, topic
    kt.delete_topics(admin, [topic])
    kt.delete_groups(admin, [f"{run}.latest", f"{run}.earliest"])
    rt.delete_run(run)
    doomed = list(r.scan_iter(match=f"{run}*", count=1000))
    if doomed:
        r.delete(*doomed)


def test_the_facade_diverges_when_it_dies_between_writes(r, names):
    from celery_apps import orders

    run, topic = names
    live, cache = f"{run}:live", f"{run}:cache"
    listener = hybrid.subscribed(r, live, cache)
    facade = hybrid.NaiveFacade(kafka_producer(), topic, orders.send_order_email, f"{run}.email", r, live, cache,
                                f"{run}:cache:")
    crashes = {1: 1, 2: 2, 3: 3}
    for i in range(5):
        event = outbox.order_event(f"o-{i}", "alice", i, 0.0)
        try:
            facade.order_placed(event, journal=f"{run}:j", crash_after=crashes.get(i))
        except hybrid.FacadeCrash as exc:
            assert f"after write {crashes[i]}" in str(exc)
    connection = rabbit_connection()
    try:
        emails = connection.channel().queue_declare(f"{run}.email", passive=True).method.message_count
    finally:
        connection.close()
    heard = hybrid.drain_pubsub(listener)
    listener.close()
    assert len(kt.read_all(topic)) == 5                       # write 1 always happened
    assert emails == 4                                        # not for the order that died after write 1
    assert heard == {live: 3, cache: 2}                       # died after 1 or 2: no notice; after 3: no DEL
    with pytest.raises(hybrid.FacadeCrash, match="after write 1 .email task"):
        facade.order_placed(outbox.order_event("o-9", "alice", 9, 0.0), f"{run}:j", crash_after=1,
                            order=(2, 1, 3, 4))
    assert len(kt.read_all(topic)) == 5                       # the email went first: no audit event


def test_apply_once_applies_the_first_and_absorbs_the_repeats(r, names):
    run, _ = names
    journal, prefix = f"{run}:j", f"{run}:cache:"
    event = outbox.order_event("o-1", "alice", 1, 0.0)
    r.set(f"{prefix}alice", "cached")
    listener = hybrid.subscribed(r, f"{run}:live")
    assert hybrid.notify_once(r, event, journal, f"{run}:live", prefix) is True
    assert not r.exists(f"{prefix}alice")
    r.set(f"{prefix}alice", "cached again")
    assert hybrid.notify_once(r, event, journal, f"{run}:live", prefix) is False
    assert r.get(f"{prefix}alice") == "cached again"            # a repeat performs no effect
    assert hybrid.drain_pubsub(listener) == {f"{run}:live": 1}
    listener.close()
    assert hybrid.apply_once(r, "emailed", event, journal, worker="w1") is True
    assert hybrid.effect_counts(r, journal) == {"notified": 1, "notified-absorbed": 1, "emailed": 1}
    assert hybrid.journal_entries(r, journal, "emailed")[0]["worker"] == "w1"


def test_a_group_starting_at_latest_skips_what_is_there_and_earliest_reads_it(names):
    run, topic = names
    kt.produce(kafka_producer(), topic, [("o-1", json.dumps({"event_id": "e1"})),
                                          ("o-2", json.dumps({"event_id": "e2"}))])
    seen = []
    assert hybrid.consume_events(topic, f"{run}.latest", seen.append, start="latest") == 0
    assert hybrid.consume_events(topic, f"{run}.earliest", seen.append) == 2
    assert [e["event_id"] for e in seen] == ["e1", "e2"]
    assert hybrid.consume_events(topic, f"{run}.earliest", seen.append) == 0   # committed: nothing again


def test_the_email_task_mails_an_order_once_however_often_it_is_sent(r, names):
    from brokerlab.celery_app import celery_worker, forget_run
    from brokerlab.waiting import wait_for
    from celery_apps import orders

    run, _ = names
    journal = f"{run}:j"
    event = outbox.order_event("o-1", "alice", 1, 0.0)
    try:
        with celery_worker("celery_apps.orders", queues=[orders.EMAIL_QUEUE], cwd=NOTEBOOKS) as worker:
            ids = [hybrid.queue_email(r, orders.send_order_email, event, journal) for _ in range(3)]
            results = [orders.app.AsyncResult(task_id) for task_id in ids]
            assert sorted(result.get(timeout=20) for result in results) == [False, False, True]
        wait_for(lambda: hybrid.effect_counts(r, journal) ==
                 {"email-queued": 3, "emailed": 1, "emailed-absorbed": 2}, 5)
        assert hybrid.journal_entries(r, journal, "email-queued")[0]["queue"] == orders.EMAIL_QUEUE
        assert hybrid.journal_entries(r, journal, "emailed")[0]["worker"] == worker.nodename
        assert worker.all_gone()
    finally:
        forget_run(orders.app)
        rt.delete_run(orders.EMAIL_QUEUE)


def test_drain_pubsub_counts_exactly_what_was_published_before_it(r):
    run = run_name("t-drain")
    live, other = f"{run}:live", f"{run}:other"
    listener = hybrid.subscribed(r, live, other)
    try:
        for i in range(50):
            r.publish(live, i)
        r.publish(other, "x")
        assert hybrid.drain_pubsub(listener) == {live: 50, other: 1}   # ends at its PING's PONG, not on a pause
        assert hybrid.drain_pubsub(listener) == {}                     # nothing counted twice
        r.publish(live, "late")
        assert hybrid.drain_pubsub(listener) == {live: 1}
    finally:
        listener.close()


def test_a_handler_that_fails_leaves_its_record_to_be_read_again(names):
    """consume_events commits only after the effect: no auto-commit behind its back (librdkafka's default would
    store the offset at poll and commit it on close, skipping the record whose effect never happened)."""
    run, topic = names
    kt.produce(kafka_producer(), topic, [(f"o-{i}", json.dumps({"event_id": f"e{i}"})) for i in range(3)])
    seen = []

    def dies_on_e1(event):
        if event["event_id"] == "e1":
            raise RuntimeError("the consumer died before e1's effect")
        seen.append(event["event_id"])

    with pytest.raises(RuntimeError):
        hybrid.consume_events(topic, f"{run}.earliest", dies_on_e1)
    assert hybrid.consume_events(topic, f"{run}.earliest", lambda e: seen.append(e["event_id"])) == 2
    assert seen == ["e0", "e1", "e2"]                          # e1 again, not skipped


def test_librdkafkas_default_auto_commit_would_skip_that_record(names):
    """Why consume_events turns auto-commit off: with librdkafka's defaults, the offset of a record poll() returned
    is committed on close() although the application never handled it."""
    from brokerlab.clients import kafka_consumer
    from brokerlab.waiting import wait_for
    from confluent_kafka import TopicPartition

    run, topic = names
    kt.produce(kafka_producer(), topic, [(f"o-{i}", json.dumps({"event_id": f"e{i}"})) for i in range(3)])
    careless = kafka_consumer(f"{run}.latest")                # enable.auto.commit left at its default (true)
    careless.subscribe([topic])
    polled = wait_for(lambda: careless.poll(0.2), 15, "the first record")
    careless.close()                                          # dies before handling it; no commit() called
    assert polled.offset() == 0
    checker = kafka_consumer(f"{run}.latest")
    try:
        committed = checker.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    finally:
        checker.close()
    assert committed == 1                                     # committed anyway: e0 would never be handled
