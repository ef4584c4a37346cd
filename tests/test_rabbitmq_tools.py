"""brokerlab.rabbitmq_tools against the real RabbitMQ of the test stack (4.0)."""
import datetime
import time

import pika
import pytest

import brokerlab as bl
from brokerlab import rabbitmq_tools as rt
from brokerlab.clients import rabbit_connection


@pytest.fixture
def run():
    prefix = bl.run_name("test-rt")
    yield prefix
    rt.delete_run(prefix)
    assert rt.names(prefix) == {"queues": [], "exchanges": []}


@pytest.fixture
def channel():
    connection = rabbit_connection()
    yield connection.channel()
    connection.close()


def declare(channel, name, **arguments):
    channel.queue_declare(name, durable=True, arguments=arguments or None)
    return name


def test_bodies_ready_and_get_all(channel, run):
    q = declare(channel, f"{run}.q")
    channel.confirm_delivery()            # so the queue has them when basic_publish returns
    for body in ("a", "b", "c"):
        channel.basic_publish("", q, body.encode())
    assert rt.ready(channel, q) == 3
    held = rt.get_all(channel, q, limit=2, ack=False)
    assert [m.body for m in held] == ["a", "b"] and not held[0].redelivered
    channel.basic_nack(held[-1].delivery_tag, multiple=True, requeue=True)
    again = rt.get_all(channel, q)
    assert [(m.body, m.redelivered) for m in again] == [("a", True), ("b", True), ("c", False)]
    assert rt.bodies(channel, q) == [] and rt.exists(q) and not rt.exists(f"{run}.missing")


def test_work_consumes_acks_and_stops(channel, run):
    q = declare(channel, f"{run}.work")
    for i in range(6):
        channel.basic_publish("", q, f"m{i}".encode())
    done = []
    with bl.BoundedWorkers(seconds=15) as workers:
        workers.thread(rt.work, q, "w", done, prefetch=1, until=workers.running,
                       fail=lambda m: m.body == "m3", requeue=False)
        assert workers.wait(until=lambda: len(done) == 5)
        workers.stop()
    assert [b for _, b in done] == ["m0", "m1", "m2", "m4", "m5"]     # m3 was nacked without requeue
    rt.wait_counts(q, ready=0, unacked=0, consumers=0)
    assert rt.ready(channel, q) == 0


def test_a_killed_holder_gives_its_messages_back(channel, run):
    q = declare(channel, f"{run}.hold")
    for i in range(4):
        channel.basic_publish("", q, f"t{i}".encode())
    with bl.BoundedWorkers(seconds=30) as workers:
        holder = workers.process(rt.hold, q, 2)
        rt.wait_counts(q, unacked=2, ready=2)
        holder.kill()
    rt.wait_counts(q, unacked=0, ready=4, consumers=0)
    assert [m.redelivered for m in rt.get_all(channel, q)] == [True, True, False, False]


@pytest.mark.parametrize("options", [dict(window=1), dict(window=20, batch=True), dict(window=20)])
def test_publish_with_confirms(channel, run, options):
    q = declare(channel, f"{run}.confirms")
    result = rt.publish_with_confirms(q, 100, **options)
    assert result["confirmed"] == 100 and result["nacked"] == 0 and result["per_second"] > 0
    assert rt.ready(channel, q) == 100


def test_rpc_call_and_timeout(channel, run):
    q = declare(channel, f"{run}.rpc")
    with bl.BoundedWorkers(seconds=15) as workers, rt.RpcClient() as rpc:
        workers.thread(rt.rpc_server, q, workers.running)
        assert [rpc.call(q, f"x{i}") for i in range(3)] == ["X0", "X1", "X2"]
        workers.stop()
    with rt.RpcClient() as rpc:
        started = time.monotonic()
        with pytest.raises(rt.RpcTimeout):
            rpc.call(q, "nobody", timeout=0.5)
        assert time.monotonic() - started < 2


def test_read_stream_from_first_offset_and_timestamp(channel, run):
    s = declare(channel, f"{run}.stream", **{"x-queue-type": "stream"})
    channel.confirm_delivery()
    for i in range(4):
        channel.basic_publish("", s, f"e{i}".encode())
    assert rt.read_stream(channel, s, "first") == [(i, f"e{i}") for i in range(4)]
    assert rt.read_stream(channel, s, 2) == [(2, "e2"), (3, "e3")]
    time.sleep(1.1)
    cut = datetime.datetime.now()
    time.sleep(1.1)
    channel.basic_publish("", s, b"late")
    assert [b for _, b in rt.read_stream(channel, s, cut)] == ["late"]


def test_quorum_delivery_limit_and_death_count(channel, run):
    dead = declare(channel, f"{run}.dead")
    channel.exchange_declare(f"{run}.dlx", "fanout")
    channel.queue_bind(dead, f"{run}.dlx")
    q = declare(channel, f"{run}.quorum", **{"x-queue-type": "quorum", "x-delivery-limit": 1,
                                             "x-dead-letter-exchange": f"{run}.dlx"})
    channel.confirm_delivery()
    channel.basic_publish("", q, b"poison")
    assert rt.nack_until_gone(channel, q) == [0, 1]
    [letter] = [rt.wait_for_message(channel, dead, 5)]
    assert rt.death_count(letter, queue=q, reason="delivery_limit") == 1 and rt.death_count(letter) == 1


def test_delete_run_refuses_a_short_prefix():
    with pytest.raises(ValueError):
        rt.delete_run("bl-")


def test_message_from_pika_keeps_priority_and_headers(channel, run):
    q = declare(channel, f"{run}.props")
    channel.basic_publish("", q, b"x", pika.BasicProperties(priority=3, headers={"k": "v"}))
    [message] = rt.get_all(channel, q)
    assert message.priority == 3 and message.headers == {"k": "v"} and rt.x_death(message) == []
