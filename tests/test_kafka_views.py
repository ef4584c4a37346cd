"""OffsetsView: its model after a bounded watch loop while a real consumer commits."""

import brokerlab as bl
from brokerlab import kafka_tools as kt
from brokerlab.clients import kafka_admin, kafka_consumer, kafka_producer
from brokerlab.views.base import short_name
from brokerlab.views.kafka import OffsetsView


def test_offsets_view_follows_a_consumer_to_zero_lag(capsys):
    bl.require("kafka")
    admin = kafka_admin()
    topic = kt.create_topic(admin, bl.run_name("t-view"), partitions=3)
    group = bl.run_name("g-view")
    try:
        kt.produce(kafka_producer(), topic, [(f"k{i}", f"v{i}") for i in range(15)])
        view = OffsetsView(topic, groups=[group], admin=admin)
        first = view.refresh()
        assert first["groups"][group]["lag"] == 15
        assert view.log_end() == 15 and all(c is None for c in view.committed(group).values())

        def consume_all(running):
            consumer = kafka_consumer(group, **{"enable.auto.commit": False})
            consumer.subscribe([topic])
            try:
                kt.consume(consumer, max_messages=15, seconds=15,
                           on_message=lambda m: consumer.commit(message=m, asynchronous=False))
            finally:
                consumer.close()

        with bl.BoundedWorkers(seconds=30) as workers:
            workers.thread(consume_all, workers.running)
            model = view.watch(seconds=20, until=lambda: view.lag(group) == 0, interval=0.2)
        assert model["groups"][group]["lag"] == 0
        assert sum(view.committed(group).values()) == 15
        times, lags = view.series(lambda m: m["groups"][group]["lag"])
        assert lags[0] == 15 and lags[-1] == 0 and len(times) == len(lags) >= 2
        rows = view.rows(model)
        assert [r[1] for r in rows] == [0, 1, 2] and all(r[0] == group for r in rows)
        text = view.render_text()
        assert "log start" in text and topic in text
        middle = view.history[len(view.history) // 2][1]   # a state with some lag left
        page = view.render_html(middle)
        with_lag = sum(1 for p in middle["groups"][group]["partitions"].values() if p["lag"])
        assert page.count("background:#4a90d9") == with_lag  # bars only for lag, never partitions or offsets
        assert page.count(f">{short_name(group)}<") == 1  # the group's name once, shortened
    finally:
        kt.delete_topics(admin, [topic])


def test_offsets_view_without_groups():
    admin = kafka_admin()
    topic = kt.create_topic(admin, bl.run_name("t-view0"), partitions=2)
    try:
        view = OffsetsView(topic, admin=admin)
        view.refresh()
        assert view.rows(view.model) == [("(no group)", 0, 0, "-", 0, "-"), ("(no group)", 1, 0, "-", 0, "-")]
    finally:
        kt.delete_topics(admin, [topic])
