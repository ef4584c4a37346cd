"""Lab 04 (a retry ladder with dead letters): the solution passes every check, each wrong implementation in the
catalogue fails with a message that blames the right function and says why, and no check leaves a queue or an
exchange behind.  Everything runs against the real RabbitMQ of the test stack."""
import pika
import pytest

from brokerlab import rabbitmq_tools as rt
from brokerlab.labs import rabbitmq_lab
from brokerlab.labs.catalogue import Wrong, fails_right, params, passes


# --- the solution ---------------------------------------------------------------------------------------------

def declare_ladder(channel, ladder, durable=True, ttl=True, dlx_key=True, work_dlx=True, same_delay=False):
    channel.exchange_declare(ladder.work_x, "direct", durable=True)
    channel.exchange_declare(ladder.retry_x, "direct", durable=True)
    channel.exchange_declare(ladder.dead_x, "fanout", durable=True)
    channel.queue_declare(ladder.work, durable=durable,
                          arguments={"x-dead-letter-exchange": ladder.dead_x} if work_dlx else {})
    channel.queue_bind(ladder.work, ladder.work_x, "work")
    for rung, delay in enumerate(ladder.delays):
        arguments = {"x-dead-letter-exchange": ladder.work_x}
        if ttl:
            arguments["x-message-ttl"] = ladder.delays[0] if same_delay else delay
        if dlx_key:
            arguments["x-dead-letter-routing-key"] = "work"
        channel.queue_declare(ladder.wait(rung), durable=durable, arguments=arguments)
        channel.queue_bind(ladder.wait(rung), ladder.retry_x, ladder.rung_key(rung))
    channel.queue_declare(ladder.dead, durable=durable)
    channel.queue_bind(ladder.dead, ladder.dead_x)


def retries(message):
    return int(message.headers.get("retries", 0))


def _retry_copy(channel, message, ladder, rung, headers=None):
    kept = {k: v for k, v in message.headers.items() if not k.startswith("x-")}
    properties = pika.BasicProperties(headers={**kept, "retries": rung + 1} if headers is None else headers,
                                      delivery_mode=2, message_id=message.properties.message_id)
    channel.basic_publish(ladder.retry_x, ladder.rung_key(rung), message.body.encode(), properties)


def handle(channel, message, process, ladder):
    try:
        process(message.body)
    except Exception:
        rung = retries(message)
        if rung >= ladder.rungs:
            channel.basic_reject(message.delivery_tag, requeue=False)
            return
        _retry_copy(channel, message, ladder, rung)
    channel.basic_ack(message.delivery_tag)


def handle_ack_first(channel, message, process, ladder):
    try:
        process(message.body)
    except Exception:
        rung = retries(message)
        if rung >= ladder.rungs:
            channel.basic_reject(message.delivery_tag, requeue=False)
            return
        channel.basic_ack(message.delivery_tag)
        _retry_copy(channel, message, ladder, rung)
        return
    channel.basic_ack(message.delivery_tag)


def handle_once(channel, message, process, ladder, done):
    if message.properties.message_id in done:
        channel.basic_ack(message.delivery_tag)
        return
    try:
        process(message.body)
        done.add(message.properties.message_id)
    except Exception:
        rung = retries(message)
        if rung >= ladder.rungs:
            channel.basic_reject(message.delivery_tag, requeue=False)
            return
        _retry_copy(channel, message, ladder, rung)
    channel.basic_ack(message.delivery_tag)


def test_solution_passes_every_check(capsys):
    passes(rabbitmq_lab.check_declare, declare_ladder)
    passes(rabbitmq_lab.check_retries, retries)
    passes(rabbitmq_lab.check_ladder, declare_ladder, handle)
    passes(rabbitmq_lab.check_crash_between_steps, declare_ladder, handle, "publish-then-ack")
    passes(rabbitmq_lab.check_crash_between_steps, declare_ladder, handle_ack_first, "ack-then-publish")
    passes(rabbitmq_lab.check_once, declare_ladder, handle_once)
    out = capsys.readouterr().out
    assert out.count("✔") == 6 and "at-least-once" in out and "at-most-once" in out


# --- the catalogue of wrong implementations ------------------------------------------------------------------

def not_written(*args):
    raise NotImplementedError("your code here")


def declare_transient(channel, ladder):
    declare_ladder(channel, ladder, durable=False)


def declare_without_ttl(channel, ladder):
    declare_ladder(channel, ladder, ttl=False)


def declare_without_return_key(channel, ladder):
    declare_ladder(channel, ladder, dlx_key=False)


def declare_one_delay_for_all_rungs(channel, ladder):
    declare_ladder(channel, ladder, same_delay=True)


def declare_work_without_dlx(channel, ladder):
    declare_ladder(channel, ladder, work_dlx=False)


def retries_from_x_death(message):  # worked before 4.0 (3.12; 3.13.3+): the broker read a client x-death
    return sum(int(d["count"]) for d in rt.x_death(message) if d["reason"] == "expired")


def retries_from_delivery_count(message):
    return int(message.headers.get("x-delivery-count", 0))


def handle_requeue_at_once(channel, message, process, ladder):
    try:
        process(message.body)
        channel.basic_ack(message.delivery_tag)
    except Exception:
        channel.basic_nack(message.delivery_tag, requeue=True)


def handle_copy_without_count(channel, message, process, ladder):
    try:
        process(message.body)
    except Exception:
        rung = retries(message)
        if rung >= ladder.rungs:
            channel.basic_reject(message.delivery_tag, requeue=False)
            return
        _retry_copy(channel, message, ladder, rung, headers=dict(message.headers))  # x-death kept, no count
    channel.basic_ack(message.delivery_tag)


def handle_publishes_to_dlq_itself(channel, message, process, ladder):
    try:
        process(message.body)
    except Exception:
        rung = retries(message)
        if rung >= ladder.rungs:
            channel.basic_publish(ladder.dead_x, "", message.body.encode(),
                                  pika.BasicProperties(headers=message.headers, delivery_mode=2))
        else:
            _retry_copy(channel, message, ladder, rung)
    channel.basic_ack(message.delivery_tag)


def handle_one_retry_too_many(channel, message, process, ladder):
    try:
        process(message.body)
    except Exception:
        rung = retries(message)
        if rung > ladder.rungs:                       # should be >=
            channel.basic_reject(message.delivery_tag, requeue=False)
            return
        channel.basic_publish(ladder.retry_x, ladder.rung_key(min(rung, ladder.rungs - 1)), message.body.encode(),
                              pika.BasicProperties(headers={"retries": rung + 1}, delivery_mode=2))
    channel.basic_ack(message.delivery_tag)


def handle_always_first_rung(channel, message, process, ladder):
    try:
        process(message.body)
    except Exception:
        rung = retries(message)
        if rung >= ladder.rungs:
            channel.basic_reject(message.delivery_tag, requeue=False)
            return
        kept = {k: v for k, v in message.headers.items() if not k.startswith("x-")}
        channel.basic_publish(ladder.retry_x, ladder.rung_key(0), message.body.encode(),
                              pika.BasicProperties(headers={**kept, "retries": rung + 1}, delivery_mode=2))
    channel.basic_ack(message.delivery_tag)


def handle_never_acks_success(channel, message, process, ladder):
    try:
        process(message.body)
    except Exception:
        rung = retries(message)
        if rung >= ladder.rungs:
            channel.basic_reject(message.delivery_tag, requeue=False)
            return
        _retry_copy(channel, message, ladder, rung)
        channel.basic_ack(message.delivery_tag)


def handle_lets_failures_escape(channel, message, process, ladder):
    process(message.body)
    channel.basic_ack(message.delivery_tag)


def handle_settles_twice(channel, message, process, ladder):   # no return after the reject: acks it too
    try:
        process(message.body)
    except Exception:
        rung = retries(message)
        if rung >= ladder.rungs:
            channel.basic_reject(message.delivery_tag, requeue=False)
        else:
            _retry_copy(channel, message, ladder, rung)
    channel.basic_ack(message.delivery_tag)


def handle_once_without_memory(channel, message, process, ladder, done):
    handle(channel, message, process, ladder)


def handle_once_remembers_too_early(channel, message, process, ladder, done):  # marks done before the work
    if message.properties.message_id in done:
        channel.basic_ack(message.delivery_tag)
        return
    done.add(message.properties.message_id)
    handle(channel, message, process, ladder)


def handle_once_keyed_by_delivery_tag(channel, message, process, ladder, done):   # tags count per channel
    if message.delivery_tag in done:
        channel.basic_ack(message.delivery_tag)
        return
    try:
        process(message.body)
        done.add(message.delivery_tag)
    except Exception:
        rung = retries(message)
        if rung >= ladder.rungs:
            channel.basic_reject(message.delivery_tag, requeue=False)
            return
        _retry_copy(channel, message, ladder, rung)
    channel.basic_ack(message.delivery_tag)


def handle_once_skips_redelivered(channel, message, process, ladder, done):   # redelivered != processed
    if message.redelivered:
        channel.basic_ack(message.delivery_tag)
        return
    handle(channel, message, process, ladder)


CATALOGUE = [
    Wrong("declare_ladder not written", rabbitmq_lab.check_declare, (not_written,), blame="not_written",
          says=("not written", "three exchanges")),
    Wrong("transient queues", rabbitmq_lab.check_declare, (declare_transient,), blame="declare_ladder",
          says=("durable",)),
    Wrong("wait queues without a TTL never return", rabbitmq_lab.check_declare, (declare_without_ttl,),
          blame="declare_ladder", says=("never came back", "x-message-ttl")),
    Wrong("expired messages keep the rung key and route nowhere", rabbitmq_lab.check_declare,
          (declare_without_return_key,), blame="declare_ladder", says=("x-dead-letter-routing-key",)),
    Wrong("every rung has the first delay", rabbitmq_lab.check_declare, (declare_one_delay_for_all_rungs,),
          blame="declare_ladder", says=("rung 1", "delays[k]")),
    Wrong("rejects from the work queue go nowhere", rabbitmq_lab.check_declare, (declare_work_without_dlx,),
          blame="declare_ladder", says=("did not reach", "dead_x")),
    Wrong("retries counted from x-death (broken since 4.0)", rabbitmq_lab.check_retries, (retries_from_x_death,),
          blame="retries", says=("retries=3", "own")),
    Wrong("retries read from x-delivery-count", rabbitmq_lab.check_retries, (retries_from_delivery_count,),
          blame="retries", says=("returned 0", "retries")),
    Wrong("retries not written", rabbitmq_lab.check_retries, (not_written,), blame="not_written",
          says=("not written", "own header")),
    Wrong("nack with requeue retries at once, forever", rabbitmq_lab.check_ladder,
          (declare_ladder, handle_requeue_at_once), blame="handle", says=("left in the ladder", "requeue=true")),
    Wrong("retry copy without a retries count loops on rung 0", rabbitmq_lab.check_ladder,
          (declare_ladder, handle_copy_without_count), blame="handle", says=("left in the ladder", "retries + 1")),
    Wrong("publishes the final failure to the DLQ itself", rabbitmq_lab.check_ladder,
          (declare_ladder, handle_publishes_to_dlq_itself), blame="handle", says=("reject", "x-death")),
    Wrong("one retry too many", rabbitmq_lab.check_ladder, (declare_ladder, handle_one_retry_too_many),
          blame="handle", says=("retries=3",)),
    Wrong("every retry on the first rung", rabbitmq_lab.check_ladder, (declare_ladder, handle_always_first_rung),
          blame="handle", says=("rung",)),
    Wrong("a success is never acked", rabbitmq_lab.check_ladder, (declare_ladder, handle_never_acks_success),
          blame="handle", says=("left in the ladder", "neither acked nor rejected")),
    Wrong("a failure escapes handle", rabbitmq_lab.check_ladder, (declare_ladder, handle_lets_failures_escape),
          blame="handle_lets_failures_escape", says=("ProcessingFailed", "line")),
    Wrong("a rejected delivery is acked too", rabbitmq_lab.check_ladder, (declare_ladder, handle_settles_twice),
          blame="handle_settles_twice", says=("unknown delivery tag", "exactly once")),
    Wrong("no decision made", rabbitmq_lab.check_crash_between_steps, (declare_ladder, handle, None),
          blame="RETRY_ORDER", says=("decision", "duplicate")),
    Wrong("decided publish-then-ack but acks first", rabbitmq_lab.check_crash_between_steps,
          (declare_ladder, handle_ack_first, "publish-then-ack"), blame="handle", says=("lost", "before")),
    Wrong("decided ack-then-publish but publishes first", rabbitmq_lab.check_crash_between_steps,
          (declare_ladder, handle, "ack-then-publish"), blame="handle", says=("ack the original first",)),
    Wrong("handle_once forgets what it did", rabbitmq_lab.check_once, (declare_ladder, handle_once_without_memory),
          blame="handle_once", says=("message_id",)),
    Wrong("handle_once remembers before the work", rabbitmq_lab.check_once,
          (declare_ladder, handle_once_remembers_too_early), blame="handle_once", says=("after processing",)),
    Wrong("handle_once remembers delivery tags", rabbitmq_lab.check_once,
          (declare_ladder, handle_once_keyed_by_delivery_tag), blame="handle_once", says=("delivery_tag",)),
    Wrong("handle_once skips every redelivered message", rabbitmq_lab.check_once,
          (declare_ladder, handle_once_skips_redelivered), blame="handle_once", says=("died before the work",)),
]


@pytest.mark.parametrize("wrong", params(CATALOGUE))
def test_wrong_implementation_fails_with_the_right_message(wrong):
    fails_right(wrong)


def test_the_catalogue_covers_every_check():
    checked = {w.check for w in CATALOGUE}
    assert {rabbitmq_lab.check_declare, rabbitmq_lab.check_retries, rabbitmq_lab.check_ladder,
            rabbitmq_lab.check_crash_between_steps, rabbitmq_lab.check_once} <= checked
    assert len(CATALOGUE) >= 10
