"""Redis Streams with consumer groups: the consumer notebook 02 runs (in threads, or in a process it kills).

Bookkeeping keys for a stream S (S is named per run):

    S:done:G       hash entry id -> how many times group G completed it
    S:by:G         hash consumer -> how many entries it completed for group G

A consumer opens its own client, so it can run in a separate process; every
loop is bounded by a deadline and a count.
"""
from __future__ import annotations

import time
from typing import Callable

from .clients import redis_client

BLOCK_MS = 500  # XREADGROUP BLOCK, below the client's socket timeout (3 s)


def done_key(stream: str, group: str) -> str:
    return f"{stream}:done:{group}"


def by_consumer_key(stream: str, group: str) -> str:
    return f"{stream}:by:{group}"


def add_entries(r, stream: str, n: int, field: str = "order", maxlen: int | None = None) -> list[str]:
    """XADD n entries {field: i}; returns their ids (assigned by Redis: milliseconds-sequence)."""
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, {field: i}, maxlen=maxlen, approximate=False)
    return pipe.execute()


def create_group(r, stream: str, group: str, start: str = "0") -> None:
    """XGROUP CREATE ... MKSTREAM. start='0': the group will read every entry already there; '$': only new ones."""
    r.xgroup_create(stream, group, id=start, mkstream=True)


def group_consumer(stream: str, group: str, consumer: str, seconds: float = 10.0, max_entries: int | None = None,
                   work_seconds: float = 0.0, stop_when_idle: bool = True,
                   until: Callable[[], bool] | None = None, recover_pending: bool = True) -> int:
    """The reference consumer: its own pending entries first, then new ones; each one 'worked',
    recorded, XACKed. Returns how many entries it completed.

    A consumer that restarts under the same name first reads its own history (XREADGROUP with id 0,
    then after the last id it saw) until that is empty, and only then reads `>` (entries never
    delivered to the group), as the XREADGROUP documentation describes. Between XREADGROUP and
    XACK the entry sits in the group's pending entries list under this consumer's name: kill the
    process there and Redis still remembers it for the restart (or for XAUTOCLAIM by a peer).

    recover_pending=False reads only `>`: the anti-pattern notebook 02 reproduces (a restarted
    consumer never sees what it held when it died)."""
    r = redis_client()
    deadline = time.monotonic() + seconds
    completed = 0
    cursor = "0" if recover_pending else ">"  # "0": my pending entries from the start; ">": new entries
    try:
        while time.monotonic() < deadline and (max_entries is None or completed < max_entries):
            if until is not None and not until():
                break
            # BLOCK only applies to ">": a read of one's own history answers at once
            reply = r.xreadgroup(group, consumer, {stream: cursor}, count=1,
                                 block=BLOCK_MS if cursor == ">" else None)
            entries = reply[0][1] if reply else []
            if not entries:
                if cursor != ">":
                    cursor = ">"  # my history is empty: from now on, new entries
                    continue
                if stop_when_idle:
                    break
                continue
            entry_id, fields = entries[0]
            if cursor != ">":
                cursor = entry_id  # the next history read starts after this entry
            if not fields:  # pending, but the entry was deleted (trimmed) meanwhile: nothing left to do
                r.xack(stream, group, entry_id)
                continue
            time.sleep(max(0.0, min(work_seconds, deadline - time.monotonic())))
            r.hincrby(done_key(stream, group), entry_id, 1)
            r.hincrby(by_consumer_key(stream, group), consumer, 1)
            r.xack(stream, group, entry_id)
            completed += 1
    finally:
        r.close()
    return completed


def done_by(r, stream: str, group: str) -> dict[str, int]:
    """consumer -> entries completed, for one group."""
    return {c: int(n) for c, n in r.hgetall(by_consumer_key(stream, group)).items()}


def done_ids(r, stream: str, group: str) -> dict[str, int]:
    """entry id -> times completed, for one group."""
    return {i: int(n) for i, n in r.hgetall(done_key(stream, group)).items()}


def pending_of(r, stream: str, group: str, consumer: str | None = None, count: int = 100) -> list[dict]:
    """XPENDING's extended form: [{message_id, consumer, time_since_delivered, times_delivered}]."""
    if consumer is None:
        return r.xpending_range(stream, group, "-", "+", count)
    return r.xpending_range(stream, group, "-", "+", count, consumername=consumer)


def autoclaim_all(r, stream: str, group: str, consumer: str, min_idle_ms: int, max_rounds: int = 100):
    """XAUTOCLAIM every pending entry idle for at least min_idle_ms, following the cursor (bounded).

    Returns (claimed [(id, fields)], deleted ids): ids whose entry was trimmed away while pending."""
    claimed, deleted, cursor = [], [], "0-0"
    for _ in range(max_rounds):
        reply = r.xautoclaim(stream, group, consumer, min_idle_ms, start_id=cursor, count=100)
        cursor, entries = reply[0], reply[1]
        claimed += entries
        if len(reply) > 2:  # Redis >= 7.0 also names pending ids whose entries no longer exist
            deleted += reply[2]
        if cursor == "0-0":
            break
    return claimed, deleted


def delete_stream(r, stream: str) -> int:
    keys = [stream, *r.scan_iter(match=f"{stream}:*", count=200)]
    return r.delete(*keys) if keys else 0


# --- what Redis 8.2 / 8.4 / 8.6 add to streams ----------------------------------------------------------

NEWER_STREAM_COMMANDS = {
    # name: (the release that adds it (Redis Open Source release notes), the command it probes with)
    "XACKDEL (XACK + delete in one command)": ((8, 2), lambda s, e: ("XACKDEL", s, "g", "IDS", 1, e)),
    "XDELEX (delete, with KEEPREF / DELREF / ACKED)": ((8, 2), lambda s, e: ("XDELEX", s, "ACKED", "IDS", 1, e)),
    "XADD ... ACKED (trim only entries every group acked)": ((8, 2), lambda s, e: ("XADD", s, "ACKED", "MAXLEN",
                                                                                   "=", 1, "*", "f", "v")),
    "XREADGROUP ... CLAIM (idle pending + new in one read)": ((8, 4), lambda s, e: ("XREADGROUP", "GROUP", "g", "c",
                                                                                    "CLAIM", 0, "STREAMS", s, ">")),
    "XADD ... IDMP (idempotent produce)": ((8, 6), lambda s, e: ("XADD", s, "IDMP", "producer-1", "msg-1", "*",
                                                                 "f", "v")),
}


def server_version(r) -> tuple[int, int]:
    major, minor, *_ = r.info("server")["redis_version"].split(".")
    return int(major), int(minor)


def probe_newer_commands(r, stream: str) -> dict[str, dict]:
    """Send each command of NEWER_STREAM_COMMANDS to this Redis, on a throw-away stream (deleted after),
    and record whether Redis accepted it: {name: {"since": (8, 2), "accepted": bool, "reply": reply or error}}."""
    import redis

    results = {}
    try:
        create_group(r, stream, "g", start="0")
        entry = r.xadd(stream, {"f": "v"})
        for name, (since, command) in NEWER_STREAM_COMMANDS.items():
            try:
                reply, accepted = r.execute_command(*command(stream, entry)), True
            except redis.exceptions.ResponseError as exc:
                reply, accepted = str(exc).split(",")[0], False
            results[name] = {"since": since, "accepted": accepted, "reply": reply}
    finally:
        r.delete(stream)
    return results
