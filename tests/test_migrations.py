"""brokerlab.migrations against the real RabbitMQ and Kafka: a dual write diverges, a killed bridge repeats
but never loses."""
from __future__ import annotations

import json
import signal

import pytest

from brokerlab import kafka_tools as kt
from brokerlab import migrations
from brokerlab import rabbitmq_tools as rt
from brokerlab.clients import kafka_admin, kafka_producer, rabbit_connection
from brokerlab.runs import run_name
from brokerlab.waiting import wait_for
from brokerlab.workers import BoundedWorkers


@pytest.fixture
def setup():
    run = run_name("t-migrate")
    admin = kafka_admin()
    topic = kt.create_topic(admin, f"{run}.topic", partitions=2)
    connection = rabbit_connection()
    channel = connection.channel()
    channel.confirm_delivery()
    exchange, queue = f"{run}.x", f"{run}.q"
    channel.exchange_declare(exchange, "topic")
    channel.queue_declare(queue)
    channel.queue_bind(queue, exchange, "order.#")
    yield channel, exchange, queue, topic
    connection.close()
    kt.delete_topics(admin, [topic])
    rt.delete_run(run)


def depth(channel, queue):
    return channel.queue_declare(queue, passive=True).method.message_count


def test_a_dual_write_that_dies_between_its_writes_diverges(setup):
    channel, exchange, queue, topic = setup
    events = migrations.events("e", 6)
    lost = migrations.dual_write(channel, exchange, kafka_producer(), topic, events, crash_at={"e-1", "e-4"})
    assert lost == ["e-1", "e-4"]
    assert depth(channel, queue) == 6 and len(kt.read_all(topic)) == 4


def test_the_bridge_acks_rabbitmq_after_kafka_so_a_kill_repeats_a_batch(setup):
    channel, exchange, queue, topic = setup
    migrations.publish(channel, exchange, migrations.events("e", 7))
    with BoundedWorkers(seconds=30) as workers:
        bridge = workers.process(migrations.bridge_process, queue, topic, 3, 2)
        workers.wait(until=lambda: not bridge.is_alive())
    assert bridge.exitcode == -signal.SIGKILL
    wait_for(lambda: depth(channel, queue) == 4, 10, "RabbitMQ to requeue the unacknowledged batch")
    assert len(kt.read_all(topic)) == 6
    migrations.bridge_process(queue, topic, 3)
    records = kt.read_all(topic)
    assert depth(channel, queue) == 0 and len(records) == 7 + 3
    assert {json.loads(r.value)["event_id"] for r in records} == {f"e-{i}" for i in range(7)}


def test_the_legacy_consumer_acks_after_handling(setup):
    channel, exchange, queue, _ = setup
    migrations.publish(channel, exchange, migrations.events("e", 3))
    handled = []
    assert migrations.consume_queue(channel, queue, handled.append) == 3
    assert [e["event_id"] for e in handled] == ["e-0", "e-1", "e-2"] and depth(channel, queue) == 0
