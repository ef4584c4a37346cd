"""Lab 00 checks against the real brokers: the solution passes; a catalogue of wrong implementations, each
failing with the right message and blaming the right function; nothing is left behind."""
import pika
import pytest

from brokerlab.labs import orientation_lab as lab00
from brokerlab.labs.catalogue import Wrong, fails_right, params, passes


# --- the solution -------------------------------------------------------------------------------------

def enqueue(r, key, text):
    r.lpush(key, text)


def dequeue(r, key):
    return r.rpop(key)


def declare_durable(channel, name):
    channel.queue_declare(queue=name, durable=True)


def declare_exclusive(channel, name):
    channel.queue_declare(queue=name, exclusive=True)


PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


def publish(channel, queue, body):
    channel.basic_publish(exchange="", routing_key=queue, body=body, mandatory=True, properties=PERSISTENT)


def produce_event(producer, topic, key, value):
    producer.produce(topic, key=key, value=value)
    left = producer.flush(10)
    if left:
        raise RuntimeError(f"{left} event(s) not delivered")


def produce_all(producer, topic, events):
    reports = [None] * len(events)

    def reporter(slot):
        def on_delivery(err, msg):
            reports[slot] = err if err is not None else (msg.partition(), msg.offset())
        return on_delivery

    for slot, (key, value) in enumerate(events):
        producer.produce(topic, key=key, value=value, on_delivery=reporter(slot))
    producer.flush(10)
    return reports


def test_the_solution_passes_every_check(capsys):
    passes(lab00.check_redis_queue, enqueue, dequeue)
    passes(lab00.check_rabbitmq, declare_durable, publish, "durable")
    passes(lab00.check_rabbitmq, declare_exclusive, publish, "exclusive")
    passes(lab00.check_kafka_produce, produce_event)
    passes(lab00.check_produce_all, produce_all)
    assert capsys.readouterr().out.count("✔") == 5


# --- wrong implementations ----------------------------------------------------------------------------

def not_written(*args):
    raise NotImplementedError("your code here")


def enqueue_with_set(r, key, text):
    r.set(key, text)


def dequeue_lifo(r, key):
    return r.lpop(key)


def dequeue_peek(r, key):
    return r.lindex(key, -1)


def dequeue_empty_string(r, key):
    return r.rpop(key) or ""


def declare_transient(channel, name):
    channel.queue_declare(queue=name)


def publish_not_mandatory(channel, queue, body):
    channel.basic_publish(exchange="", routing_key=queue, body=body, properties=PERSISTENT)


def publish_transient(channel, queue, body):
    channel.basic_publish(exchange="", routing_key=queue, body=body, mandatory=True)


def publish_swallows_unroutable(channel, queue, body):
    try:
        publish(channel, queue, body)
    except pika.exceptions.UnroutableError:
        pass


def publish_to_amq_direct(channel, queue, body):
    channel.basic_publish(exchange="amq.direct", routing_key=queue, body=body, mandatory=True, properties=PERSISTENT)


def produce_without_flush(producer, topic, key, value):
    producer.produce(topic, key=key, value=value)


def produce_flush_zero(producer, topic, key, value):
    producer.produce(topic, key=key, value=value)
    producer.flush(0)


def produce_without_key(producer, topic, key, value):
    producer.produce(topic, value=value)
    producer.flush(10)


def produce_swapped(producer, topic, key, value):
    producer.produce(topic, key=value, value=key)
    producer.flush(10)


def produce_round_robin(producer, topic, key, value, _next=[0]):
    _next[0] += 1
    producer.produce(topic, key=key, value=value, partition=_next[0] % 3)
    producer.flush(10)


def produce_all_flush_each(producer, topic, events):
    positions = []
    for key, value in events:
        found = []
        producer.produce(topic, key=key, value=value,
                         on_delivery=lambda err, msg: found.append((msg.partition(), msg.offset())))
        producer.flush(10)
        positions.append(found[0])
    return positions


def produce_all_guessed_positions(producer, topic, events):
    for key, value in events:
        producer.produce(topic, key=key, value=value)
    producer.flush(10)
    return [(0, i) for i in range(len(events))]


REDIS, RABBIT = lab00.check_redis_queue, lab00.check_rabbitmq
KAFKA, STRETCH = lab00.check_kafka_produce, lab00.check_produce_all

CATALOGUE = [
    Wrong("redis: enqueue not written", REDIS, (not_written, dequeue), "not_written", ("not written",)),
    Wrong("redis: enqueue overwrites with SET", REDIS, (enqueue_with_set, dequeue), "enqueue", ("not a list",)),
    Wrong("redis: dequeue from the same end (LIFO)", REDIS, (enqueue, dequeue_lifo), "dequeue", ("first out",)),
    Wrong("redis: dequeue peeks without removing", REDIS, (enqueue, dequeue_peek), "dequeue", ("still holds",)),
    Wrong("redis: dequeue invents '' for empty", REDIS, (enqueue, dequeue_empty_string), "dequeue", ("None",)),
    Wrong("rabbitmq: no QUEUE_KIND decision", RABBIT, (declare_durable, publish, None), "QUEUE_KIND",
          ("decision",)),
    Wrong("rabbitmq: transient non-exclusive queue", RABBIT, (declare_transient, publish, "durable"),
          "declare_queue", ("RabbitMQ 4", "transient")),
    Wrong("rabbitmq: exclusive queue though durable was decided", RABBIT, (declare_exclusive, publish, "durable"),
          "declare_queue", ("you chose",)),
    Wrong("rabbitmq: a confirm taken for 'queued' (no mandatory)", RABBIT,
          (declare_durable, publish_not_mandatory, "durable"), "publish", ("does not exist", "confirm")),
    Wrong("rabbitmq: unroutable swallowed", RABBIT, (declare_exclusive, publish_swallows_unroutable, "exclusive"),
          "publish", ("returned normally",)),
    Wrong("rabbitmq: transient message in a durable queue", RABBIT, (declare_durable, publish_transient, "durable"),
          "publish", ("delivery_mode", "persistent")),
    Wrong("rabbitmq: publishes to amq.direct (no binding)", RABBIT, (declare_durable, publish_to_amq_direct,
                                                                   "durable"),
          "publish_to_amq_direct", ("UnroutableError",)),
    Wrong("kafka: no flush", KAFKA, (produce_without_flush,), "produce_event", ("held 0",)),
    Wrong("kafka: flush(0) does not wait", KAFKA, (produce_flush_zero,), "produce_event", ("held 0",)),
    Wrong("kafka: key dropped", KAFKA, (produce_without_key,), "produce_event", ("key",)),
    Wrong("kafka: key and value swapped", KAFKA, (produce_swapped,), "produce_event", ("'opened', 'account-1'",)),
    Wrong("kafka: partition chosen round robin, not by key", KAFKA, (produce_round_robin,), "produce_event",
          ("same partition",)),
    Wrong("stretch: flush after each event", STRETCH, (produce_all_flush_each,), "produce_all", ("flush()",)),
    Wrong("stretch: positions guessed, not reported", STRETCH, (produce_all_guessed_positions,), "produce_all",
          ("delivery report",)),
]


def test_the_catalogue_covers_the_bug_classes_of_issue_13():
    assert len(CATALOGUE) >= 10
    names = " ".join(w.name for w in CATALOGUE)
    for bug in ("key dropped", "key and value swapped", "transient non-exclusive", "no mandatory"):
        assert bug in names


@pytest.mark.parametrize("wrong", params(CATALOGUE))
def test_a_wrong_implementation_fails_with_the_right_message(wrong):
    fails_right(wrong)
