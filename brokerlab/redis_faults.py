"""The ways Redis still loses messages, reproduced on a scratch Redis (notebooks 01 and 02).

Every function here takes a client (or a server) of a *scratch* Redis started with
`brokerlab.stack.scratch.scratch_redis(...)`: these demos change server settings, fill memory,
disconnect clients and SIGKILL the server, which must never happen to the shared stack (other
notebooks run against it in parallel).  Every loop is bounded by a count.

    with scratch_redis() as server:
        server.client().config_set("client-output-buffer-limit", "pubsub 256kb 128kb 1")
        ...
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import redis

from .stack.scratch import free_ports, scratch_redis
from .waiting import wait_for


def _disconnections(client) -> int:
    return int(client.info("stats").get("client_output_buffer_limit_disconnections", 0))


def publish_until_disconnected(publisher, channel: str, payload: str, max_messages: int = 20_000,
                               chunk: int = 500) -> dict:
    """PUBLISH `payload` in pipelined chunks until Redis disconnects a subscriber whose output buffer
    passed its limit (INFO stats client_output_buffer_limit_disconnections rises), or max_messages.

    Returns {"published": messages sent, "delivered": the sum of PUBLISH's replies (messages Redis
    counted as delivered to a subscriber), "disconnections": how many clients Redis dropped}."""
    before = _disconnections(publisher)
    published = delivered = 0
    while published < max_messages:
        pipe = publisher.pipeline(transaction=False)
        for _ in range(min(chunk, max_messages - published)):
            pipe.publish(channel, payload)
        replies = pipe.execute()
        published += len(replies)
        delivered += sum(replies)
        if _disconnections(publisher) > before:
            break
    return {"published": published, "delivered": delivered, "disconnections": _disconnections(publisher) - before}


def drain(pubsub, max_messages: int = 100_000, quiet: float = 0.5) -> dict:
    """Read a subscriber's messages until none comes for `quiet` seconds or the server closed the
    connection.  Returns {"received": n, "closed_by_server": bool}."""
    received, closed = 0, False
    for _ in range(max_messages):
        try:
            message = pubsub.get_message(timeout=quiet)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            closed = True
            break
        if message is None:
            break
        if message["type"] == "message":
            received += 1
    return {"received": received, "closed_by_server": closed}


def fill_until_gone(client, key: str, value_size: int = 50_000, max_writes: int = 2_000,
                    prefix: str = "cache") -> dict:
    """SET cache entries of `value_size` bytes until `key` has been evicted, a write is refused, or
    max_writes.  Returns {"writes": n accepted, "key_exists": bool, "evicted_keys": INFO stats count,
    "refused": the error text of a refused write, or None}."""
    value = "x" * value_size
    writes, refused = 0, None
    for i in range(max_writes):
        try:
            client.set(f"{prefix}:{i}", value)
        except redis.exceptions.ResponseError as exc:  # OOM under noeviction: the write is refused
            refused = str(exc)
            break
        writes += 1
        if not client.exists(key):
            break
    return {"writes": writes, "key_exists": bool(client.exists(key)),
            "evicted_keys": int(client.info("stats")["evicted_keys"]), "refused": refused}


def push_kill_restart(server, queue: str, n: int, snapshot_after: int | None = None) -> dict:
    """LPUSH n tasks, each acknowledged by Redis (pipelined in chunks), optionally BGSAVE after
    `snapshot_after` of them; SIGKILL the server, restart it on the same data folder, and count.

    Returns {"acknowledged": n, "after_restart": LLEN after the restart, "lost": acknowledged - kept,
    "unwritten_aof_bytes": INFO persistence aof_buffer_length just before the kill,
    "delayed_fsyncs": aof_delayed_fsync just before the kill}.

    With AOF everysec, Redis normally write()s the AOF before it answers, so a process crash loses
    nothing. But while a background fsync is still running (a busy disk), it postpones the write for up
    to 2 s and answers anyway: acknowledged writes then sit in its AOF buffer (aof_buffer_length > 0) and
    die with the process; after 2 s it writes and counts aof_delayed_fsync."""
    client = server.client()
    try:
        before_snapshot = n if snapshot_after is None else snapshot_after
        acknowledged = _push(client, queue, 0, before_snapshot)
        if snapshot_after is not None:
            _snapshot(client)
            acknowledged += _push(client, queue, before_snapshot, n - before_snapshot)
        persistence = client.info("persistence")  # nothing is written after this: the kill comes next
    finally:
        client.close()
    server.kill()
    server.restart()
    client = server.client()
    try:
        kept = client.llen(queue)
    finally:
        client.close()
    return {"acknowledged": acknowledged, "after_restart": kept, "lost": acknowledged - kept,
            "unwritten_aof_bytes": int(persistence.get("aof_buffer_length", 0)),
            "delayed_fsyncs": int(persistence.get("aof_delayed_fsync", 0))}


def _push(client, queue: str, first: int, count: int, chunk: int = 500) -> int:
    """LPUSH task-first .. in pipelined chunks; returns how many Redis acknowledged."""
    acknowledged = 0
    for start in range(first, first + count, chunk):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + chunk, first + count)):
            pipe.lpush(queue, f"task-{i}")
        acknowledged += sum(1 for reply in pipe.execute() if isinstance(reply, int))  # a reply = an ack
    return acknowledged


def _snapshot(client) -> None:
    """BGSAVE and wait until the snapshot is on disk (no save in progress, no change since it)."""
    client.bgsave()

    def saved():
        info = client.info("persistence")
        return not info["rdb_bgsave_in_progress"] and info["rdb_changes_since_last_save"] == 0

    wait_for(saved, seconds=10, what="the scratch Redis to finish BGSAVE")


@contextmanager
def one_node_cluster() -> Iterator:
    """A scratch Redis in cluster mode that serves all 16384 hash slots itself: the smallest Redis
    Cluster, enough to see hash slots and CROSSSLOT errors.  Yields the ScratchRedis."""
    # the cluster bus listens on port+10000 unless told otherwise: a kernel-picked port may be too high
    with scratch_redis(cluster_enabled="yes", cluster_port=free_ports(1)[0]) as node:
        client = node.client()
        try:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            wait_for(lambda: client.cluster("info")["cluster_state"] == "ok", seconds=15,
                     what="the one-node scratch cluster to reach cluster_state:ok")
        finally:
            client.close()
        yield node


__all__ = ["drain", "fill_until_gone", "one_node_cluster", "publish_until_disconnected", "push_kill_restart"]
