"""brokerlab.broker_crashes against real scratch servers: a broker SIGKILLed and restarted on its data folder.

Each test starts its own private servers (never the shared stack) and leaves none running."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import brokerlab as bl
from brokerlab import broker_crashes as crashes
from brokerlab.stack.procs import pid_alive
from brokerlab.stack.scratch import leftovers, scratch_rabbitmq, scratch_redis
from brokerlab.waiting import wait_for

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_rabbitmq_keeps_only_durable_queues_with_persistent_messages_across_a_kill():
    with scratch_rabbitmq() as node:
        run = bl.run_name("crash-test")
        queues = {setup.label: f"{run}.q{i}" for i, setup in enumerate(crashes.QUEUE_SETUPS)}
        for setup in crashes.QUEUE_SETUPS:
            crashes.declare_queue(node, queues[setup.label], setup)
        declared = time.time()
        # a new quorum queue's member reaches the disk once the table is idle for 0.5 s (the fresh queue below)
        assert wait_for(lambda: crashes.quorum_registrations_saved(node, declared), 10)
        histories = {s.label: crashes.fill_queue(node, queues[s.label], s, 30) for s in crashes.QUEUE_SETUPS}
        assert all(len(h.acknowledged) == 30 and h.healthy_rate > 0 for h in histories.values())
        fresh = crashes.fill_queue(node, f"{run}.fresh", crashes.QUEUE_SETUPS[3], 5)  # declared right before the kill
        histories["fresh"] = fresh

        pid = crashes.kill(node, histories.values(), "the node")
        assert not pid_alive(pid) and all(h.faults[0].pid == pid for h in histories.values())
        crashes.restart_with(node)  # at once: the launcher must be gone too (it was not, once)
        assert wait_for(lambda: crashes.quorum_recovered(node, queues["quorum queue"]), 60, "quorum recovery")

        member = crashes.quorum_member(node, f"{run}.fresh")
        assert member["Term"] == 0 and member["Last Written"] == -1 and member["Raft State"] != "leader"
        assert "name_not_registered" in node.service.log_file.read_text()
        assert fresh.check([]).require_fault().lost == 5
        read = {label: crashes.read_back(node, queue, 30) for label, queue in queues.items()}
        assert read["transient queue, persistent messages"] is None        # the queue is gone
        assert read["durable queue, transient messages"] == []             # back, empty
        assert read["durable queue, persistent messages"] == list(range(30))
        assert read["quorum queue"] == list(range(30))
        lost = {label: histories[label].check(ids or []).require_fault().lost for label, ids in read.items()}
        assert lost == {"transient queue, persistent messages": 30, "durable queue, transient messages": 30,
                        "durable queue, persistent messages": 0, "quorum queue": 0}

        # RabbitMQ 4.0.5 permits transient non-exclusive queues; with the permit set to false it refuses them
        assert crashes.declare_refusal(node, f"{run}.t2", durable=False) is None
        node.stop()
        crashes.restart_with(node, {"deprecated_features.permit.transient_nonexcl_queues": "false"})
        refused = crashes.declare_refusal(node, f"{run}.t3", durable=False)
        assert refused and refused.startswith("541") and "transient_nonexcl_queues" in refused
        assert crashes.declare_refusal(node, f"{run}.x", exclusive=True) is None
        assert crashes.queue_depth(node, f"{run}.nothing") is None
    assert leftovers(owner=os.getpid()) == []


def test_kill_refuses_a_server_that_is_not_running():
    with scratch_redis() as server:
        crashes.kill(server)
        with pytest.raises(RuntimeError, match="not running"):
            crashes.kill(server)
        server.restart()
        assert server.client().ping()


def test_celery_tasks_on_redis_vanish_without_persistence_and_run_after_a_restart_with_aof():
    run = bl.run_name("crash-test")
    live, parked = f"{run}.live", f"{run}.parked"
    with scratch_redis() as results, scratch_redis() as volatile, \
            scratch_redis(appendonly="yes", appendfsync="everysec") as aof:
        crashes.crash_app("redis", aof, results, run, {live: "classic", parked: "classic"})
        crashes.crash_app("redis_volatile", volatile, results, run, {parked: "classic"})
        worker = crashes.start_crash_worker("redis", [live], NOTEBOOKS, f"{run}-w")
        try:
            worker.wait_ready(60)
            app, volatile_app = worker.app, crashes.app_from_environment("redis_volatile")
            assert app.conf.broker_url == aof.url and app.conf.broker_connection_max_retries == crashes.RECONNECT_ATTEMPTS
            work, volatile_work = app.tasks["crash_redis.work"], volatile_app.tasks["crash_redis_volatile.work"]
            kept = [work.apply_async((f"a{i}",), queue=parked) for i in range(5)]
            gone = [volatile_work.apply_async((f"v{i}",), queue=parked) for i in range(5)]
            assert aof.client().llen(parked) == volatile.client().llen(parked) == 5

            crashes.kill(aof)
            crashes.kill(volatile)
            outcome, seconds = crashes.publish_timed(work, "down")
            assert isinstance(outcome, bl.BrokerUnavailable) and seconds < 5
            assert wait_for(lambda: crashes.reconnections(worker) >= 1, 15, "the worker to retry")
            aof.restart()
            volatile.restart()

            assert volatile.client().llen(parked) == 0 and aof.client().llen(parked) == 5
            assert wait_for(lambda: crashes.answers_ping(worker), 30, "reconnect")
            app.control.add_consumer(parked, destination=[worker.nodename], reply=True)
            assert [r.get(timeout=20)["label"] for r in kept] == [f"a{i}" for i in range(5)]
            assert all(r.state == "PENDING" for r in gone) and worker.alive
        finally:
            worker.stop()
        assert worker.all_gone()


def test_celery_on_rabbitmq_quorum_queues_keeps_waiting_tasks_and_redelivers_a_running_acks_late_task():
    run = bl.run_name("crash-test")
    live, parked = f"{run}.live", f"{run}.parked"
    with scratch_redis() as results, scratch_rabbitmq() as node:
        crashes.crash_app("rabbitmq", node, results, run, {live: "quorum", parked: "quorum"})
        worker = crashes.start_crash_worker("rabbitmq", [live], NOTEBOOKS, f"{run}-w")
        try:
            app = worker.app
            assert crashes.declare_queues(app) == [live, parked]
            declared = time.time()
            worker.wait_ready(60)
            assert wait_for(lambda: crashes.quorum_registrations_saved(node, declared), 10)
            assert {q["name"]: q["type"] for q in node.api_get("queues")}[parked] == "quorum"
            assert app.conf.broker_transport_options["confirm_publish"] is True
            assert wait_for(lambda: worker.log_contains("Global QoS is disabled"), 10)
            waiting = [app.tasks["crash_rabbitmq.work"].apply_async((f"q{i}",), queue=parked) for i in range(5)]
            release = f"{run}:release"
            held = app.tasks["crash_rabbitmq.hold"].apply_async(("h1", release), queue=live)
            assert wait_for(lambda: crashes.journal(results, run, event="started", label="h1"), 15)
            assert crashes.queue_depth(node, parked) == 5

            crashes.kill(node)
            node.restart()
            assert wait_for(lambda: crashes.quorum_recovered(node, parked), 60)
            assert crashes.queue_depth(node, parked) == 5
            assert wait_for(lambda: crashes.answers_ping(worker), 40, "reconnect")
            app.control.add_consumer(parked, destination=[worker.nodename], reply=True)
            assert [r.get(timeout=30)["label"] for r in waiting] == [f"q{i}" for i in range(5)]

            results.client().set(release, 1)
            assert wait_for(lambda: len(crashes.journal(results, run, event="finished", label="h1")) == 2, 30)
            assert [e["redelivered"] for e in crashes.journal(results, run, event="started")] == [False, True]
            assert held.get(timeout=10)["label"] == "h1" and crashes.reconnections(worker) >= 1
        finally:
            worker.stop()
        assert worker.all_gone()
