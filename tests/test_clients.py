"""The ready-made clients talk to the real brokers and carry short timeouts."""
from brokerlab import kafka_tools, run_name
from brokerlab.clients import kafka_admin, kafka_consumer, kafka_producer, rabbit_api, rabbit_connection, redis_client


def test_redis_round_trip_and_no_hidden_retries():
    r = redis_client()
    key = run_name("test-clients")
    try:
        r.lpush(key, "a", "b")
        assert r.rpop(key) == "a"
    finally:
        r.delete(key)
    connection_kwargs = r.connection_pool.connection_kwargs
    assert connection_kwargs["socket_timeout"] <= 3 and connection_kwargs["socket_connect_timeout"] <= 2
    assert r.get_retry()._retries == 0


def test_rabbit_round_trip_and_management_api():
    connection = rabbit_connection()
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = run_name("test-clients")
        channel.queue_declare(queue, auto_delete=False)
        channel.basic_publish("", queue, b"x")
        assert channel.basic_get(queue, auto_ack=True)[2] == b"x"
        names = [q["name"] for q in rabbit_api("queues")]
        assert queue in names  # the management API sees what AMQP declared
        channel.queue_delete(queue)
    finally:
        connection.close()
    assert connection.is_closed


def test_kafka_produce_consume_round_trip():
    admin = kafka_admin()
    topic = run_name("test-clients")
    kafka_tools.create_topic(admin, topic, partitions=1)
    try:
        producer = kafka_producer()
        producer.produce(topic, key="k", value="v")
        assert producer.flush(10) == 0
        consumer = kafka_consumer(run_name("g"))
        consumer.subscribe([topic])
        messages = consumer.consume(num_messages=1, timeout=15)
        consumer.close()
        assert [(m.key(), m.value()) for m in messages] == [(b"k", b"v")]
    finally:
        kafka_tools.delete_topics(admin, [topic])


def test_a_block_longer_than_the_socket_timeout_is_explained():
    import pytest
    from brokerlab import BrokerUnavailable

    r = redis_client(socket_timeout=0.5)
    with pytest.raises(BrokerUnavailable, match="BRPOP within socket_timeout=0.5"):
        r.brpop(run_name("never-filled"), timeout=2)
