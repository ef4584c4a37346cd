"""Lesson 07a's delivery-semantics experiments against the real brokers of the test stack: a consumer process is
really SIGKILLed mid-batch, and the counts separate at-most-once, at-least-once and effectively-once."""
from __future__ import annotations

import pytest

from brokerlab import delivery


@pytest.mark.parametrize("system", delivery.SYSTEMS)
def test_ack_before_loses_ack_after_repeats_and_the_idempotent_consumer_applies_once(system):
    batch, crash_after = 6, 2
    outcomes = delivery.crash_consumers(system, n=12, batch=batch, crash_after=crash_after)
    for outcome in outcomes.values():
        print(outcome)
        assert outcome.report.require_fault().acknowledged == 12
    at_most, at_least, once = (outcomes[p] for p in ("at-most-once", "at-least-once", "effectively-once"))
    assert (at_most.lost, at_most.applied_twice, at_most.redelivered) == (batch - crash_after, 0, 0)
    assert (at_least.lost, at_least.applied_twice, at_least.redelivered) == (0, crash_after, batch)
    assert (once.lost, once.applied_twice, once.redelivered) == (0, 0, batch)


def test_crash_must_come_mid_batch():
    with pytest.raises(ValueError):
        delivery.crash_consumers("redis", n=10, batch=5, crash_after=5)


def test_the_idempotent_effect_applies_an_id_once(r):
    names = delivery.Names.new("apply-once")
    try:
        applied = [delivery.apply_effect(r, names, msg_id, idempotent=True) for msg_id in ("a", "b", "a", "a")]
        assert applied == [True, True, False, False]
        assert delivery.effects(r, names) == ["a", "b"]
        assert delivery.apply_effect(r, names, "a", idempotent=False) and delivery.effects(r, names).count("a") == 2
    finally:
        r.delete(names.effects, names.processed)


def test_a_transaction_killed_open_is_aborted_read_committed_sees_each_input_once():
    outcome = delivery.transactional_crash(n=10, batch=5, crash_after=2)
    assert outcome.committed.require_fault().lost == 0 and outcome.committed.duplicated == 0
    assert outcome.committed.received == 10
    assert outcome.uncommitted.duplicated == 2      # the aborted records are still in the log
    assert outcome.outside.duplicated == 2          # the effect outside Kafka ran twice for them


@pytest.mark.parametrize("mode, lost, failed", [("fire-and-forget", 5, 0), ("confirms", 5, 0),
                                                ("confirms + mandatory", 0, 5)])
def test_an_unroutable_publish_is_lost_silently_unless_mandatory(mode, lost, failed):
    report = delivery.unroutable_publishes(mode, n=10)
    assert (report.acknowledged, report.lost, report.failed, report.received) == (10 - failed, lost, failed, 5)


def test_kafka_acks_0_reports_no_offset():
    fire, confirmed = delivery.kafka_acks("0", n=5), delivery.kafka_acks("all", n=5)
    assert fire == {"reported": 5, "with_offset": 0, "stored": 5}
    assert confirmed == {"reported": 5, "with_offset": 5, "stored": 5}


def test_the_crash_view_follows_the_experiment_to_its_counts():
    from brokerlab import BoundedWorkers
    from brokerlab.views.delivery import CrashView

    crash = delivery.ConsumerCrash("redis", n=8, batch=4, crash_after=1)
    view = CrashView(crash)
    with BoundedWorkers(seconds=60) as workers:
        workers.thread(crash.run)
        model = view.watch(seconds=60, until=lambda: crash.finished)
    assert [m["phase"] for m in model.values()] == ["counted"] * 3
    phases = {m[p]["phase"] for _, m in view.history for p in m}
    assert {"consuming", "counted"} <= phases
    for policy, outcome in crash.outcomes.items():
        assert model[policy]["applied twice"] == outcome.applied_twice
        assert model[policy]["received"] == outcome.deliveries == 8 + outcome.redelivered
    assert model["at-least-once"]["applied"] == 9 and model["effectively-once"]["applied"] == 8
    assert "at-most-once" in view.render_text()


def test_a_dedupe_mark_written_before_the_effect_loses_the_message_it_was_killed_on():
    outcome = delivery.crash_consumers("redis", policies=("dedupe marked first",), n=8, batch=4,
                                       crash_after=1)["dedupe marked first"]
    assert outcome.report.require_fault() and (outcome.lost, outcome.applied_twice, outcome.redelivered) == (1, 0, 4)


def test_a_coordinator_still_being_found_or_a_timed_out_request_is_retried_not_fatal():
    from confluent_kafka import KafkaError, KafkaException

    def transient(code):
        return delivery._transient(KafkaException(KafkaError(code)))

    assert transient(KafkaError._WAIT_COORD) and transient(KafkaError._TIMED_OUT)
    assert transient(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
    assert not transient(KafkaError.TOPIC_AUTHORIZATION_FAILED)
