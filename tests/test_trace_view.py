"""brokerlab.views.trace: the effects and trace views read SQLite, Kafka and the Redis journal."""
from __future__ import annotations

import pytest

from brokerlab import hybrid, outbox
from brokerlab import kafka_tools as kt
from brokerlab.clients import kafka_admin
from brokerlab.runs import run_name
from brokerlab.views.trace import OrderEffectsView, OrderTrace


@pytest.fixture
def system(r, tmp_path):
    run = run_name("t-trace")
    admin = kafka_admin()
    topic = kt.create_topic(admin, f"{run}.orders", partitions=1)
    db = outbox.open_db(tmp_path / "orders.sqlite")
    yield run, db, topic
    db.close()
    kt.delete_topics(admin, [topic])
    doomed = list(r.scan_iter(match=f"{run}*", count=1000))
    if doomed:
        r.delete(*doomed)


def test_views_follow_an_order_through_the_systems(r, system):
    run, db, topic = system
    journal = f"{run}:effects"
    events = [outbox.place_order(db, f"o-{i}", "alice", i) for i in range(3)]
    effects = OrderEffectsView(db, topic, journal, r)
    trace = OrderTrace(db, "o-1", topic, journal, r)
    assert effects.refresh()["kafka_orders"] == 0 and not effects.converged()
    assert [s["step"] for s in trace.refresh()["steps"]] == ["order committed", "outbox row (same tx)"]

    producer = outbox.idempotent_producer()
    outbox.relay_until_drained(db, producer, topic)
    kt.produce(producer, topic, [("o-1", outbox.json.dumps(events[1]))])     # a repeat, as a killed relay leaves
    for event in [*events, events[1]]:
        r.rpush(journal, hybrid._entry("email-queued", event, queue="bl-orders-1795400000-abcd"))
        hybrid.apply_once(r, "emailed", event, journal, worker="w@host")
        hybrid.notify_once(r, event, journal, f"{run}:live", f"{run}:cache:")
    model = effects.refresh()
    assert effects.converged() and model["kafka_records"] == 4
    assert model["emailed_absorbed"] == model["notified_absorbed"] == 1
    assert trace.refresh()["done"] == trace.total_steps and trace.complete()
    steps = {s["step"]: s for s in trace.model["steps"]}
    assert steps["relayed (audit log)"]["times"] == 2 and steps["email sent"]["where"] == "w"
    assert steps["email sent"]["absorbed"] == 1 and steps["email sent"]["ms"] >= 0
    text = trace.render_text()
    assert "Order o-1: 6 of 6 steps done" in text and "p0@1, p0@3" in text
    assert steps["email task queued"]["times"] == 2 and steps["email task queued"]["system"] == "RabbitMQ"
    assert "email (repeats absorbed)" in effects.render_html()
