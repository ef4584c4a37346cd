"""Lab 05 checks against the real Kafka: the solution passes; a catalogue of wrong implementations, each
failing with the right message and blaming the right function; no topic or group is left behind."""
import time

import pytest
from confluent_kafka import KafkaError, TopicPartition

import brokerlab as bl
from brokerlab import kafka_tools as kt
from brokerlab.clients import kafka_admin, kafka_consumer
from brokerlab.labs import kafka_lab
from brokerlab.labs.catalogue import Wrong, fails_right, params, passes


# --- the solution -------------------------------------------------------------------------------------

def make_consumer(group_id):
    return kafka_consumer(group_id, **{"enable.auto.commit": False})


def _loop(consumer, topic, handle, max_messages, seconds, every=1, commit_first=False, commit=None,
          final=True, check_errors=True):
    consumer.subscribe([topic])
    deadline = time.monotonic() + seconds
    handled, last = 0, None
    commit = commit or (lambda msg: consumer.commit(message=msg, asynchronous=False))
    while handled < max_messages and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None or (check_errors and msg.error()):
            continue
        if commit_first:
            commit(msg)
        handle(msg)
        handled, last = handled + 1, msg
        if not commit_first and handled % every == 0:
            commit(msg)
    if final and last is not None and handled % every:
        consumer.commit(asynchronous=False)
    return handled


def consume(consumer, topic, handle, max_messages, seconds):
    return _loop(consumer, topic, handle, max_messages, seconds)


def consume_in_threes(consumer, topic, handle, max_messages, seconds):
    return _loop(consumer, topic, handle, max_messages, seconds, every=3)


def apply_event(balances, account, event):
    kind, amount = event.split()
    balances[account] = balances.get(account, 0) + (int(amount) if kind == "deposit" else -int(amount))
    return balances


def make_rebuild(group_id=None, reset="earliest", commit=False, stop_at_first_eof=False, decode_key=True,
                 check_errors=True, fold=None, max_events=None):
    fold = fold or apply_event

    def rebuild_balances(topic):
        consumer = kafka_consumer(group_id or bl.run_name("lab05-test-rebuild"),
                                  **{"auto.offset.reset": reset, "enable.partition.eof": True,
                                     "enable.auto.commit": False})
        try:
            partitions = len(consumer.list_topics(topic, timeout=5).topics[topic].partitions)
            consumer.subscribe([topic])
            balances, at_end, seen = {}, set(), 0
            deadline = time.monotonic() + 8
            while len(at_end) < partitions and time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error() and check_errors:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition())
                        if stop_at_first_eof:
                            break
                    continue
                key = msg.key().decode() if decode_key else msg.key()
                fold(balances, key, msg.value().decode())
                seen += 1
                if max_events and seen >= max_events:
                    break
            if commit:
                consumer.commit(asynchronous=False)
            return balances
        finally:
            consumer.close()
    return rebuild_balances


rebuild_balances = make_rebuild()


def make_storing_consumer(group_id):
    return kafka_consumer(group_id, **{"enable.auto.commit": True, "enable.auto.offset.store": False})


def consume_storing(consumer, topic, handle, max_messages, seconds):
    return _loop(consumer, topic, handle, max_messages, seconds, final=False,
                 commit=lambda msg: consumer.store_offsets(message=msg))


def test_the_solution_passes_every_check_and_leaves_no_topic_or_group(capsys):
    bl.require("kafka")
    capsys.readouterr()
    outcomes = [passes(kafka_lab.check_at_least_once, make_consumer, consume, 1)]
    assert outcomes[0]["duplicates"] == 0 and not outcomes[0]["lost"]
    outcomes.append(passes(kafka_lab.check_at_least_once, make_consumer, consume_in_threes, 3))
    passes(kafka_lab.check_rebuild, rebuild_balances, apply_event, seed=1)
    outcomes.append(passes(kafka_lab.check_stored_offsets, make_storing_consumer, consume_storing))
    assert capsys.readouterr().out.count("✔") == 4
    admin = kafka_admin()
    groups = {g.group_id for g in admin.list_consumer_groups(request_timeout=10).result(10).valid}
    left = [g for g in groups if g.startswith("bl-lab05-test-rebuild-") or g in {o["group"] for o in outcomes}]
    assert left == [], f"lab 05 checks left consumer groups behind: {left}"
    assert not {o["topic"] for o in outcomes} & set(kt.topic_names(admin))


# --- wrong implementations ----------------------------------------------------------------------------

def not_written(*args):
    raise NotImplementedError("your code here")


def auto_commit_consumer(group_id):
    return kafka_consumer(group_id, **{"enable.auto.commit": True, "auto.commit.interval.ms": 100})


def eof_consumer(group_id):
    return kafka_consumer(group_id, **{"enable.auto.commit": False, "enable.partition.eof": True})


def latest_consumer(group_id):
    return kafka_consumer(group_id, **{"enable.auto.commit": False, "auto.offset.reset": "latest"})


def never_subscribes(consumer, topic, handle, max_messages, seconds):
    deadline, handled = time.monotonic() + seconds, 0
    while handled < max_messages and time.monotonic() < deadline:
        msg = consumer.poll(0.2)         # no subscribe(): nothing is ever assigned
        if msg is None or msg.error():
            continue
        handle(msg)
        consumer.commit(message=msg, asynchronous=False)
        handled += 1
    return handled


def commit_before_handling(consumer, topic, handle, max_messages, seconds):
    return _loop(consumer, topic, handle, max_messages, seconds, commit_first=True)


def never_commits(consumer, topic, handle, max_messages, seconds):
    return _loop(consumer, topic, handle, max_messages, seconds, commit=lambda msg: None, final=False)


def swallows_the_crash(consumer, topic, handle, max_messages, seconds):
    try:
        return _loop(consumer, topic, handle, max_messages, seconds)
    except Exception:
        return 0


def commits_the_offset_of_the_message(consumer, topic, handle, max_messages, seconds):
    return _loop(consumer, topic, handle, max_messages, seconds, final=False, commit=lambda msg: consumer.commit(
        offsets=[TopicPartition(msg.topic(), msg.partition(), msg.offset())], asynchronous=False))


def commits_partition_zero_only(consumer, topic, handle, max_messages, seconds):
    return _loop(consumer, topic, handle, max_messages, seconds, final=False, commit=lambda msg: consumer.commit(
        offsets=[TopicPartition(msg.topic(), 0, msg.offset() + 1)], asynchronous=False))


def forgets_the_last_batch(consumer, topic, handle, max_messages, seconds):
    return _loop(consumer, topic, handle, max_messages, seconds, every=4, final=False)


def hands_errors_to_handle(consumer, topic, handle, max_messages, seconds):
    return _loop(consumer, topic, handle, max_messages, seconds, check_errors=False)


def unwritten_apply(balances, account, event):
    raise NotImplementedError("your code here")


def swapped_apply(balances, account, event):
    kind, amount = event.split()
    balances[account] = balances.get(account, 0) + (int(amount) if kind == "withdraw" else -int(amount))
    return balances


def storing_consumer_with_auto_store(group_id):
    return kafka_consumer(group_id, **{"enable.auto.commit": True})


def storing_consumer_without_auto_commit(group_id):
    return kafka_consumer(group_id, **{"enable.auto.commit": False, "enable.auto.offset.store": False})


def store_before_handling(consumer, topic, handle, max_messages, seconds):
    return _loop(consumer, topic, handle, max_messages, seconds, final=False, commit_first=True,
                 commit=lambda msg: consumer.store_offsets(message=msg))


def stores_the_offset_of_the_message(consumer, topic, handle, max_messages, seconds):
    return _loop(consumer, topic, handle, max_messages, seconds, final=False, commit=lambda msg: consumer.store_offsets(
        offsets=[TopicPartition(msg.topic(), msg.partition(), msg.offset())]))


ALO = kafka_lab.check_at_least_once
REBUILD = kafka_lab.check_rebuild
STORED = kafka_lab.check_stored_offsets

CATALOGUE = [
    Wrong("consumer: make_consumer not written", ALO, (not_written, consume, 1), "not_written", ("not written",)),
    Wrong("consumer: no COMMIT_EVERY decision", ALO, (make_consumer, consume, None), "COMMIT_EVERY", ("decision",)),
    Wrong("consumer: commits before handling", ALO, (make_consumer, commit_before_handling, 1), "commit_before_handling",
          ("lost", "finished")),
    Wrong("consumer: auto commit commits what poll returned", ALO, (auto_commit_consumer, consume, 1),
          "auto_commit_consumer", ("lost", "setting")),
    Wrong("consumer: a new group that starts at latest", ALO, (latest_consumer, consume, 1), "consume",
          ("only 0 of", "auto.offset.reset")),
    Wrong("consumer: never subscribes", ALO, (make_consumer, never_subscribes, 1), "never_subscribes",
          ("only 0 of", "subscribe")),
    Wrong("consumer: never commits", ALO, (make_consumer, never_commits, 1), "never_commits", ("short of the end",)),
    Wrong("consumer: swallows the crash", ALO, (make_consumer, swallows_the_crash, 1), "swallows_the_crash",
          ("returned normally",)),
    Wrong("consumer: commits msg.offset() (off by one)", ALO, (make_consumer, commits_the_offset_of_the_message, 1),
          "commits_the_offset_of_the_message", ("short of the end", "next message")),
    Wrong("consumer: commits partition 0 only", ALO, (make_consumer, commits_partition_zero_only, 1), "commits_partition_zero_only",
          ("short of the end", "every partition")),
    Wrong("consumer: batch commits forget the last batch", ALO, (make_consumer, forgets_the_last_batch, 4),
          "forgets_the_last_batch", ("short of the end",)),
    Wrong("consumer: COMMIT_EVERY=3 but commits every message", ALO, (make_consumer, consume, 3), "consume",
          ("COMMIT_EVERY=3", "commit()")),
    Wrong("consumer: hands end-of-partition events to handle", ALO, (eof_consumer, hands_errors_to_handle, 1),
          "hands_errors_to_handle", ("not a message", "msg.error()")),
    Wrong("rebuild: apply_event not written (called from rebuild)", REBUILD,
          (make_rebuild(fold=unwritten_apply), unwritten_apply), "unwritten_apply", ("not written",)),
    Wrong("rebuild: apply_event with signs swapped", REBUILD, (rebuild_balances, swapped_apply), "apply_event",
          ("deposit",)),
    Wrong("rebuild: keys left as bytes", REBUILD, (make_rebuild(decode_key=False), apply_event), "rebuild_balances",
          ("bytes", "decode")),
    Wrong("rebuild: stops at the first partition's end", REBUILD, (make_rebuild(stop_at_first_eof=True),
                                                                   apply_event),
          "rebuild_balances", ("partition", "every partition")),
    Wrong("rebuild: reads a fixed number of events", REBUILD, (make_rebuild(max_events=20), apply_event),
          "rebuild_balances", ("wrong balances",)),
    Wrong("rebuild: starts at latest", REBUILD, (make_rebuild(reset="latest"), apply_event), "rebuild_balances",
          ("no balances", "start reading")),
    Wrong("rebuild: one fixed group resumes after its commits", REBUILD,
          (make_rebuild(group_id=bl.run_name("lab05-fixed"), commit=True), apply_event), "rebuild_balances",
          ("second replay", "beginning")),
    Wrong("rebuild: does not look at msg.error()", REBUILD, (make_rebuild(check_errors=False), apply_event),
          "rebuild_balances", ("raised",)),
    Wrong("stretch: commits instead of storing offsets", STORED, (make_consumer, consume), "consume",
          ("commit()",)),
    Wrong("stretch: poll stores offsets automatically", STORED, (storing_consumer_with_auto_store, consume_storing),
          "storing_consumer_with_auto_store", ("refused", "turn that off")),
    Wrong("stretch: stores before handling", STORED, (make_storing_consumer, store_before_handling),
          "store_before_handling", ("lost",)),
    Wrong("stretch: stores msg.offset() (off by one)", STORED,
          (make_storing_consumer, stores_the_offset_of_the_message),
          "stores_the_offset_of_the_message", ("short of the end", "next message")),
    Wrong("stretch: stored offsets never committed", STORED, (storing_consumer_without_auto_commit, consume_storing),
          "storing_consumer_without_auto_commit", ("short of the end", "automatic commits")),
]


def test_the_catalogue_covers_the_bug_classes_of_issue_13():
    assert len(CATALOGUE) >= 10
    names = " ".join(w.name for w in CATALOGUE)
    for bug in ("first partition's end", "bytes", "apply_event not written"):
        assert bug in names


@pytest.mark.parametrize("wrong", params(CATALOGUE))
def test_a_wrong_implementation_fails_with_the_right_message(wrong):
    fails_right(wrong)
