"""A stopped or frozen broker: the health check and the clients raise within 5 s, naming the
broker, its address and the command that starts it.  Measured against the real brokers."""
from __future__ import annotations

import socket
import time

import pika.exceptions
import pytest
import redis
from confluent_kafka import KafkaException

from brokerlab import BrokerUnavailable, require
from brokerlab.clients import kafka_producer, rabbit_api, rabbit_connection, redis_client, unavailable
from brokerlab.endpoints import Endpoints


LIMIT = 5.0
NAMES = {"redis": "Redis", "rabbitmq": "RabbitMQ", "kafka": "Kafka"}


def free_port_set() -> Endpoints:
    """A port set on which nothing listens: what a client sees when the stack is stopped."""
    for offset in range(500, 2000, 37):
        ep = Endpoints.from_env(offset=offset)
        if all(_free(port) for port in ep.ports.values()):
            return ep
    pytest.fail("no free port set found")


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def assert_clear_and_fast(call, broker: str, ep: Endpoints, started: float | None = None):
    started = time.monotonic() if started is None else started
    with pytest.raises(BrokerUnavailable) as info:
        call()
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert elapsed < LIMIT, f"{broker}: took {elapsed:.1f} s to fail"
    assert NAMES[broker] in message
    assert ep.address(broker).split(":")[1] in message or str(ep.ports["rabbitmq_management"]) in message
    assert "python -m brokerlab stack up" in message
    print(f"{broker}: failed in {elapsed:.2f} s: {message.splitlines()[0]}")
    return info.value


@pytest.mark.parametrize("broker", ["redis", "rabbitmq", "kafka"])
def test_health_check_on_stopped_broker(broker):
    ep = free_port_set()
    error = assert_clear_and_fast(lambda: require(broker, ep=ep, quiet=True), broker, ep)
    assert f"BROKERLAB_PORT_OFFSET={ep.offset}" in error.start_command


def test_clients_on_stopped_brokers_raise_their_library_error_too():
    ep = free_port_set()
    error = assert_clear_and_fast(lambda: redis_client(ep=ep).ping(), "redis", ep)
    assert isinstance(error, redis.exceptions.ConnectionError)
    error = assert_clear_and_fast(lambda: rabbit_connection(ep), "rabbitmq", ep)
    assert isinstance(error, pika.exceptions.AMQPConnectionError)
    assert_clear_and_fast(lambda: rabbit_api("overview", ep=ep), "rabbitmq", ep)
    error = assert_clear_and_fast(lambda: kafka_producer(ep=ep), "kafka", ep)
    assert isinstance(error, KafkaException)


def test_the_errors_print_and_repr_like_their_library_errors():
    ep = free_port_set()
    for broker, library_error in (("redis", redis.exceptions.ConnectionError),
                                  ("rabbitmq", pika.exceptions.AMQPConnectionError), ("kafka", KafkaException)):
        error = unavailable(broker, "refused", ep)
        assert isinstance(error, library_error)
        assert ep.address(broker) in repr(error) and ep.address(broker) in str(error)  # repr once raised in redis-py 8
    assert redis.exceptions.ConnectionError.__repr__(unavailable("redis", "refused", ep)) == \
        "network:RedisUnavailable"   # redis-py's own repr (used by its logging) works too


@pytest.mark.disruptive
def test_really_stopped_redis_then_restarted(ep):
    from brokerlab import stack

    service = next(s for s in stack.services(ep) if s.name == "redis")
    service.stop()
    try:
        assert_clear_and_fast(lambda: require("redis", ep=ep, quiet=True), "redis", ep)
        assert_clear_and_fast(lambda: redis_client(ep=ep).set("k", "v"), "redis", ep)
    finally:
        service.start_and_wait()
    assert redis_client(ep=ep).ping()


@pytest.mark.parametrize("broker", ["redis", "rabbitmq", "kafka"])
def test_health_check_on_frozen_broker(broker, ep, frozen):
    with frozen(broker):
        assert_clear_and_fast(lambda: require(broker, ep=ep, quiet=True), broker, ep)


def test_clients_on_frozen_brokers(ep, frozen):
    with frozen("redis"):
        client = redis_client(ep=ep)
        assert_clear_and_fast(lambda: client.lpush("bl-frozen", "x"), "redis", ep)
    with frozen("rabbitmq"):
        assert_clear_and_fast(lambda: rabbit_connection(ep), "rabbitmq", ep)
    with frozen("kafka"):
        assert_clear_and_fast(lambda: kafka_producer(ep=ep), "kafka", ep)


def test_a_notebook_sees_a_short_message_not_a_traceback(ep):
    error = BrokerUnavailable("Redis", "127.0.0.1:1", "connection refused", ep.start_command())
    lines = error._render_traceback_()
    assert len(lines) == 1 and "Redis is not answering at 127.0.0.1:1" in lines[0]
