"""Checks for lab 04: a retry ladder with dead letters on RabbitMQ.

The learner writes:

    declare_ladder(channel, ladder)                 # exchanges, queues, arguments, bindings
    retries(message) -> int                         # retries so far, from the consumer's own "retries" header
    handle(channel, message, process, ladder)       # process; ack, or climb a rung, or reject to the DLQ
    RETRY_ORDER = ...  # DECISION                   # "publish-then-ack" or "ack-then-publish"
    handle_once(channel, message, process, ladder, done)   # stretch: an effect once, despite redeliveries

The topology (names from `new_ladder`, all per run):

    work_x (direct) --"work"--> [work]  (x-dead-letter-exchange: dead_x)
    retry_x (direct) --rung_key(k)--> [wait(k)]  (x-message-ttl: delays[k], dead-letters to work_x with key "work")
    dead_x (fanout) --> [dead]

Every check runs against the real RabbitMQ on fresh names and deletes them afterwards, also on failure.
Consumers are threads with their own connections; a crash is a SimulatedCrash raised by the channel the
learner's handle is given, after which that consumer's connection is closed without acking, which is all
RabbitMQ can see of a dead process.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from .. import rabbitmq_tools as rt
from ..clients import rabbit_api, rabbit_connection
from ..runs import run_name
from ..workers import BoundedWorkers
from .checking import Lab, call, decided, expect, passed
from .faults import SimulatedCrash

lab = Lab("04 · a retry ladder with dead letters")
hint = lab.hint

ORDERS = ("publish-then-ack", "ack-then-publish")


# --- the names a ladder uses ---------------------------------------------------------------------

@dataclass
class Ladder:
    prefix: str
    delays: list[int] = field(default_factory=lambda: [100, 300])   # milliseconds, one wait queue per rung

    @property
    def work_x(self) -> str:
        return f"{self.prefix}.work-x"

    @property
    def retry_x(self) -> str:
        return f"{self.prefix}.retry-x"

    @property
    def dead_x(self) -> str:
        return f"{self.prefix}.dead-x"

    @property
    def work(self) -> str:
        return f"{self.prefix}.work"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead"

    def wait(self, rung: int) -> str:
        return f"{self.prefix}.wait-{rung}"

    @staticmethod
    def rung_key(rung: int) -> str:
        return f"rung-{rung}"

    @property
    def rungs(self) -> int:
        return len(self.delays)

    def queues(self) -> list[str]:
        return [self.work, self.dead, *(self.wait(k) for k in range(self.rungs))]

    def exchanges(self) -> list[str]:
        return [self.work_x, self.retry_x, self.dead_x]


def new_ladder(topic: str = "lab04", delays: list[int] | None = None, record: bool = True) -> Ladder:
    """A ladder with per-run names (recorded, so the tests can prove a check removed them)."""
    ladder = Ladder(run_name(topic), list(delays or [100, 300]))
    if record:
        for name in ladder.queues():
            lab.record("queue", name)
        for name in ladder.exchanges():
            lab.record("exchange", name)
    return ladder


def delete_ladder(ladder: Ladder) -> None:
    rt.delete_run(ladder.prefix)


def reference_declare(channel, ladder: Ladder) -> None:
    """The topology the checks of `retries` build on (so that check does not depend on declare_ladder)."""
    channel.exchange_declare(ladder.work_x, "direct", durable=True)
    channel.exchange_declare(ladder.retry_x, "direct", durable=True)
    channel.exchange_declare(ladder.dead_x, "fanout", durable=True)
    channel.queue_declare(ladder.work, durable=True, arguments={"x-dead-letter-exchange": ladder.dead_x})
    channel.queue_bind(ladder.work, ladder.work_x, "work")
    for rung, delay in enumerate(ladder.delays):
        channel.queue_declare(ladder.wait(rung), durable=True, arguments={
            "x-message-ttl": delay, "x-dead-letter-exchange": ladder.work_x, "x-dead-letter-routing-key": "work"})
        channel.queue_bind(ladder.wait(rung), ladder.retry_x, ladder.rung_key(rung))
    channel.queue_declare(ladder.dead, durable=True)
    channel.queue_bind(ladder.dead, ladder.dead_x)


# --- a channel that dies when told ---------------------------------------------------------------

class CrashingChannel:
    """A pika channel that raises SimulatedCrash instead of the `crash_at`-th call of basic_publish or
    basic_ack/basic_nack/basic_reject (counted together), as if the process died right there."""

    SETTLING = ("basic_publish", "basic_ack", "basic_nack", "basic_reject")

    def __init__(self, channel, crash_at: int | None = None, crash_on: tuple[str, ...] = SETTLING):
        self._channel = channel
        self._crash_at = crash_at
        self._crash_on = crash_on
        self.calls: list[str] = []
        self.crashed = False

    def __getattr__(self, name):
        attribute = getattr(self._channel, name)
        if name not in self.SETTLING:
            return attribute

        def counted(*args, **kwargs):
            if name in self._crash_on:
                if self._crash_at is not None and len([c for c in self.calls if c in self._crash_on]) + 1 == \
                        self._crash_at:
                    self.crashed = True
                    raise SimulatedCrash(f"the consumer died at {name}")
            self.calls.append(name)
            return attribute(*args, **kwargs)

        return counted


# --- driving consumers ---------------------------------------------------------------------------

class Processing:
    """The learner's `process` function, as the check plays it: some bodies fail a number of times.

    "ok-*" never fail, "flaky<N>-*" fail their first N attempts, "poison-*" always fail."""

    def __init__(self):
        self.lock = threading.Lock()
        self.attempts: dict[str, list[float]] = defaultdict(list)
        self.done: dict[str, int] = defaultdict(int)

    @staticmethod
    def failures(body: str) -> int:
        if body.startswith("poison"):
            return 10**9
        if body.startswith("flaky"):
            return int(body[len("flaky"):].split("-")[0])
        return 0

    def __call__(self, body: str) -> str:
        with self.lock:
            self.attempts[body].append(time.monotonic())
            tries = len(self.attempts[body])
            if tries <= self.failures(body):
                raise ProcessingFailed(f"{body} failed (attempt {tries})")
            self.done[body] += 1
        return f"done {body}"


class ProcessingFailed(Exception):
    """What `process` raises when the work fails: handle must catch it."""


def consume_with(handle, queue: str, args_after_message: tuple, until, crash_at: int | None = None,
                 idle_stop: float | None = None, ) -> dict:
    """One consumer (its own connection) that calls handle(channel, message, *args_after_message) for
    each delivery until `until()` is false.  Returns {"crashed": bool, "calls": [...]}."""
    import pika.exceptions

    connection = rabbit_connection()
    crashed = False
    channel = None
    try:
        raw = connection.channel()
        raw.basic_qos(prefetch_count=1)
        channel = CrashingChannel(raw, crash_at)
        last = time.monotonic()
        for method, properties, body in raw.consume(queue, inactivity_timeout=0.05):
            if not until() or (idle_stop is not None and time.monotonic() - last > idle_stop):
                break
            if method is None:
                continue
            last = time.monotonic()
            message = rt.Message.from_pika(method, properties, body)
            try:
                call(handle, channel, message, *args_after_message, passthrough=(SimulatedCrash,))
            except SimulatedCrash:
                crashed = True
                break
    except pika.exceptions.ChannelClosedByBroker as closed:   # e.g. a delivery acked after it was rejected
        name = getattr(handle, "__name__", "handle")
        expect(False, f"RabbitMQ closed the channel {name} was given: {closed.reply_code} {closed.reply_text} "
                      f"(its calls: {channel.calls if channel else []})",
               "Settle each delivery exactly once: basic_ack, or basic_reject/basic_nack, never two of them "
               "(return right after the reject). Acking an unknown delivery tag closes the channel.", blame=name)
    finally:
        rt._close(connection)  # a crash: unacked messages go back to the queue, as after a SIGKILL
    return {"crashed": crashed, "calls": channel.calls if channel else []}


def _publish(channel, ladder: Ladder, bodies: list[str], message_ids: bool = False) -> None:
    import pika

    for body in bodies:
        properties = pika.BasicProperties(delivery_mode=2, message_id=body if message_ids else None)
        channel.basic_publish(ladder.work_x, "work", body.encode(), properties)


def _dead(channel, ladder: Ladder) -> list[rt.Message]:
    return rt.get_all(channel, ladder.dead)


def _api_queue(name: str) -> dict | None:
    import urllib.error

    try:
        return rt.queue_info(name)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


# --- the checks ----------------------------------------------------------------------------------

@lab.check("declare", idea="Three exchanges, one work queue whose rejects go to the dead-letter exchange, one wait "
                           "queue per rung whose messages expire after that rung's delay back into the work "
                           "exchange with the key 'work', and a dead-letter queue.",
           code="channel.exchange_declare(name, type, durable=True); channel.queue_declare(name, durable=True, "
                "arguments={'x-dead-letter-exchange': ..., 'x-message-ttl': ..., 'x-dead-letter-routing-key': "
                "'work'}); channel.queue_bind(queue, exchange, routing_key). Types: work_x direct, retry_x direct, "
                "dead_x fanout. Loop over enumerate(ladder.delays) for the rungs.")
def check_declare(declare_ladder) -> None:
    ladder = new_ladder("lab04-declare")
    connection = rabbit_connection()
    try:
        channel = connection.channel()
        call(declare_ladder, channel, ladder)
        call(declare_ladder, channel, ladder)  # a second service declaring the same ladder must not fail
        for name in ladder.queues():
            info = _api_queue(name)
            expect(info is not None, f"queue {name} does not exist after declare_ladder",
                   "Declare every queue of the ladder: work, dead, and wait(k) for each rung.",
                   blame="declare_ladder")
            expect(info["durable"] is True, f"queue {name} is not durable",
                   "RabbitMQ 4 deprecates transient shared queues: declare them durable=True.",
                   blame="declare_ladder")
        channel.confirm_delivery()
        import pika

        # each rung: a message put on it comes back to the work queue after that rung's delay, not before
        for rung, delay in enumerate(ladder.delays):
            sent = time.monotonic()
            channel.basic_publish(ladder.retry_x, ladder.rung_key(rung), f"rung-{rung}".encode(),
                                  pika.BasicProperties(delivery_mode=2))
            back = rt.wait_for_message(channel, ladder.work, delay / 1000 + 1.5)
            waited = time.monotonic() - sent
            expect(back is not None, f"a message published to {ladder.retry_x} with key {ladder.rung_key(rung)!r} "
                                     f"never came back to {ladder.work} (waited {delay / 1000 + 1.5:.1f} s)",
                   "A wait queue must be bound to retry_x with rung_key(k), expire messages after delays[k] "
                   "(x-message-ttl) and dead-letter them to work_x with the routing key 'work' "
                   "(x-dead-letter-routing-key; without it they keep the key rung-k, which work_x does not route).",
                   blame="declare_ladder")
            channel.basic_ack(back.delivery_tag)
            expect(waited >= delay / 1000 * 0.9,
                   f"rung {rung} returned the message after {waited:.2f} s, its delay is {delay / 1000:.2f} s",
                   "Each wait queue's x-message-ttl is that rung's own delay: ladder.delays[k].",
                   blame="declare_ladder")
        # the end: a message rejected from the work queue lands in the dead-letter queue
        channel.basic_publish(ladder.work_x, "work", b"doomed", pika.BasicProperties(delivery_mode=2))
        doomed = rt.wait_for_message(channel, ladder.work, 3)
        expect(doomed is not None, f"a message published to {ladder.work_x} with key 'work' is not in {ladder.work}",
               "Bind the work queue to work_x with the key 'work'.", blame="declare_ladder")
        channel.basic_reject(doomed.delivery_tag, requeue=False)
        dead = rt.wait_for_message(channel, ladder.dead, 1.5)
        expect(dead is not None, f"a message rejected from {ladder.work} did not reach {ladder.dead}",
               "The work queue's x-dead-letter-exchange is dead_x, and the dead queue is bound to it.",
               blame="declare_ladder")
        channel.basic_ack(dead.delivery_tag)
    finally:
        connection.close()
        delete_ladder(ladder)
    passed(f"the ladder routes: {ladder.rungs} rungs return messages after their delays; rejects reach the DLQ")


@lab.check("retries", idea="Since RabbitMQ 4.0, x- headers belong to the broker: x-death describes only the "
                           "dead-letterings since the message was last published. A copy your consumer publishes "
                           "starts a new history, so the consumer counts retries in its own header.",
           code="message.headers.get('retries', 0): a header without the x- prefix, which the broker carries "
                "untouched. handle sets it to retries(message) + 1 on every copy it publishes.")
def check_retries(retries) -> None:
    import pika

    ladder = new_ladder("lab04-retries", delays=[50, 50])
    connection = rabbit_connection()
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        reference_declare(channel, ladder)
        channel.basic_publish(ladder.work_x, "work", b"fresh", pika.BasicProperties(delivery_mode=2))
        fresh = rt.wait_for_message(channel, ladder.work, 3)
        got = call(retries, fresh)
        expect(got == 0, f"retries() returned {got!r} for a message that was never retried (no headers)",
               "No retry yet: return 0 when the header is missing.", blame="retries")
        channel.basic_ack(fresh.delivery_tag)
        # a copy that a ladder consumer published for its 3rd retry, back from rung 1 with the broker's x-death
        channel.basic_publish(ladder.retry_x, ladder.rung_key(1), b"third", pika.BasicProperties(
            headers={"retries": 3}, delivery_mode=2))
        back = rt.wait_for_message(channel, ladder.work, 3)
        got = call(retries, back)
        history = [(d["queue"].replace(ladder.prefix, "…"), d["reason"], d["count"]) for d in rt.x_death(back)]
        expect(got == 3, f"retries() returned {got!r} for a copy published with the header retries=3, whose x-death "
                         f"(written by the broker since that publish) is {history}",
               "x-death only counts dead-letterings since the copy was published (RabbitMQ 4 ignores an x-death "
               "a client sends). Read your own 'retries' header.", blame="retries")
        channel.basic_ack(back.delivery_tag)
    finally:
        connection.close()
        delete_ladder(ladder)
    passed("retries() reads the consumer's own count, which survives re-publishing (x-death does not)")


def _run_ladder(declare_ladder, handle, messages: list[str], consumers: int = 2, delays=None):
    """Declare with the learner's code, publish, run `consumers` consumer threads calling `handle` until every
    message is processed or dead, a message runs away (retried far more often than the ladder has rungs), or
    a deadline passes.  Returns (ladder, process, dead letters, seconds, messages left per queue)."""
    ladder = new_ladder("lab04-ladder", delays=delays)
    seconds = 5 + 2 * sum(ladder.delays) / 1000
    process = Processing()
    connection = rabbit_connection()
    channel = connection.channel()
    try:
        call(declare_ladder, channel, ladder)
        channel.confirm_delivery()
        successes = [m for m in messages if not m.startswith("poison")]
        poison = len(messages) - len(successes)
        dead_seen = []

        def finished():
            dead_seen.extend(rt.get_all(channel, ladder.dead))
            runaway = any(len(process.attempts[m]) > ladder.rungs + 3 for m in messages)
            last = max([started, *(t for times in process.attempts.values() for t in times)])
            stalled = time.monotonic() - last > 2.0 + max(ladder.delays) / 1000   # nothing moves any more
            return runaway or stalled or (sum(1 for m in successes if process.done[m]) == len(successes)
                               and len(dead_seen) >= poison)

        started = time.monotonic()
        _publish(channel, ladder, messages)
        with BoundedWorkers(seconds=seconds + 5, name="lab04-consumer") as workers:
            for _ in range(consumers):
                workers.thread(consume_with, handle, ladder.work, (process, ladder), workers.running)
            workers.wait(until=finished)
            time.sleep(0.3)  # a duplicate that was about to happen shows up in the counts
            finished()
            workers.stop()
        elapsed = time.monotonic() - started
        dead_seen.extend(rt.get_all(channel, ladder.dead))
        left = {q.replace(ladder.prefix, "…"): rt.ready(channel, q) for q in ladder.queues() if q != ladder.dead}
        return ladder, process, dead_seen, elapsed, left
    finally:
        connection.close()
        delete_ladder(ladder)


@lab.check("ladder", idea="process(body) either returns (ack the message) or raises. On a failure the message "
                          "climbs one rung: a copy goes to the wait queue of its retry number, counting the retry in "
                          "its own header. When every rung was used, reject it without requeue: the broker "
                          "dead-letters it and records why.",
           code="try: process(message.body) / except Exception: ...; n = retries(message); "
                "channel.basic_publish(ladder.retry_x, ladder.rung_key(n), message.body.encode(), "
                "pika.BasicProperties(headers={'retries': n + 1}, delivery_mode=2)) then channel.basic_ack("
                "message.delivery_tag) (or the other order, per RETRY_ORDER); when n == ladder.rungs: "
                "channel.basic_reject(message.delivery_tag, requeue=False).")
def check_ladder(declare_ladder, handle) -> None:
    messages = ["ok-1", "ok-2", "flaky1-a", "flaky2-b", "poison-x", "ok-3", "poison-y"]
    ladder, process, dead, elapsed, left = _run_ladder(declare_ladder, handle, messages)
    rungs = ladder.rungs
    successes = [m for m in messages if not m.startswith("poison")]
    for body in successes:
        expect(process.done[body] <= 1, f"{body} was processed {process.done[body]} times",
               "A message that succeeds must be acked once: a message left unacked is delivered again.",
               blame="handle")
    poison = sorted(m for m in messages if m.startswith("poison"))
    dead_bodies = sorted(m.body for m in dead)
    tries = {b: len(process.attempts[b]) for b in poison}
    expect(not any(left.values()), f"messages left in the ladder's queues: {left}; the dead-letter queue holds "
                                   f"{dead_bodies} (attempts of the poison messages: {tries})",
           "Every message must end acked once processed, or rejected without requeue after the last rung. "
           "A nack with requeue=True retries at once, forever; a copy must carry retries + 1, or it climbs "
           "rung 0 forever; a message neither acked nor rejected blocks the consumer (prefetch 1) until it "
           "disconnects.", blame="handle")
    for body in successes:
        expect(process.done[body] == 1, f"{body} was processed {process.done[body]} times",
               f"It needs {Processing.failures(body)} retries: did its copy climb a rung and come back?",
               blame="handle")
    expect(dead_bodies == poison, f"the dead-letter queue holds {dead_bodies}, expected {poison} once each "
                                  f"(attempts of the poison messages: {tries})",
           f"After the first attempt and {rungs} retries (one per rung), reject without requeue "
           "(basic_reject(tag, requeue=False)) so the broker dead-letters it; count the retries in the "
           "copies you publish." if len(dead_bodies) < len(poison) else "Each message must end in exactly one place.",
           blame="handle")
    for message in dead:
        deaths = {(d["queue"], d["reason"]): d["count"] for d in rt.x_death(message)}
        expected = {(ladder.wait(rungs - 1), "expired"): 1, (ladder.work, "rejected"): 1}
        shown = {f"{q.replace(ladder.prefix, '…')} {r}": c for (q, r), c in deaths.items()}
        expect(message.headers.get("retries") == rungs,
               f"{message.body} reached the DLQ with the header retries={message.headers.get('retries')!r}; "
               f"it climbed {rungs} rungs", "Each copy you publish carries retries(message) + 1.", blame="handle")
        expect(deaths == expected,
               f"{message.body} reached the DLQ with x-death {shown}; expected the broker's record of its last "
               f"trip: expired from the last wait queue, then rejected from the work queue",
               "Put retry n on rung n (ladder.rung_key(retries(message))), and at the end reject without requeue "
               "(the broker dead-letters it and records why) instead of publishing it to the DLQ yourself.",
               blame="handle")
        expect(len(process.attempts[message.body]) == rungs + 1,
               f"{message.body} was attempted {len(process.attempts[message.body])} times; expected {rungs + 1} "
               f"(once, then once per rung)", "Retry once per rung, then give up.", blame="handle")
    for body in [*poison, "flaky2-b"]:
        times = process.attempts[body]
        for rung, (before, after) in enumerate(zip(times, times[1:])):
            if rung >= rungs:
                break
            delay = ladder.delays[rung] / 1000
            expect(after - before >= delay * 0.9,
                   f"{body}: retry {rung + 1} came {after - before:.2f} s after the failure; rung {rung} waits "
                   f"{delay:.2f} s", "Retry n goes to rung n: the n-th wait queue, with its own delay.",
                   blame="handle")
    expect(not any(left.values()), f"messages left in the ladder's queues: {left}",
           "Every message ends processed (acked) or in the dead-letter queue.", blame="handle")
    passed(f"{len(messages)} messages: each processed once or dead-lettered after {rungs} retries, "
           f"with x-death to prove it ({elapsed:.1f} s)")


@lab.check("crash", idea="A retry is two steps: publish the copy, ack the original. A consumer can die between "
                         "them. One order risks a duplicate, the other a loss: your RETRY_ORDER says which you "
                         "accept, and handle must do what it says.",
           code="publish-then-ack: basic_publish(retry copy) first, then basic_ack. ack-then-publish: the "
                "reverse. The check crashes your consumer at the second of the two calls.")
def check_crash_between_steps(declare_ladder, handle, retry_order) -> None:
    decided(retry_order, "RETRY_ORDER", ORDERS,
            "Publishing first risks a duplicate (a crash before the ack redelivers the original); acking first "
            "risks losing the message (a crash before the publish). Which failure can your system live with?")
    ladder = new_ladder("lab04-crash")
    process = Processing()
    connection = rabbit_connection()
    try:
        channel = connection.channel()
        call(declare_ladder, channel, ladder)
        channel.confirm_delivery()
        _publish(channel, ladder, ["flaky1-c"])
        # the first consumer fails the message and dies at its second settling call (publish or ack)
        first = consume_with(handle, ladder.work, (process, ladder), lambda: True, crash_at=2, idle_stop=3)
        expect(first["crashed"], f"handle made these calls on a failure: {first['calls']}; expected a publish "
                                 "and an ack", "On a failure, publish the retry copy and ack the original.",
               blame="handle")
        # a healthy consumer takes over until nothing moves for a while
        consume_with(handle, ladder.work, (process, ladder), lambda: True, idle_stop=max(ladder.delays) / 1000 + 1.5)
        done = process.done["flaky1-c"]
        dead = len(rt.get_all(channel, ladder.dead))
        calls = first["calls"]
        acked_first = calls[:1] == ["basic_ack"]
        if retry_order == "publish-then-ack":
            expect(done >= 1, f"you chose publish-then-ack, but the message was lost (processed {done} times, "
                              f"{dead} dead) after a crash after your first call, {calls[0]!r}",
                   "Publish the retry copy before you ack the original.", blame="handle")
            outcome = f"processed {done} time(s): at-least-once, a duplicate is possible"
        else:
            expect(acked_first and done == 0, f"you chose ack-then-publish, but after a crash after your first call "
                                              f"({calls[0]!r}) the message was processed {done} times",
                   "Ack the original first, then publish the copy: a crash in between loses the message (that is "
                   "the price of never having a duplicate).", blame="handle")
            outcome = "lost: at-most-once, never a duplicate"
    finally:
        connection.close()
        delete_ladder(ladder)
    passed(f"{retry_order}: crash between the two steps -> the message was {outcome}")


@lab.check("once", idea="Redelivery is how RabbitMQ keeps messages safe, so a consumer may see a message it has "
                        "already processed (it died before the ack). Remember what you did, by message_id, and "
                        "skip the work the second time (but still ack).",
           code="mid = message.properties.message_id; if mid in done: ack and return; otherwise process, "
                "done.add(mid), then ack (and the ladder as in handle on a failure).")
def check_once(declare_ladder, handle_once) -> None:
    ladder = new_ladder("lab04-once")
    process = Processing()
    done_ids: set = set()
    bodies = ["ok-a", "ok-b", "flaky1-c"]
    connection = rabbit_connection()
    try:
        channel = connection.channel()
        call(declare_ladder, channel, ladder)
        channel.confirm_delivery()
        _publish(channel, ladder, bodies, message_ids=True)
        # a consumer that died before it processed ok-a: ok-a comes again, redelivered, and its work is NOT done
        taken = rt.wait_for_message(channel, ladder.work, 3)
        channel.basic_nack(taken.delivery_tag, requeue=True)
        # a consumer that dies at its second ack: after processing ok-b, before acking it (its delivery tags
        # 1, 2 come again on the next consumer's channel, for other messages)
        crash = consume_with(handle_once, ladder.work, (process, ladder, done_ids), lambda: True, crash_at=2,
                             idle_stop=3)
        expect(crash["crashed"], "handle_once never acked or published anything",
               "Ack each message you processed.", blame="handle_once")
        consume_with(handle_once, ladder.work, (process, ladder, done_ids), lambda: True,
                     idle_stop=max(ladder.delays) / 1000 + 1.5)
        counts = {b: process.done[b] for b in bodies}
        expect(all(c == 1 for c in counts.values()),
               f"after a crash between processing and acking, the work ran {counts} times",
               "A redelivered message (message.redelivered is True) may already be done, or not (its consumer may "
               "have died before the work): look its message_id up in `done` before processing; add it after "
               "processing, before the ack. Not the delivery_tag: it counts per channel, and a new consumer's "
               "tags start at 1 again.", blame="handle_once")
        expect(rt.ready(channel, ladder.work) == 0, "messages are left in the work queue",
               "Ack the duplicate you skipped, too.", blame="handle_once")
    finally:
        connection.close()
        delete_ladder(ladder)
    passed("each message's work ran once, although one was delivered twice")


def check_no_leftovers(prefix: str) -> None:
    """The learner's own cleanup cell: nothing of the lab's names is left on the broker."""
    left = rt.names(prefix)
    expect(left == {"queues": [], "exchanges": []}, f"still on the broker: {left}",
           "Delete what you declared: rt.delete_run(prefix).")


__all__ = ["Ladder", "ORDERS", "Processing", "ProcessingFailed", "check_crash_between_steps", "check_declare",
           "check_ladder", "check_once", "check_retries", "hint", "lab", "new_ladder", "reference_declare"]
