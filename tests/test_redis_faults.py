"""brokerlab.redis_faults on scratch Redis servers (never the shared stack): a slow subscriber dropped,
a queue evicted, acknowledged writes lost to a kill -9 per persistence mode, a one-node cluster's slots;
and the Redis 8.x stream-command probe against the stack's version."""
import os

import pytest
import redis

import brokerlab as bl
from brokerlab import redis_faults as rf
from brokerlab import redis_queue as rq
from brokerlab import redis_streams as rs
from brokerlab.stack.scratch import leftovers, scratch_redis


@pytest.fixture(autouse=True)
def no_scratch_server_left():
    yield
    assert leftovers(owner=os.getpid()) == []


def test_slow_subscriber_is_disconnected_and_loses_what_publish_counted():
    with scratch_redis() as server:
        publisher = server.client()
        publisher.config_set("client-output-buffer-limit", "pubsub 256kb 128kb 1")
        slow = server.client().pubsub()
        slow.subscribe("ch")
        assert slow.get_message(timeout=1)["type"] == "subscribe"
        sent = rf.publish_until_disconnected(publisher, "ch", "x" * 4096)
        got = rf.drain(slow)
    assert sent["disconnections"] == 1 and sent["published"] < 20_000
    assert got["closed_by_server"] and 0 < got["received"] < sent["delivered"] <= sent["published"]


def test_a_subscriber_that_keeps_up_is_not_disconnected():
    with scratch_redis() as server:
        publisher = server.client()
        reader = server.client().pubsub()
        reader.subscribe("ch")
        assert reader.get_message(timeout=1)["type"] == "subscribe"
        sent = rf.publish_until_disconnected(publisher, "ch", "x" * 100, max_messages=200, chunk=50)
        got = rf.drain(reader)
    assert sent == {"published": 200, "delivered": 200, "disconnections": 0}
    assert got == {"received": 200, "closed_by_server": False}


@pytest.mark.parametrize("policy, evicted", [("allkeys-lru", True), ("noeviction", False)])
def test_queue_evicted_only_under_an_allkeys_policy(policy, evicted):
    with scratch_redis(maxmemory="4mb", maxmemory_policy=policy) as server:
        client = server.client()
        rq.push_tasks(client, "jobs", 2000)
        result = rf.fill_until_gone(client, "jobs")
        assert result["key_exists"] is not evicted
        assert (result["evicted_keys"] > 0) is evicted
        assert (result["refused"] is None) is evicted
        if not evicted:
            assert client.llen("jobs") == 2000


@pytest.mark.parametrize("settings, snapshot_after, lost", [
    (dict(save="", appendonly="no"), None, 300),
    (dict(save="3600 1", appendonly="no"), 100, 200),
    (dict(save="", appendonly="yes", appendfsync="always"), None, 0),
])
def test_kill_and_restart_counts_lost_acknowledged_writes(settings, snapshot_after, lost):
    with scratch_redis(**settings) as server:
        first_pid = server.pid
        result = rf.push_kill_restart(server, "q", 300, snapshot_after=snapshot_after)
        assert server.pid and server.pid != first_pid          # really a new process
    assert result["acknowledged"] == 300 and result["lost"] == lost


def test_one_node_cluster_refuses_crossslot_and_accepts_a_hash_tag():
    with rf.one_node_cluster() as node:
        client = node.client()
        assert int(client.cluster("info")["cluster_slots_assigned"]) == 16384
        slot = lambda key: client.execute_command("CLUSTER", "KEYSLOT", key)  # noqa: E731
        assert slot("orders") != slot(rq.processing_key("orders", "w"))
        assert slot("{orders}") == slot(rq.processing_key("{orders}", "w")) == slot(rq.dead_letter_key("{orders}"))
        client.lpush("orders", "t")
        with pytest.raises(redis.exceptions.ResponseError, match="same slot"):
            client.lmove("orders", rq.processing_key("orders", "w"))
        client.lpush("{orders}", "t")
        assert client.lmove("{orders}", rq.processing_key("{orders}", "w"), "RIGHT", "LEFT") == "t"


def test_redis_queue_works_with_a_hash_tagged_queue_name(r):
    queue = "{" + bl.run_name("test-tagged") + "}"
    try:
        tasks = rq.push_tasks(r, queue, 4)
        with bl.BoundedWorkers(seconds=20) as workers:
            workers.thread(rq.reliable_worker, queue, "w", until=workers.running)
        assert rq.outcome(r, queue, tasks)["done"] == sorted(tasks)
        r.lpush(rq.processing_key(queue, "ghost"), "stuck")
        assert rq.reap(r, queue) == ["stuck"]
    finally:
        rq.delete_queue(r, queue)
    assert list(r.scan_iter(match=queue + "*")) == []


def test_newer_stream_commands_are_accepted_exactly_from_their_release(r):
    stream = bl.run_name("test-probe")
    probes = rs.probe_newer_commands(r, stream)
    version = rs.server_version(r)
    assert set(probes) == set(rs.NEWER_STREAM_COMMANDS)
    assert all(p["accepted"] == (version >= p["since"]) for p in probes.values())
    assert not r.exists(stream)
