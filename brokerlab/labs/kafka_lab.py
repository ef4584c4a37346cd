"""Checks for lab 05 (replay), against the real Kafka broker.

The learner writes:

    make_consumer(group_id) -> Consumer
    consume(consumer, topic, handle, max_messages, seconds)   handle each message, commit after handling;
                                                              an exception from handle propagates (a crash)
    COMMIT_EVERY = n                                          a design decision: commit once per n messages
    apply_event(balances, account, event) / rebuild_balances(topic) -> {account: balance}
    stretch: make_storing_consumer / consume_storing          store_offsets after handling, no commit() calls

Topics have partitions of very different sizes, one of them empty.  Every check deletes its topic and
its consumer groups, including the groups the learner's rebuild created (found as the groups that
appeared during the check and either committed offsets on the check's per-run topic or hold nothing).
"""
from __future__ import annotations

import random
import time

from .. import kafka_tools as kt
from ..clients import kafka_admin, kafka_producer
from .checking import Lab, LabCheckFailed, call, expect, passed
from .faults import SimulatedCrash

lab = Lab("05 · replay")
hint = lab.hint

PAYMENTS = {0: 9, 1: 0, 2: 3}   # partition -> records: very different sizes, one empty
CRASH_AT = 7                     # handle() raises on the 7th message: 6 were handled


# --- plumbing ---------------------------------------------------------------------------------------

class WatchedConsumer:
    """The learner's consumer, passed through unchanged, counting the calls that decide what is committed."""

    def __init__(self, consumer, made_by: str = "make_consumer"):
        self._consumer = consumer
        self._made_by = made_by
        self.commits = 0
        self.stores = 0

    def commit(self, *args, **kwargs):
        self.commits += 1
        return self._consumer.commit(*args, **kwargs)

    def store_offsets(self, *args, **kwargs):
        from confluent_kafka import KafkaError, KafkaException

        self.stores += 1
        try:
            return self._consumer.store_offsets(*args, **kwargs)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._INVALID_ARG:
                raise
            raise LabCheckFailed(f"store_offsets() was refused: {exc.args[0].str()}",
                                 "The consumer refuses offsets from you while it stores every offset poll() returns "
                                 "by itself. Turn that off when you make the consumer.", function=self._made_by) \
                from None

    def __getattr__(self, name):
        return getattr(self._consumer, name)


def _close(consumer) -> None:
    try:
        consumer.close()
    except RuntimeError:  # the learner closed it already
        pass


def _groups(admin) -> set[str]:
    return {g.group_id for g in admin.list_consumer_groups(request_timeout=10).result(10).valid}


def _delete_groups(admin, groups, wait_for_members: float = 20.0) -> None:
    """Delete groups, retrying while the coordinator moves or loads (NOT_COORDINATOR after a fresh start) and,
    for up to `wait_for_members` seconds, while a just-closed member is still leaving (NON_EMPTY_GROUP)."""
    from confluent_kafka import KafkaException

    pending = [g for g in groups if g]
    started = time.monotonic()
    while pending:
        retry = []
        for group, future in admin.delete_consumer_groups(pending, request_timeout=10).items():
            try:
                future.result(10)
            except KafkaException as exc:
                name = exc.args[0].name()
                waited = time.monotonic() - started
                if name in ("NOT_COORDINATOR", "COORDINATOR_LOAD_IN_PROGRESS", "COORDINATOR_NOT_AVAILABLE") \
                        and waited < 20.0:
                    retry.append(group)
                elif name == "NON_EMPTY_GROUP" and waited < wait_for_members:
                    retry.append(group)
                elif name not in ("GROUP_ID_NOT_FOUND", "NON_EMPTY_GROUP"):
                    raise
        pending = retry
        if pending:
            time.sleep(0.2)


def _learner_groups(admin, candidates, topic: str) -> tuple[list[str], list[str]]:
    """Of the groups that appeared during a check, those that are the check's: (groups that committed offsets
    on its per-run topic, empty groups holding no offsets at all: nothing anyone needs)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    with_offsets, without = [], []
    for group in sorted(candidates):
        try:
            result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                       request_timeout=10)[group].result(10)
            topics = {tp.topic for tp in result.topic_partitions if tp.offset >= 0}
            if topics == {topic}:
                with_offsets.append(group)
            elif not topics and kt.describe_group(admin, group).state.upper() == "EMPTY":
                without.append(group)
        except Exception:  # noqa: BLE001 - deleted meanwhile by whoever made it
            continue
    return with_offsets, without


def _make_topic(admin, topic_name: str, layout: dict[int, list[tuple[str, str]]]) -> str:
    topic = kt.create_topic(admin, lab.scratch(topic_name, kind="topic"), partitions=len(layout))
    producer = kafka_producer()
    for partition, records in layout.items():
        if records:
            kt.produce(producer, topic, records, partition=partition)
    return topic


def _consumer_from(make_consumer, group: str):
    consumer = call(make_consumer, group)
    name = getattr(make_consumer, "__name__", "make_consumer")
    expect(consumer is not None and hasattr(consumer, "poll") and hasattr(consumer, "commit"),
           f"{name} returned {consumer!r}, not a Kafka consumer", "Return the consumer you created.", blame=name)
    return WatchedConsumer(consumer, name)


def _remaining(admin, group: str, topic: str) -> int:
    table = kt.offsets_table(admin, topic, [group])
    return table["groups"][group]["lag"]


def _crash_and_restart(make_consumer, consume, topic_name: str) -> dict:
    """Run consume with a handler that crashes on message CRASH_AT, close the consumer, restart from the
    group's committed offsets, and report what happened."""
    consume_name = getattr(consume, "__name__", "consume")
    admin = kafka_admin()
    payments = {p: [(f"acct-{p}", f"payment {p}-{i}") for i in range(n)] for p, n in PAYMENTS.items()}
    everything = {value for records in payments.values() for _, value in records}
    topic = _make_topic(admin, topic_name, payments)
    group = lab.scratch(topic_name + "-group", kind="group")
    try:
        handled: list[str] = []

        def handle(msg):
            if msg.error() is not None:
                raise LabCheckFailed(f"{consume_name} passed an event that is not a message to handle(): "
                                     f"{msg.error()}", "poll() also returns events (errors, end of partition): "
                                     "look at msg.error() before using a message.", function=consume_name)
            if len(handled) + 1 == CRASH_AT:
                raise SimulatedCrash(f"the worker died while handling {msg.value().decode()}")
            handled.append(msg.value().decode())

        first = _consumer_from(make_consumer, group)
        try:
            call(consume, first, topic, handle, len(everything), 10.0, passthrough=(SimulatedCrash,))
        except SimulatedCrash:
            pass
        else:
            if len(handled) < CRASH_AT - 1:
                # handle() never got to raise: the consumer read too little (started at the end, or gave up early)
                raise LabCheckFailed(
                    f"{consume_name} returned after handing only {len(handled)} of the {len(everything)} payments "
                    f"already in the topic to handle() (max_messages={len(everything)}, seconds=10)",
                    "The payments were in the topic before your consumer joined. Did consume subscribe to the "
                    "topic? Where does a new group start reading (auto.offset.reset, in make_consumer)? And stop at "
                    "max_messages HANDLED messages, not after that many polls.", function=consume_name)
            raise LabCheckFailed(f"{consume_name} returned normally although handle() raised on message "
                                 f"{CRASH_AT} ({len(handled)} handled)",
                                 "An exception in handle() is the crash: let it propagate, so nothing after it "
                                 "(a commit) runs.", function=consume_name)
        finally:
            # the process is gone. close() is what makes this deterministic: with auto commit on, it commits
            # what poll() returned, as the periodic auto commit would have done sooner or later
            _close(first)
        expect(len(handled) == CRASH_AT - 1, f"{consume_name} called handle() successfully {len(handled)} times "
               f"before the crash, expected {CRASH_AT - 1}", "Call handle(msg) once for each message, in order.",
               blame=consume_name)
        before_restart = dict(first_commits=first.commits, first_stores=first.stores)
        remaining = _remaining(admin, group, topic)
        restarted = _consumer_from(make_consumer, group)
        try:
            if remaining:
                call(consume, restarted, topic, lambda m: handled.append(m.value().decode()), remaining, 15.0)
        finally:
            _close(restarted)
        lost = sorted(everything - set(handled))
        return {"topic": topic, "group": group, "handled": handled, "lost": lost,
                "lag": _remaining(admin, group, topic), "total": len(everything),
                "duplicates": len(handled) - len(set(handled)), "commits": restarted.commits,
                "stores": restarted.stores, **before_restart}
    finally:
        kt.delete_topics(admin, [topic])
        _delete_groups(admin, [group])


# --- part 1: at least once ------------------------------------------------------------------------

@lab.check("at least once",
           idea="A message is done when handle() has returned. What is committed is what the group will never "
                "read again: commit only what is done, and commit all of it by the time consume returns.",
           code="In make_consumer, think about enable.auto.commit (and what close() does when it is on). In "
                "consume: subscribe; a loop bounded by max_messages and a deadline; msg = consumer.poll(0.2); skip "
                "None; look at msg.error(); handle(msg); then consumer.commit(message=msg, asynchronous=False) "
                "(every COMMIT_EVERY messages, and once more for the rest before returning). Notebook 05a, "
                "section 5 (offsets and commits), shows each of these calls.")
def check_at_least_once(make_consumer, consume, commit_every) -> dict:
    expect(isinstance(commit_every, int) and not isinstance(commit_every, bool) and commit_every >= 1,
           f"COMMIT_EVERY is {commit_every!r}: the decision is yours, a whole number of messages >= 1",
           "1 commits after every message: the fewest duplicates after a crash, one round trip per message. "
           "More: fewer round trips, up to COMMIT_EVERY-1 messages handled twice after a crash.",
           blame="COMMIT_EVERY")
    consume_name = getattr(consume, "__name__", "consume")
    outcome = _crash_and_restart(make_consumer, consume, "lab05-payments")
    sizes = ", ".join(f"p{p}: {n}" for p, n in PAYMENTS.items())
    if outcome["lost"] and outcome["first_commits"] <= CRASH_AT - 1:
        # consume committed nothing it had not handled: the consumer itself committed the rest
        raise LabCheckFailed(
            f"lost in the crash: {outcome['lost']} were never handled, yet the group had committed past them; "
            f"{consume_name} called commit() only {outcome['first_commits']} times for {CRASH_AT - 1} handled "
            "messages, so something else committed", "Which setting of your consumer commits, on its own, "
            "what poll() returned (and what does close() do then)?",
            function=getattr(make_consumer, "__name__", "make_consumer"))
    expect(not outcome["lost"], f"lost in the crash: {outcome['lost']} were never handled, yet the group had "
           f"committed past them (topic partitions {sizes}); {consume_name} called commit() "
           f"{outcome['first_commits']} times for {CRASH_AT - 1} handled messages",
           "A commit says 'done'. Was handle() finished with the message when you committed it?",
           blame=consume_name)
    expect(outcome["lag"] == 0, f"after the restart handled everything, the group's committed offsets are "
           f"{outcome['lag']} message(s) short of the end of the log",
           "By the time consume returns, everything it handled must be committed, on every partition. A "
           "committed offset is the position of the NEXT message to read.", blame=consume_name)
    handled = CRASH_AT - 1
    low, high = handled // commit_every, handled // commit_every + 1
    expect(low <= outcome["first_commits"] <= high,
           f"you chose COMMIT_EVERY={commit_every}; {consume_name} handled {handled} messages and called commit() "
           f"{outcome['first_commits']} times", "Commit once per COMMIT_EVERY handled messages.",
           blame=consume_name)
    expect(outcome["duplicates"] <= commit_every - 1,
           f"you chose COMMIT_EVERY={commit_every}, yet {outcome['duplicates']} payment(s) were handled twice "
           "after the crash", f"At most COMMIT_EVERY-1 = {commit_every - 1} messages can be handled but not yet "
           "committed when the worker dies.", blame=consume_name)
    passed(f"no payment lost across a crash ({outcome['total']} payments on partitions of {sizes}; "
           f"{outcome['duplicates']} handled twice), committed to the end")
    return outcome


# --- part 2: rebuild by replay ----------------------------------------------------------------------

ACCOUNTS_BY_PARTITION = {0: ["alice", "bob"], 1: ["dave"], 2: ["carol"]}
FIRST_ROUND = {0: 30, 1: 0, 2: 2}   # events per partition: very different sizes, one empty
SECOND_ROUND = {0: 2, 1: 2, 2: 0}


def _events(rng: random.Random, round_sizes: dict[int, int]) -> dict[int, list[tuple[str, str]]]:
    return {p: [(rng.choice(ACCOUNTS_BY_PARTITION[p]), f"{rng.choice(('deposit', 'withdraw'))} {rng.randint(1, 50)}")
                for _ in range(n)] for p, n in round_sizes.items()}


def expected_balances(events) -> dict[str, int]:
    balances: dict[str, int] = {}
    for account, event in events:
        kind, amount = event.split()
        balances[account] = balances.get(account, 0) + (int(amount) if kind == "deposit" else -int(amount))
    return balances


def _check_apply_event(apply_event) -> None:
    balances: dict = {}
    steps = [("alice", "deposit 30", {"alice": 30}), ("alice", "withdraw 12", {"alice": 18}),
             ("bob", "withdraw 5", {"alice": 18, "bob": -5})]
    for account, event, want in steps:
        returned = call(apply_event, balances, account, event)
        got = returned if isinstance(returned, dict) else balances
        expect(got == want, f"apply_event(balances, {account!r}, {event!r}) gave {got}, expected {want}",
               "A deposit adds its amount to the account's balance, a withdrawal subtracts it; an account "
               "seen for the first time starts at 0.", blame="apply_event")
        balances = got


def _diagnose(got: dict, want: dict, sizes: dict[int, int]) -> str:
    where = {a: p for p, accounts in ACCOUNTS_BY_PARTITION.items() for a in accounts}
    wrong = sorted(a for a in set(want) | set(got) if got.get(a) != want.get(a))
    parts = sorted({where.get(a, -1) for a in wrong})
    right = sorted({where[a] for a in want if got.get(a) == want[a]})
    detail = ", ".join(f"{a} (partition {where.get(a, '?')}): {got.get(a)} instead of {want.get(a)}" for a in wrong)
    return (f"{detail}. Partitions hold {', '.join(f'p{p}: {n} events' for p, n in sizes.items())}; "
            f"accounts on partitions {right} are right, on {parts} wrong")


@lab.check("rebuild",
           idea="State derived from a log can be rebuilt by reading the whole log again: every partition, from "
                "its first offset to its end, however many events each holds (some hold none).",
           code="A consumer of a group that has never committed starts where auto.offset.reset says. With "
                "enable.partition.eof=True, poll() returns an event whose msg.error().code() is "
                "KafkaError._PARTITION_EOF when a partition is read to its end (empty ones too): stop when every "
                "partition has reported it (how many partitions? consumer.list_topics(topic)). Keys and values "
                "are bytes: decode them. Notebook 05a, sections 1 (the raw poll loop) and 6 (replay).")
def check_rebuild(rebuild_balances, apply_event, seed: int | None = None) -> dict:
    _check_apply_event(apply_event)
    rng = random.Random(seed)
    admin = kafka_admin()
    appeared: set[str] = set()

    def replay():
        """Call the learner's replay, noting the groups that appear meanwhile (theirs, or a parallel run's)."""
        before = _groups(admin)
        try:
            return call(rebuild_balances, topic)
        finally:
            appeared.update(_groups(admin) - before)

    first = _events(rng, FIRST_ROUND)
    topic = _make_topic(admin, "lab05-accounts", first)
    try:
        history = [e for p in sorted(first) for e in first[p]]
        want = expected_balances(history)
        got = replay()
        expect(isinstance(got, dict), f"rebuild_balances returned {type(got).__name__}, expected a dict",
               "Return the balances as {account: balance}.", blame="rebuild_balances")
        raw = [k for k in got if isinstance(k, (bytes, bytearray))]
        expect(not raw, f"rebuild_balances returned accounts as bytes, e.g. {raw[:2]}",
               "Kafka hands you keys and values as bytes: decode them (.decode()) before using them as text.",
               blame="rebuild_balances")
        expect(got, f"rebuild_balances returned no balances; the topic holds {len(history)} events on "
               f"{sum(1 for n in FIRST_ROUND.values() if n)} of its {len(FIRST_ROUND)} partitions",
               "Your consumer read nothing. Where does a consumer of a new group start reading? Did your loop "
               "give the group time to assign partitions before giving up, and does it wait for every partition's "
               "end (an empty partition reports its end at once)?", blame="rebuild_balances")
        expect(got == want, "the replay rebuilt wrong balances: " + _diagnose(got, want, FIRST_ROUND),
               "A replay is finished when EVERY partition has been read to its end, not the first one to end.",
               blame="rebuild_balances")
        second = _events(rng, SECOND_ROUND)
        producer = kafka_producer()
        for p, records in second.items():
            if records:
                kt.produce(producer, topic, records, partition=p)
        history += [e for p in sorted(second) for e in second[p]]
        want_all = expected_balances(history)
        sizes = {p: FIRST_ROUND[p] + SECOND_ROUND[p] for p in FIRST_ROUND}
        again = replay()
        expect(again == want_all, f"the second replay (after {sum(SECOND_ROUND.values())} more events, on the "
               "partition that was empty too) rebuilt wrong balances: " + _diagnose(again, want_all, sizes),
               "Each replay starts from the beginning of the log. A group that committed offsets resumes after "
               "them.", blame="rebuild_balances")
        passed(f"balances of {len(want_all)} accounts rebuilt from {len(history)} events on partitions of "
               f"{', '.join(str(n) for n in sizes.values())} events, twice")
        return want_all
    finally:
        kt.delete_topics(admin, [topic])
        with_offsets, without = _learner_groups(admin, appeared, topic)
        for group in with_offsets + without:
            lab.record("group", group)
        _delete_groups(admin, with_offsets, wait_for_members=8.0)
        _delete_groups(admin, without, wait_for_members=0)


# --- stretch: store_offsets ---------------------------------------------------------------------------

@lab.check("stretch: store_offsets",
           idea="Let the consumer commit in the background, but only what you have finished: you tell it which "
                "offsets are done, it commits those, never what poll() merely returned.",
           code="Two consumer settings: enable.auto.commit=True and enable.auto.offset.store=False. After "
                "handle(msg), consumer.store_offsets(message=msg). No commit() calls: close() commits what was "
                "stored. Notebook 05a, section 5.")
def check_stored_offsets(make_storing_consumer, consume_storing) -> dict:
    name = getattr(consume_storing, "__name__", "consume_storing")
    outcome = _crash_and_restart(make_storing_consumer, consume_storing, "lab05-stored")
    calls = outcome["first_commits"] + outcome["commits"]
    expect(calls == 0, f"{name} called commit() {calls} times",
           "The stretch is to commit nothing yourself: store the offsets of handled messages and let the "
           "consumer's automatic commits send them.", blame=name)
    expect(outcome["first_stores"] + outcome["stores"] > 0, f"{name} never called store_offsets()",
           "Tell the consumer which messages are done: store_offsets(message=msg) after handle(msg).", blame=name)
    if outcome["lost"] and outcome["first_stores"] > CRASH_AT - 1:
        raise LabCheckFailed(f"lost in the crash: {outcome['lost']}; {name} stored {outcome['first_stores']} "
                             f"offsets for {CRASH_AT - 1} handled messages",
                             "Store a message's offset once handle() is finished with it.", function=name)
    expect(not outcome["lost"], f"lost in the crash: {outcome['lost']} were never handled, yet the group had "
           "committed past them", "poll() stores each offset it returns unless you turn that off; then the "
           "automatic commit sends it, handled or not.", blame=getattr(make_storing_consumer, "__name__", None))
    stored = outcome["first_stores"] + outcome["stores"]
    if 0 < outcome["lag"] <= sum(1 for n in PAYMENTS.values() if n) and stored:
        # the automatic commits ran (nearly everything is committed) but stop short: what was stored is off
        raise LabCheckFailed(f"after the restart the group's committed offsets are {outcome['lag']} message(s) "
                             f"short of the end of the log, although {name} stored {stored} offsets",
                             "Store every handled message, and remember a stored offset is the position of the "
                             "NEXT message to read: store_offsets(message=msg) does the +1 for you.", function=name)
    expect(outcome["lag"] == 0, f"after the restart the group's committed offsets are {outcome['lag']} message(s) "
           "short of the end of the log", "Stored offsets are committed by automatic commits (and by close()): "
           "are they on?", blame=getattr(make_storing_consumer, "__name__", None))
    passed(f"no commit() calls, no payment lost across a crash, {outcome['duplicates']} handled twice, "
           "committed to the end by the consumer itself")
    return outcome


__all__ = ["LabCheckFailed", "WatchedConsumer", "check_at_least_once", "check_rebuild", "check_stored_offsets",
           "expected_balances", "hint", "lab"]
