"""Checks for lab 05 (replay): they run the learner's functions against the real Kafka broker.

- check_at_least_once(make_consumer, consume_and_commit): a consumer crashes in the middle of a batch;
  after a restart every record must have been handled (no loss) and the group's committed offsets must
  reach the log end.
- check_rebuild(rebuild_balances): balances rebuilt by replaying an account-event topic must match, also
  when called a second time after more events were appended (a replay starts from the beginning).
"""
from __future__ import annotations

import random

from .. import kafka_tools as kt
from ..clients import kafka_admin, kafka_producer
from ..runs import run_name
from .checking import LabCheckFailed, call_learner, check, passed


class SimulatedCrash(Exception):
    """Raised by the check's handler in the middle of a batch: the worker 'dies' there."""


def _close(consumer) -> None:
    try:
        consumer.close()
    except RuntimeError:  # the learner closed it already
        pass


def _consumer_or_fail(make_consumer, group: str):
    consumer = call_learner(make_consumer, group, hint="make_consumer(group_id) should return "
                            "kafka_consumer(group_id, ...) with the settings you need.")
    check(consumer is not None and hasattr(consumer, "poll") and hasattr(consumer, "commit"),
          f"make_consumer returned {consumer!r}, not a Kafka consumer",
          "Return the consumer: `return kafka_consumer(group_id, **{...})`.")
    return consumer


def check_at_least_once(make_consumer, consume_and_commit, records: int = 10, crash_at: int = 4) -> dict:
    """Produce `records` payments; run the learner's consumer with a handler that crashes on the
    `crash_at`-th record; restart it; every payment must end up handled and committed."""
    admin = kafka_admin()
    topic = kt.create_topic(admin, run_name("lab05-payments"), partitions=1)
    group = run_name("lab05-billing")
    try:
        producer = kafka_producer()
        kt.produce(producer, topic, [("acct", f"payment {i}") for i in range(records)])
        handled: list[str] = []

        def crashing_handle(msg):
            if len(handled) + 1 == crash_at:
                raise SimulatedCrash(f"worker died while handling {msg.value().decode()}")
            handled.append(msg.value().decode())

        first = _consumer_or_fail(make_consumer, group)
        try:
            call_learner(consume_and_commit, first, topic, crashing_handle, records, 10.0,
                         hint="Subscribe, poll in a loop bounded by max_messages and seconds, call handle(msg), "
                              "then commit that message. Let exceptions from handle() propagate.")
        except LabCheckFailed as failed:
            if not isinstance(failed.__cause__, SimulatedCrash):
                raise
        else:
            raise LabCheckFailed(
                "consume_and_commit returned normally although handle() raised SimulatedCrash",
                "Do not swallow exceptions from handle(): a crash must stop the worker before it commits.")
        finally:
            _close(first)  # the crash: the worker is gone; with auto commit, close() commits what poll() returned

        check(len(handled) == crash_at - 1,
              f"before the crash {len(handled)} record(s) were handled, expected {crash_at - 1}",
              "Call handle(msg) once for each message poll() returns, in order.")
        restarted = _consumer_or_fail(make_consumer, group)
        try:
            call_learner(consume_and_commit, restarted, topic, lambda m: handled.append(m.value().decode()),
                         records - crash_at + 1, 10.0, hint="The restarted consumer should resume where the group "
                         "committed last and handle the remaining records.")
            missing = {f"payment {i}" for i in range(records)} - set(handled)
            if missing:  # a learner who commits in batches may need one more pass to get the rest
                call_learner(consume_and_commit, restarted, topic, lambda m: handled.append(m.value().decode()),
                             records, 3.0, hint="")
        finally:
            _close(restarted)
        missing = sorted({f"payment {i}" for i in range(records)} - set(handled), key=lambda v: int(v.split()[1]))
        check(not missing,
              f"lost after the crash: {missing} were never handled, their offsets were committed anyway",
              "Commit only after handle(msg) has returned: set enable.auto.commit=False in make_consumer "
              "(auto commit, and close(), commit what poll() returned) and call "
              "consumer.commit(message=msg, asynchronous=False) after handle(msg).")
        table = kt.offsets_table(admin, topic, [group])
        lag = table["groups"][group]["lag"]
        check(lag == 0,
              f"after the restart the group still has lag {lag}: the handled records were not committed",
              "Call consumer.commit(message=msg, asynchronous=False) after each handle(msg), or the next "
              "restart handles everything again.")
        duplicates = len(handled) - len(set(handled))
        passed(f"no payment lost across a crash ({records} records, {duplicates} handled twice), committed to the end")
        return {"handled": handled, "duplicates": duplicates, "offsets": table}
    finally:
        kt.delete_topics(admin, [topic])
        kt.delete_groups(admin, [group])


EVENT_KINDS = ("deposit", "withdraw")


def _events(rng: random.Random, accounts, count: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(count):
        account = rng.choice(accounts)
        out.append((account, f"{rng.choice(EVENT_KINDS)} {rng.randint(1, 50)}"))
    return out


def expected_balances(events) -> dict[str, int]:
    balances: dict[str, int] = {}
    for account, event in events:
        kind, amount = event.split()
        balances[account] = balances.get(account, 0) + (int(amount) if kind == "deposit" else -int(amount))
    return balances


def check_rebuild(rebuild_balances, events: int = 24, more: int = 6, seed: int | None = None) -> dict:
    """Produce account events on 3 partitions; rebuild_balances(topic) must return the balance of every
    account; after more events, a second replay must include the old and the new ones."""
    rng = random.Random(seed)
    accounts = ["alice", "bob", "carol", "dave"]
    admin = kafka_admin()
    topic = kt.create_topic(admin, run_name("lab05-accounts"), partitions=3)
    try:
        producer = kafka_producer()
        history = _events(rng, accounts, events)
        kt.produce(producer, topic, history)
        hint = ("Replay from the start: a fresh group id (bl.run_name) with auto.offset.reset=earliest, or assign "
                "every partition at OFFSET_BEGINNING; stop when every partition is read to its end "
                "(enable.partition.eof=True); fold each event with apply_event.")
        got = call_learner(rebuild_balances, topic, hint=hint)
        want = expected_balances(history)
        check(isinstance(got, dict), f"rebuild_balances returned {type(got).__name__}, expected a dict",
              "Return the balances as {account: balance}.")
        if not got:
            raise LabCheckFailed("rebuild_balances returned no balances although the topic holds "
                                 f"{len(history)} events", "A new group with auto.offset.reset=latest starts at "
                                 "the end of the log and sees nothing: use earliest. " + hint)
        check(got == want, f"balances {got} differ from the events' balances {want}",
              "Read every partition to its end before returning, and apply deposits (+) and withdrawals (-). "
              + hint)
        extra = _events(rng, accounts, more)
        kt.produce(producer, topic, extra)
        again = call_learner(rebuild_balances, topic, hint=hint)
        want_all = expected_balances(history + extra)
        check(again == want_all,
              f"second replay gave {again}, expected {want_all} (all {len(history) + len(extra)} events)",
              "Each replay must start from the beginning of the log: a group that committed offsets resumes "
              "after them. Use a new group id per replay (or assign partitions at OFFSET_BEGINNING).")
        passed(f"balances of {len(want_all)} accounts rebuilt from {len(history) + len(extra)} events, twice")
        return want_all
    finally:
        kt.delete_topics(admin, [topic])
