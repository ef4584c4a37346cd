"""Lesson 07's experiments on real scratch clusters: a fault is really injected, and the checker's counts
separate the unsafe setting from the safe one."""
from __future__ import annotations

import pytest

from brokerlab import durability
from brokerlab.stack.scratch import scratch_kafka_cluster, scratch_rabbitmq_cluster, scratch_redis_sentinel

pytestmark = pytest.mark.cluster  # starts 3-node clusters: run in turn with the other cluster users


def test_redis_async_replication_loses_acknowledged_writes_and_wait_does_not():
    with scratch_redis_sentinel() as group:
        unsafe = durability.redis_failover(group, "a", wait_for_replica=False)
    with scratch_redis_sentinel() as group:
        safe = durability.redis_failover(group, "b", wait_for_replica=True, during=10)
    print(unsafe, safe, sep="\n")
    assert unsafe.require_fault().lost > 0
    assert safe.require_fault().lost == 0 and safe.acknowledged > 0 and safe.failed >= 10


def test_rabbitmq_quorum_queue_keeps_every_confirmed_message_when_its_leader_dies():
    with scratch_rabbitmq_cluster(3) as nodes:
        quorum = durability.rabbitmq_leader_kill(nodes, "q-quorum", "quorum")
        classic = durability.rabbitmq_leader_kill(nodes, "q-classic", "classic", leader_index=1)
    print(quorum, classic, sep="\n")
    assert quorum.require_fault().lost == 0 and quorum.acknowledged >= 300
    assert classic.require_fault().received == 0 and classic.lost >= 300


def test_kafka_acks_isr_shrink_unclean_election_and_a_group_consumer_across_the_leader_kill():
    # one cluster for all four runs, in the notebook's order (each run kills a node; the killed one is restarted)
    with scratch_kafka_cluster() as cluster:
        acks1 = durability.kafka_leader_kill(cluster, "t-acks1", "1")
        cluster.restart_dead()
        run = durability.kafka_unclean_election(cluster, "t-isr", before=50, during=50)
        # the unclean run restarted the old leader: three nodes again
        acks_all = durability.kafka_leader_kill(cluster, "t-acksall", "all", min_insync=2, group="g-across")
    clean, unclean = run.reports["clean"], run.reports["unclean"]
    print(acks1, run, clean, unclean, acks_all, sep="\n")
    # acks=1 loses what only the leader had, acks=all with min.insync.replicas=2 does not
    assert acks1.require_fault().lost > 0
    assert acks_all.require_fault().lost == 0 and acks_all.acknowledged >= 300
    # the ISR shrank to the leader, and min.insync.replicas (not acks=all) is what refused
    assert all(isr == sorted([run.leader, run.follower]) for isr in run.isr_before.values())
    assert all(isr == [run.leader] for isr in run.isr_paused.values())
    assert run.lag_time_max_ms == 5000
    assert run.answers == {"acks=all, min.insync.replicas=2": "NOT_ENOUGH_REPLICAS",
                           "acks=1, min.insync.replicas=2": "acknowledged",
                           "acks=all, min.insync.replicas=1": "acknowledged"}
    # unclean election: the out-of-sync follower leads and the leader's solo acknowledgements are gone
    assert run.unclean_default == "false"
    assert run.after_kill["unclean"] == (run.follower, [run.follower])
    assert unclean.require_fault().lost > 0 and unclean.received >= 50
    assert run.after_kill["clean"][0] == -1 and run.offline_read == 0 and run.offline_error != "acknowledged"
    assert clean.require_fault().lost == 0 and clean.acknowledged == 100
    # the group's consumer read through the leader kill, missed nothing, and its offsets came back from another node
    notes = acks_all.notes
    assert notes["read after the kill"] > 0
    assert notes["coordinator before the kill"] == notes["leader killed"] != notes["coordinator after the kill"]
    assert notes["committed before the fault"] == 300
    # the offsets came back from another node, not reset (301 when the consumer had already read the one message
    # sent after the pause, seen once under load)
    assert notes["committed, answered after the kill"] >= 300
    assert notes["committed at the end"] == notes["end offset"]
