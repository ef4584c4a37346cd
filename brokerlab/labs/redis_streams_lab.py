"""Checks for lab 02 (a Redis Streams consumer that survives crashes and dead-letters poison).

The learner writes, for a consumer described by a `Consumer` (stream, group, name, dead-letter stream,
max_deliveries, min_idle_ms, batch):

    process_entry(r, c, entry_id, fields, handle) -> "handled" | "dead"
        look up how many times the entry was delivered (XPENDING); delivered more than c.max_deliveries
        times: copy it to the dead-letter stream and XACK it in one step; otherwise handle(entry_id, fields),
        then XACK (and, if PROCESSED == "delete", delete it from the stream in the same step)
    recover_own(r, c, handle) -> int       this consumer's own pending entries (id 0, then after the last
                                           id read) until there are none, each through process_entry
    claim_dead(r, c, handle) -> int        XAUTOCLAIM entries idle for c.min_idle_ms (a dead peer's),
                                           following the cursor until it is back at 0-0
    consume(r, c, handle) -> int           recover_own, then claim_dead, then new entries (">") until none
    PROCESSED = "keep" | "delete"          a design decision: does a processed entry stay in the stream?
    apply_once(r, ledger, entry_id, amount) (stretch) an effect applied once per entry id, even when the
                                           caller dies between any two commands and the entry is redelivered

Crashes are real: a peer consumer is a separate process killed with SIGKILL while it holds an entry, and the
learner's own functions get a client that dies after its k-th command, for every k (faults.crashing_redis),
which is what Redis sees of a SIGKILL at that point; `handle` raising SimulatedCrash is a worker dying in the
middle of its work.  The checks count every completion: nothing may be lost, and an entry may be completed
twice only when a crash fell between the end of its work and its XACK (at-least-once allows exactly that).
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial

from redis.exceptions import WatchError

from .. import redis_streams as rs
from ..clients import redis_client
from ..workers import BoundedWorkers
from .checking import Lab, call, decided, expect, passed
from .faults import SimulatedCrash, count_commands, interrupting_redis, run_crashed

lab = Lab("02 · a Redis Streams consumer that survives crashes")
hint = lab.hint

PROCESSED_CHOICES = ("keep", "delete")
MAX_CRASH_POINTS = 40


@dataclass(frozen=True)
class Consumer:
    """Who a consumer is and its rules. `dead_letter` defaults to '<stream>:dead'."""
    stream: str
    group: str
    name: str
    dead_letter: str = ""
    max_deliveries: int = 3
    min_idle_ms: int = 1000
    batch: int = 10

    def __post_init__(self):
        if not self.dead_letter:
            object.__setattr__(self, "dead_letter", f"{self.stream}:dead")

    def as_(self, name: str) -> "Consumer":
        """The same consumer settings under another consumer name."""
        return replace(self, name=name)


class Recorder:
    """The check's `handle`: records every start and completion; crashes on chosen entries."""

    def __init__(self, crash_on: set[str] | None = None, crash_always: set[str] | None = None):
        self.started: list[str] = []
        self.completed: list[str] = []
        self.fields: dict[str, dict] = {}
        self.crash_on = set(crash_on or ())      # crash once on these ids (then work normally)
        self.crash_always = set(crash_always or ())  # poison: crash every time

    def __call__(self, entry_id, fields):
        self.started.append(entry_id)
        if entry_id in self.crash_always:
            raise SimulatedCrash(f"the worker died while handling {entry_id}")
        if entry_id in self.crash_on:
            self.crash_on.discard(entry_id)
            raise SimulatedCrash(f"the worker died while handling {entry_id}")
        self.fields[entry_id] = dict(fields)
        self.completed.append(entry_id)

    def counts(self) -> Counter:
        return Counter(self.completed)


@contextmanager
def _fresh_stream(topic: str, group: str = "workers"):
    r = redis_client()
    stream = lab.scratch(topic, kind="redis")
    try:
        rs.create_group(r, stream, group, start="0")
        yield r, stream
    finally:
        rs.delete_stream(r, stream)
        r.close()


def _crash_points(steps: int) -> list[int]:
    points = list(range(1, steps))
    if len(points) > MAX_CRASH_POINTS:
        stride = len(points) / MAX_CRASH_POINTS
        points = sorted({points[int(i * stride)] for i in range(MAX_CRASH_POINTS)})
    return points


def _pending_ids(r, c: Consumer, consumer: str | None = None) -> list[str]:
    return [p["message_id"] for p in rs.pending_of(r, c.stream, c.group, consumer, count=1000)]


def _deliver(r, c: Consumer, consumer: str, count: int) -> list[str]:
    """XREADGROUP '>' as `consumer` on a connection that then closes: that consumer took them and died."""
    taker = redis_client()
    try:
        reply = taker.xreadgroup(c.group, consumer, {c.stream: ">"}, count=count)
        return [i for i, _ in reply[0][1]] if reply else []
    finally:
        taker.close()


def _redeliver(r, c: Consumer, entry_id: str, times: int, to: str) -> None:
    """Count `times` more deliveries of a pending entry (XCLAIM with min-idle 0 increments the count)."""
    for _ in range(times):
        r.xclaim(c.stream, c.group, to, 0, [entry_id])


def _age(r, c: Consumer, entry_ids: list[str], owner: str, idle_ms: int) -> None:
    """Make pending entries look idle for idle_ms without counting a delivery (XCLAIM ... IDLE ... JUSTID):
    what a dead consumer's entries look like after that long, without the check sleeping for it."""
    if entry_ids:
        r.xclaim(c.stream, c.group, owner, 0, entry_ids, idle=idle_ms, justid=True)


def _processed_as_decided(r, c: Consumer, processed: str, done_ids: list[str], blame: str) -> None:
    left = [i for i in done_ids if r.xrange(c.stream, min=i, max=i)]
    if processed == "keep":
        expect(len(left) == len(done_ids),
               f"PROCESSED = 'keep', but {len(done_ids) - len(left)} processed entr(y/ies) are gone from the stream",
               "You decided processed entries stay in the stream (for replay, audits, other groups): only XACK.",
               blame=blame)
    else:
        expect(not left, f"PROCESSED = 'delete', but {len(left)} processed entr(y/ies) are still in the stream: "
               f"{left[:3]}", "You decided a processed entry leaves the stream: delete it in the same step as "
               "its XACK, so a crash cannot leave it acknowledged but still stored (or deleted but pending).",
               blame=blame)


# --- process_entry ----------------------------------------------------------------------------------------

@lab.check("process_entry",
           idea="The entry is acknowledged only after its work is done. Before the work, ask Redis how many "
                "times this entry has been delivered: more than max_deliveries means it keeps killing workers, "
                "so it goes to the dead-letter stream instead, and the copy and the acknowledgement happen "
                "together or not at all.",
           code="XPENDING's extended form for one id: r.xpending_range(stream, group, min=entry_id, max=entry_id, "
                "count=1) gives times_delivered. Dead letter: XADD the fields plus origin_id and deliveries to "
                "c.dead_letter and XACK, both inside one r.pipeline(transaction=True). Otherwise call "
                "handle(entry_id, fields), then XACK (with XDEL in the same transaction if you delete).")
def check_process_entry(process_entry, processed) -> None:
    decided(processed, "PROCESSED", PROCESSED_CHOICES,
            "Keep processed entries (replay, audit, other groups read them; MAXLEN/MINID trims them later) or "
            "delete them (the stream holds only unfinished work, like a queue).")
    with _fresh_stream("lab02-entry") as (r, stream):
        c = Consumer(stream, "workers", "c1", max_deliveries=3)
        ids = rs.add_entries(r, stream, 4)
        _deliver(r, c, "c1", 4)
        handle = Recorder()
        entries = dict(r.xrange(stream))

        # 1. a normal delivery: handled once, acknowledged
        got = call(process_entry, r, c, ids[0], entries[ids[0]], handle)
        expect(handle.completed == [ids[0]], f"process_entry of a first delivery completed {handle.completed} "
               f"in handle, expected [{ids[0]!r}]", "An entry delivered once is handled: call handle(entry_id, "
               "fields).", blame="process_entry")
        expect(handle.fields.get(ids[0]) == entries[ids[0]], f"handle got fields {handle.fields.get(ids[0])}, "
               f"the entry holds {entries[ids[0]]}", "Pass the entry's fields to handle as they are.",
               blame="process_entry")
        expect(ids[0] not in _pending_ids(r, c), f"after process_entry returned, {ids[0]} is still pending "
               "in the group (never acknowledged): every XAUTOCLAIM would hand it out again",
               "Acknowledge the entry (XACK) once its work is done.", blame="process_entry")
        expect(got == "handled", f"process_entry returned {got!r} for a handled entry, expected 'handled'",
               "Return 'handled' or 'dead'.", blame="process_entry")
        _processed_as_decided(r, c, processed, [ids[0]], "process_entry")

        # 2. the worker dies inside handle: the entry must still be pending (acknowledged only after the work)
        crashing = Recorder(crash_on={ids[1]})
        try:
            call(process_entry, r, c, ids[1], entries[ids[1]], crashing, passthrough=(SimulatedCrash,))
        except SimulatedCrash:
            pass
        else:
            expect(False, "handle raised SimulatedCrash (the worker died mid-work) and process_entry returned "
                   "normally", "Do not catch exceptions from handle: a crash must stop the worker before its "
                   "XACK.", blame="process_entry")
        expect(ids[1] in _pending_ids(r, c), f"the worker died inside handle({ids[1]}), yet the entry is no longer "
               "pending: it was acknowledged before its work was done, and is now lost",
               "Acknowledge after the work, never before.", blame="process_entry")

        # 3. delivered exactly max_deliveries times: still handled (more than N goes to the dead letters)
        _redeliver(r, c, ids[2], c.max_deliveries - 1, "c1")
        got = call(process_entry, r, c, ids[2], entries[ids[2]], handle)
        dead = r.xrange(c.dead_letter)
        expect(got == "handled" and ids[2] in handle.completed and not dead,
               f"an entry delivered exactly max_deliveries={c.max_deliveries} times went to "
               f"{'the dead letters' if dead else repr(got)}: dead-lettered one delivery too early",
               "Only an entry delivered MORE than max_deliveries times is dead-lettered.", blame="process_entry")

        # 4. delivered more than max_deliveries times: dead-lettered with its fields, acknowledged, not handled
        _redeliver(r, c, ids[3], c.max_deliveries, "c1")
        got = call(process_entry, r, c, ids[3], entries[ids[3]], handle)
        dead = r.xrange(c.dead_letter)
        expect(ids[3] not in handle.started, f"handle was called for {ids[3]}, delivered "
               f"{c.max_deliveries + 1} times with max_deliveries={c.max_deliveries}: a poison entry would kill "
               "this worker too", "Look up the delivery count (XPENDING) before calling handle, and dead-letter "
               "an entry delivered more than max_deliveries times.", blame="process_entry")
        expect(len(dead) == 1, f"the dead-letter stream {c.dead_letter} holds {len(dead)} entries after one "
               "poison entry, expected 1", "XADD the poison entry to c.dead_letter.", blame="process_entry")
        fields = dead[0][1]
        expect(fields.get("origin_id") == ids[3] and all(fields.get(k) == v for k, v in entries[ids[3]].items()),
               f"the dead letter holds {fields}, expected the original fields {entries[ids[3]]} plus "
               f"origin_id={ids[3]!r}", "Someone will inspect and replay the dead letters: keep the entry's fields "
               "and say which entry it was (origin_id) and how often it was delivered (deliveries).",
               blame="process_entry")
        expect(str(fields.get("deliveries")) == str(c.max_deliveries + 1),
               f"the dead letter says deliveries={fields.get('deliveries')!r}, the entry was delivered "
               f"{c.max_deliveries + 1} times", "Record the delivery count XPENDING gave you.",
               blame="process_entry")
        expect(ids[3] not in _pending_ids(r, c) and got == "dead",
               f"after dead-lettering, {ids[3]} is {'still pending' if ids[3] in _pending_ids(r, c) else 'acked'} "
               f"and process_entry returned {got!r}", "Acknowledge a dead-lettered entry too (it is settled) and "
               "return 'dead'.", blame="process_entry")

    # 5. dead-lettering must be one step: crash after each command, redeliver, retry
    with _fresh_stream("lab02-entry-crash") as (r, stream):
        c = Consumer(stream, "workers", "c1", max_deliveries=1)
        [poison] = rs.add_entries(r, stream, 1)
        _deliver(r, c, "c1", 1)
        _redeliver(r, c, poison, 1, "c1")
        fields = dict(r.xrange(stream))[poison]
        _, commands = count_commands(lambda client: call(process_entry, client, c, poison, fields, Recorder()))
        for k in _crash_points(len(commands)):
            rs.delete_stream(r, stream)
            rs.create_group(r, stream, "workers", start="0")
            [poison] = rs.add_entries(r, stream, 1)
            _deliver(r, c, "c1", 1)
            _redeliver(r, c, poison, 1, "c1")
            run_crashed(process_entry, k, c, poison, fields, Recorder())
            if poison in _pending_ids(r, c):  # redelivered after the crash, then processed by a healthy worker
                _redeliver(r, c, poison, 1, "c2")
                call(process_entry, r, c.as_("c2"), poison, fields, Recorder())
            copies = [f for _, f in r.xrange(c.dead_letter) if f.get("origin_id") == poison]
            expect(len(copies) == 1, f"a worker died after its command {k} of {len(commands)} "
                   f"({' then '.join(commands)}) while dead-lettering {poison}; after a retry the dead-letter "
                   f"stream holds it {len(copies)} times", "Copying to the dead letters and acknowledging must "
                   "happen together: put both in one MULTI/EXEC transaction (r.pipeline(transaction=True)), "
                   "which Redis runs as one step.", blame="process_entry")
            expect(poison not in _pending_ids(r, c), f"after a crash and a retry, {poison} is still pending",
                   "Acknowledge a dead-lettered entry.", blame="process_entry")
    passed("process_entry handles then acknowledges, survives a crash mid-work, and dead-letters an entry "
           "delivered more than max_deliveries times exactly once, even across a crash")


# --- recover_own ------------------------------------------------------------------------------------------

@lab.check("recover_own",
           idea="A consumer that restarts under its name first finishes what it held when it died: those "
                "entries are in the group's pending list under its name, and `>` never returns them again. "
                "Read your own history until it is empty; the new entries are not this function's job.",
           code="r.xreadgroup(c.group, c.name, {c.stream: last_id}, count=c.batch) with last_id '0' first and then "
                "the last id you read returns YOUR pending entries (no BLOCK needed); an empty list for the "
                "stream means you are done. Bound the loop (for _ in range(...)). Each entry goes through "
                "process_entry.")
def check_recover_own(recover_own) -> None:
    with _fresh_stream("lab02-own") as (r, stream):
        c = Consumer(stream, "workers", "c1", batch=2)
        held = rs.add_entries(r, stream, 5)
        _deliver(r, c, "c1", 5)                     # c1 took 5 and died
        peer = rs.add_entries(r, stream, 1)
        _deliver(r, c, "peer", 1)                   # someone else's pending entry: not ours
        new = rs.add_entries(r, stream, 2)          # never delivered: consume's job, not recover_own's
        handle = Recorder()
        n = call(recover_own, r, c, handle)
        missing = [i for i in held if i not in handle.completed]
        expect(not missing, f"recover_own(c1) handled {len(set(handle.completed) & set(held))} of the 5 entries c1 "
               f"held when it died (batch={c.batch}); missing {missing}",
               "Your own pending entries come back only when you read with an id (0, then the last one you got), "
               "never with '>'; and one read returns at most c.batch of them: read until none is left.",
               blame="recover_own")
        foreign = [i for i in handle.completed if i in peer + new]
        expect(not foreign, f"recover_own(c1) also handled {foreign}: "
               f"{'a peer' if set(foreign) & set(peer) else 'new entries'}",
               "Only this consumer's own pending entries: read with an id, not '>', and no XAUTOCLAIM here.",
               blame="recover_own")
        twice = [i for i, k in handle.counts().items() if k > 1]
        expect(not twice, f"recover_own handled {twice} twice without any crash", "Read each pending entry once: "
               "continue after the last id you read.", blame="recover_own")
        expect(not set(held) & set(_pending_ids(r, c, "c1")), "after recover_own, c1 still has pending entries "
               f"{sorted(set(held) & set(_pending_ids(r, c, 'c1')))}", "Each entry goes through process_entry, "
               "which acknowledges it.", blame="recover_own")
        expect(n == 5, f"recover_own returned {n!r}, expected 5 (entries processed)", "Return how many entries "
               "you processed.", blame="recover_own")

    # a worker dies inside handle during recovery; the restarted one must finish the rest
    with _fresh_stream("lab02-own-crash") as (r, stream):
        c = Consumer(stream, "workers", "c1", batch=2)
        held = rs.add_entries(r, stream, 4)
        _deliver(r, c, "c1", 4)
        handle = Recorder(crash_on={held[2]})
        try:
            call(recover_own, r, c, handle, passthrough=(SimulatedCrash,))
        except SimulatedCrash:
            pass
        else:
            expect(False, f"handle raised SimulatedCrash on {held[2]} (the worker died) and recover_own carried on",
                   "Let exceptions from handle propagate: a dead worker does not continue.", blame="recover_own")
        call(recover_own, r, c, handle)               # the restart
        counts = handle.counts()
        expect(all(counts[i] == 1 for i in held), f"after a crash on {held[2]} and a restart, completions per "
               f"entry are {dict(counts)}; expected each of {held} exactly once",
               "After the restart, read your history from 0 again: the entry you died on is still yours.",
               blame="recover_own")

    # a consumer that crash-loops under its own name on a poison entry: each restart's recovery must count a
    # delivery, or the entry never reaches max_deliveries and the consumer dies on it forever
    with _fresh_stream("lab02-own-poison") as (r, stream):
        c = Consumer(stream, "workers", "c1", batch=1)
        poison = rs.add_entries(r, stream, 1)
        _deliver(r, c, "c1", 1)
        handle = Recorder(crash_always=set(poison))
        for restarts in range(1, c.max_deliveries + 2):
            try:
                call(recover_own, r, c, handle, passthrough=(SimulatedCrash,))
                break                                  # it settled the entry: no crash this time
            except SimulatedCrash:
                pass
        still = rs.pending_of(r, stream, c.group, "c1")
        delivered = still[0]["times_delivered"] if still else None
        expect(not still or delivered > 1, f"c1 died on {poison[0]} and restarted under its name {restarts} "
               f"times; each time recover_own handed it to handle, yet XPENDING still says it was delivered "
               f"{delivered} time(s), so it can never reach max_deliveries={c.max_deliveries}: the consumer "
               "will die on it forever", "Read your pending entries with XREADGROUP and an id (0): that read "
               "counts a delivery. Listing them with XPENDING and fetching them with XRANGE counts nothing.",
               blame="recover_own")
        letters = [f.get("origin_id") for _, f in r.xrange(c.dead_letter)]
        expect(letters == poison, f"c1 died on {poison[0]} and restarted under its name {restarts} times; "
               f"XPENDING says delivered {delivered} time(s) (max_deliveries={c.max_deliveries}), and the "
               f"dead-letter stream holds {letters}", "An entry delivered more than max_deliveries times goes to "
               "the dead letters (process_entry).", blame="process_entry")

    # crash after every command, restart, count: nothing lost, duplicates only when work was done but not acked
    with _fresh_stream("lab02-own-kill") as (r, stream):
        c = Consumer(stream, "workers", "c1", batch=2)
        rs.add_entries(r, stream, 3)
        _deliver(r, c, "c1", 3)
        _, commands = count_commands(lambda client: call(recover_own, client, c, Recorder()))
        for k in _crash_points(len(commands)):
            rs.delete_stream(r, stream)
            rs.create_group(r, stream, "workers", start="0")
            held = rs.add_entries(r, stream, 3)
            _deliver(r, c, "c1", 3)
            handle = Recorder()
            run_crashed(recover_own, k, c, handle)
            justified = {i for i in handle.completed if i in _pending_ids(r, c, "c1")}
            call(recover_own, r, c, handle)
            counts = handle.counts()
            lost = [i for i in held if counts[i] == 0]
            expect(not lost, f"c1 died after its command {k} ({' then '.join(commands)}); after the restart "
                   f"{lost} were never completed", "Acknowledge only after the work; restart from id 0.",
                   blame="recover_own")
            unjustified = [i for i in held if counts[i] > 1 and i not in justified]
            expect(not unjustified, f"c1 died after its command {k}; after the restart {unjustified} were completed "
                   "twice although their acknowledgement had reached Redis", "Continue after the last id you read "
                   "instead of re-reading entries you already settled.", blame="recover_own")
    passed("recover_own finishes exactly the entries its consumer held, in batches, across crashes at every step")


# --- claim_dead ------------------------------------------------------------------------------------------

@lab.check("claim_dead",
           idea="Entries held by a consumer that died stay pending under its name forever unless someone claims "
                "them. Claim only entries idle for at least min_idle_ms: a younger one may belong to a live, "
                "busy peer, and taking it makes the work run twice.",
           code="r.xautoclaim(c.stream, c.group, c.name, c.min_idle_ms, start_id=cursor, count=c.batch) returns "
                "[next_cursor, [(id, fields), ...], deleted_ids]; start at '0-0' and call again with next_cursor "
                "until it is '0-0' (bounded). Each claimed entry goes through process_entry.")
def check_claim_dead(claim_dead) -> None:
    with _fresh_stream("lab02-claim") as (r, stream):
        c = Consumer(stream, "workers", "rescuer", min_idle_ms=5000, batch=2)
        rs.add_entries(r, stream, 1)
        # a real consumer process, SIGKILLed while it holds an entry
        with BoundedWorkers(seconds=20, name="lab02") as workers:
            victim = workers.process(partial(rs.group_consumer, work_seconds=60), stream, c.group, "killed")
            workers.wait(until=lambda: rs.pending_of(r, stream, c.group, "killed"))
            victim.kill()
        expect(victim.exitcode == -9, "the check could not kill its consumer process", "(not your code)")
        killed = _pending_ids(r, c, "killed")
        rs.add_entries(r, stream, 4)
        closed = _deliver(r, c, "closed", 4)           # another one whose connection closed mid-work
        dead = killed + closed
        _age(r, c, killed, "killed", 60_000)
        _age(r, c, closed, "closed", 60_000)
        rs.add_entries(r, stream, 1)
        busy = _deliver(r, c, "busy", 1)               # alive and working on it right now
        handle = Recorder()
        n = call(claim_dead, r, c, handle)
        expect(not set(busy) & set(handle.started), f"claim_dead took {busy[0]} from 'busy', a live consumer that "
               f"got it a moment ago (idle < min_idle_ms={c.min_idle_ms}): now two workers run it",
               "Claim only entries idle for at least c.min_idle_ms.", blame="claim_dead")
        missing = [i for i in dead if i not in handle.completed]
        expect(not missing, f"claim_dead handled {len(set(dead) & set(handle.completed))} of the {len(dead)} "
               f"entries of dead consumers (one SIGKILLed, one disconnected; batch={c.batch}); missing {missing}",
               "XAUTOCLAIM returns at most `count` entries and a cursor: call it again from that cursor until "
               "the cursor is 0-0.", blame="claim_dead")
        still = set(dead) & set(_pending_ids(r, c))
        expect(not still, f"after claim_dead, the dead consumers' entries {sorted(still)} are still pending",
               "Each claimed entry goes through process_entry, which acknowledges it.", blame="claim_dead")
        twice = [i for i, k in handle.counts().items() if k > 1]
        expect(not twice, f"claim_dead handled {twice} twice without a crash", "Process each claimed entry once.",
               blame="claim_dead")
        expect(_pending_ids(r, c, "busy") == busy, f"'busy' no longer holds {busy}",
               "Leave live consumers' entries alone.", blame="claim_dead")
        expect(n == len(dead), f"claim_dead returned {n!r}, expected {len(dead)}", "Return how many entries you "
               "processed.", blame="claim_dead")
    passed("claim_dead recovers a SIGKILLed and a disconnected consumer's entries, page by page, and leaves a "
           "live consumer's entry alone")


# --- consume: the whole consumer, and the poison entry ------------------------------------------------------

@lab.check("consume",
           idea="Order matters: your own unfinished entries first, then those of dead peers, then new ones. A "
                "poison entry (one that kills every worker that handles it) must end in the dead-letter stream "
                "after max_deliveries attempts, while everything else is processed exactly once.",
           code="consume = recover_own + claim_dead + a bounded loop of r.xreadgroup(c.group, c.name, {c.stream: "
                "'>'}, count=c.batch) until it returns nothing, each entry through process_entry.")
def check_consume(consume) -> None:
    with _fresh_stream("lab02-consume") as (r, stream):
        # batch=1: with bigger batches, the entries read together with the poison are redelivered with it
        # and count deliveries too (the lab's text discusses it)
        c = Consumer(stream, "workers", "w0", max_deliveries=3, min_idle_ms=5000, batch=1)
        first = rs.add_entries(r, stream, 4)
        held = _deliver(r, c, "w1", 2)                   # w1's previous life took two entries and died
        handle = Recorder()
        call(consume, r, c.as_("w1"), handle)             # w1 restarts
        mine = set(held) & set(_pending_ids(r, c, "w1"))
        expect(not mine, f"consume(w1) returned, yet w1 still holds {sorted(mine)}, the entries it took before "
               "it died (too young for anyone to claim)", "A restarted consumer first finishes its own pending "
               "entries (recover_own), then claims dead peers', then reads new ones.", blame="consume")
        expect(all(handle.counts()[i] == 1 for i in first), f"after consume(w1), completions per entry are "
               f"{dict(handle.counts())}; expected each of {first} once", "Own pending entries, then new ones, "
               "each through process_entry.", blame="consume")
        more = rs.add_entries(r, stream, 5)
        ids, poison = first + more, more[1]
        handle.crash_always = {poison}
        runs = 0
        for runs in range(2, c.max_deliveries + 4):       # each run is a new worker after the previous one died
            me = c.as_(f"w{runs}")
            try:
                call(consume, r, me, handle, passthrough=(SimulatedCrash,))
            except SimulatedCrash:
                _age(r, c, _pending_ids(r, c, me.name), me.name, 60_000)   # the dead worker's entries age
                continue
            break
        counts = handle.counts()
        dead = r.xrange(c.dead_letter)
        attempts = handle.started.count(poison)
        expect(attempts == c.max_deliveries, f"the poison entry {poison} was handed to handle {attempts} times "
               f"(max_deliveries={c.max_deliveries}) over {runs} worker runs",
               "Every worker that dies on it leaves it pending; the next one claims it (one more delivery). "
               "After max_deliveries deliveries it must be dead-lettered, not handled.", blame="consume")
        expect([f.get("origin_id") for _, f in dead] == [poison], f"the dead-letter stream holds "
               f"{[f.get('origin_id') for _, f in dead]}, expected [{poison!r}]",
               "The poison entry, and only it, belongs in c.dead_letter.", blame="consume")
        healthy = [i for i in ids if i != poison]
        wrong = {i: counts[i] for i in healthy if counts[i] != 1}
        expect(not wrong, f"healthy entries completed a wrong number of times: {wrong} (expected 1 each)",
               "Recover your own entries first, then claim dead peers' (idle ones only), then read new ones.",
               blame="consume")
        expect(not _pending_ids(r, c), f"entries still pending after the last worker finished: {_pending_ids(r, c)}",
               "Everything is settled in the end: handled and acknowledged, or dead-lettered and acknowledged.",
               blame="consume")
    passed(f"{len(healthy)} entries processed exactly once across {runs} worker runs (w1 finished its own first); the poison entry was tried "
           f"{c.max_deliveries} times, then dead-lettered")


# --- stretch: an effect applied once per entry ---------------------------------------------------------------

@lab.check("apply_once",
           idea="At-least-once delivery means an entry can be processed twice (a crash between the work and the "
                "XACK). Make the effect itself idempotent: remembering 'entry X was applied' and applying it must "
                "be one step, or a crash between them loses the effect or doubles it.",
           code="One atomic step that checks a per-ledger set of applied entry ids and, only if the id is new, adds "
                "it and applies the amount: a Lua script (r.eval(script, 2, applied_key, ledger_key, entry_id, "
                "amount)) with SADD's return value deciding HINCRBY, or WATCH + MULTI/EXEC.")
def check_apply_once(apply_once) -> None:
    r = redis_client()
    ledger = lab.scratch("lab02-ledger", kind="redis")
    try:
        payments = [(f"1-{i}", amount) for i, amount in enumerate((5, 7, 11))]
        for entry_id, amount in payments:
            call(apply_once, r, ledger, entry_id, amount)
        call(apply_once, r, ledger, payments[1][0], payments[1][1])       # a redelivery
        # the field `balance` only: a solution may keep its "applied" marks in the same hash
        total = int(r.hget(ledger, "balance") or 0) if r.type(ledger) == "hash" else None
        expect(total is not None, f"after apply_once the ledger key {ledger} is a {r.type(ledger)}, "
               "expected a hash of balances", "Apply the amount with HINCRBY on the `ledger` hash (field 'balance').",
               blame="apply_once")
        expect(total == 23, f"3 payments (5, 7, 11) and one redelivery of the 7 gave a balance of {total}, "
               "expected 23", "A redelivered entry id must not be applied again.", blame="apply_once")
        _, commands = count_commands(lambda client: call(apply_once, client, ledger + ":probe", "9-0", 1))
        for k in _crash_points(len(commands)) or []:
            target = f"{ledger}:k{k}"
            run_crashed(apply_once, k, target, "9-0", 10)
            call(apply_once, r, target, "9-0", 10)                          # redelivered after the crash
            got = r.hget(target, "balance")
            expect(got == "10", f"apply_once died after its command {k} ({' then '.join(commands)}); after the "
                   f"redelivery the balance is {got!r}, expected '10'", "Between your commands the 'applied' "
                   "mark and the effect disagree. Make them one step (a Lua script, or WATCH/MULTI/EXEC).",
                   blame="apply_once")
        # a concurrent redelivery (a claim taken from a slow, live consumer): another call with the same id
        # runs to completion between two of this call's commands; the amount must still be applied once
        for k in range(1, len(commands)):
            target = f"{ledger}:race{k}"
            peer = lambda target=target: call(apply_once, r, target, "9-0", 10, passthrough=(WatchError,))
            racing = interrupting_redis(k, peer)
            try:
                call(apply_once, racing, target, "9-0", 10, passthrough=(WatchError,))
            except WatchError:
                pass                    # WATCH saw the other call's write and refused: the entry stays pending
            finally:
                racing.close()
            got = r.hget(target, "balance")
            expect(got == "10", f"two deliveries of the same entry ran at once: one apply_once ran completely "
                   f"between this one's command {k} and {k + 1} ({' then '.join(commands)}); the balance is "
                   f"{got!r}, expected '10'", "Checking the mark and then writing is two steps: another "
                   "delivery of the same entry can pass the check in between. Decide and apply in one step "
                   "(a Lua script, or WATCH/MULTI/EXEC).", blame="apply_once")
    finally:
        for key in r.scan_iter(match=ledger + "*", count=1000):
            r.delete(key)
        r.close()
    passed("each entry's effect applied once: redeliveries, concurrent deliveries and crashes between any two "
           "commands change nothing")


__all__ = ["Consumer", "PROCESSED_CHOICES", "Recorder", "check_apply_once", "check_claim_dead", "check_consume",
           "check_process_entry", "check_recover_own", "hint", "lab"]
