"""The cluster profile (lesson 07): 3 Kafka KRaft nodes, 3 clustered RabbitMQ nodes, Redis primary + replica +
Sentinel, all scratch servers: started on demand, failing over for real, and gone afterwards."""
from __future__ import annotations

import os
import time

import pytest

from brokerlab.stack.procs import pid_alive, port_in_use, port_owner
from brokerlab.stack.scratch import (RedisSentinelGroup, leftovers, scratch_cluster, scratch_kafka_cluster,
                                     scratch_redis_sentinel, stop_cluster_leftovers)
from brokerlab.stack.scratch import partition_leader
from brokerlab.waiting import wait_for

pytestmark = pytest.mark.cluster  # starts 3-node clusters: run in turn with the other cluster users

START_BOUND = 60.0   # issue 15: the profile starts in at most a minute
MEMORY_BOUND = 2.5 * 2**30


def test_the_whole_profile_starts_within_a_minute_fits_in_memory_and_is_gone_afterwards():
    started = time.monotonic()
    with scratch_cluster() as profile:
        elapsed = time.monotonic() - started
        memory = profile.rss_bytes()
        print(f"cluster profile: started in {elapsed:.1f} s {profile.start_seconds}, resident memory "
              + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in memory.items())
              + f", total {sum(memory.values()) / 2**20:.0f} MiB")
        assert len(profile.kafka.pids()) == 3
        running = {n["name"] for n in profile.rabbitmq[0].api_get("nodes") if n["running"]}
        assert running == {n.nodename for n in profile.rabbitmq}
        assert profile.redis.current_primary()[1] == profile.redis.primary.port
        pids = profile.pids()
        ports = [n.port for n in profile.kafka.nodes] + [n.ep.ports["amqp"] for n in profile.rabbitmq]
        folders = [str(profile.kafka.dir)] + [str(n.dir) for n in profile.rabbitmq]
        assert elapsed <= START_BOUND, f"cluster profile took {elapsed:.1f} s to start"
        assert sum(memory.values()) <= MEMORY_BOUND
    assert not [p for p in pids if pid_alive(p)], "a cluster process outlived its block"
    # A freed port may at once be taken by another scratch server of a parallel test (they pick from the same
    # range): what must not be left is a listener of this profile's own processes or folders (every process of
    # the profile is already known dead above; a listener /proc cannot attribute is someone else's).
    held = [(port, port_owner(port)) for port in ports if port_in_use("127.0.0.1", port)]
    assert not [(port, owner) for port, owner in held
                if owner and (owner[0] in pids or any(folder in owner[1] for folder in folders))], held
    assert not leftovers(owner=os.getpid())


def test_kafka_cluster_moves_leadership_when_the_leader_is_killed():
    from confluent_kafka.admin import NewTopic

    with scratch_kafka_cluster() as cluster:
        print(f"3-node Kafka cluster started in {cluster.start_seconds:.1f} s")
        admin = cluster.admin()
        # leader on node 2 on purpose (the first replica listed is the preferred leader)
        admin.create_topics([NewTopic("t", num_partitions=1, replica_assignment=[[2, 3, 1]],
                                     config={"min.insync.replicas": "2"})]
                            )["t"].result(30)
        leader = lambda: partition_leader(admin, "t", 0)  # noqa: E731
        assert wait_for(lambda: leader() == 2, 30, "node 2 to lead t-0")
        cluster.node(2).kill()
        assert wait_for(lambda: leader() in (1, 3), 30, "a new leader for t-0")


def test_redis_sentinel_promotes_the_replica_when_the_primary_is_killed():
    with scratch_redis_sentinel() as group:
        old = group.primary.port
        group.primary.kill()
        wait_for(lambda: group.current_primary()[1] == group.replica.port, 30, "Sentinel to promote the replica")
        assert group.replica.client().info("replication")["role"] == "master"
        assert old != group.replica.port


def test_stack_down_stops_cluster_leftovers_of_a_killed_notebook():
    group = RedisSentinelGroup()
    try:
        group.start()
        pids = group.pids()
        assert len(pids) == 3
        assert set(pids) <= set(stop_cluster_leftovers())  # what `stack down` calls
        assert not [p for p in pids if pid_alive(p)] and not group.primary.dir.exists()
    finally:
        group.close()


def test_stack_down_leaves_the_cluster_of_a_running_notebook_alone():
    import shutil
    import subprocess

    from brokerlab.stack.scratch import scratch_root

    owner, member = subprocess.Popen(["sleep", "60"]), subprocess.Popen(["sleep", "60"])
    folder = scratch_root() / f"cluster-test-p{owner.pid}-0123abcd"
    folder.mkdir(parents=True)
    (folder / "member.pid").write_text(f"{member.pid}\n")
    try:
        assert member.pid not in stop_cluster_leftovers() and member.poll() is None  # its owner runs
        owner.kill()
        owner.wait()
        assert member.pid in stop_cluster_leftovers()  # its owner is gone: a leftover
        assert member.wait(timeout=10) is not None and not folder.exists()
    finally:
        for process in (owner, member):
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)
