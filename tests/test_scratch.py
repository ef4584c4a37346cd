"""Scratch brokers: private processes a notebook may kill, restart or starve, always gone afterwards."""
from __future__ import annotations

import os
import shutil
import signal

import pytest

from brokerlab.waiting import wait_for
from brokerlab.stack.procs import pid_alive, port_in_use
from brokerlab.stack.scratch import leftovers, scratch_rabbitmq, scratch_redis


def test_scratch_redis_survives_kill_9_with_appendonly_and_restarts_on_the_same_data():
    with scratch_redis(appendonly="yes", appendfsync="always") as server:
        assert server.client().config_get("appendonly") == {"appendonly": "yes"}
        server.client().set("order:1", "paid")
        first = server.pid
        assert server.kill() == first and not pid_alive(first)
        assert not port_in_use("127.0.0.1", server.port)
        server.restart()
        assert server.pid != first
        assert server.client().get("order:1") == "paid"  # replayed from the append-only file
        folder, port, pid = server.data_dir, server.port, server.pid
    assert not pid_alive(pid) and not port_in_use("127.0.0.1", port) and not folder.exists()


def test_scratch_redis_without_persistence_loses_everything_on_kill():
    with scratch_redis() as server:
        server.client().set("order:1", "paid")
        server.kill()
        server.restart()
        assert server.client().get("order:1") is None


def test_scratch_redis_takes_any_setting_and_the_caller_may_signal_its_pid():
    with scratch_redis(maxmemory="2mb", maxmemory_policy="allkeys-lru") as server:
        client = server.client()
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        assert client.config_get("maxmemory") == {"maxmemory": str(2 * 2**20)}
        os.kill(server.pid, signal.SIGSTOP)  # a frozen server, as a slow-subscriber demo might want
        os.kill(server.pid, signal.SIGCONT)
        assert client.ping()


def test_scratch_redis_is_stopped_when_the_block_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with scratch_redis() as server:
            pid, port = server.pid, server.port
            raise RuntimeError("boom")
    assert not pid_alive(pid) and not port_in_use("127.0.0.1", port)
    assert leftovers(owner=os.getpid()) == []


def test_scratch_rabbitmq_with_a_memory_limit_and_its_own_tools():
    with scratch_rabbitmq({"vm_memory_high_watermark.absolute": "200MiB"}) as node:
        assert node.api_get("overview")["rabbitmq_version"] == "4.0.5"
        # the node's statistics appear a moment after it starts
        me = wait_for(lambda: [n for n in node.api_get("nodes") if "mem_limit" in n], 15, "node statistics")[0]
        assert me["name"] == node.nodename and me["mem_limit"] == 200 * 2**20
        status = node.ctl("rabbitmq-diagnostics", "-q", "check_running")
        assert status.returncode == 0, status.stdout + status.stderr
        connection = node.connection()
        assert connection.is_open
        connection.close()
        pid, ports = node.pid, dict(node.ep.ports)
    assert not pid_alive(pid)
    for name in ("amqp", "rabbitmq_management", "erlang_dist", "epmd"):
        assert not port_in_use("127.0.0.1", ports[name]), f"{name} port {ports[name]} still open"
    assert leftovers(owner=os.getpid()) == []


def test_in_docker_mode_scratch_servers_are_containers_of_the_compose_images(monkeypatch):
    """No Docker engine here: check the containers docker mode would start (same image tags as compose)."""
    from brokerlab.stack import scratch
    from brokerlab.stack.versions import compose_images

    monkeypatch.setenv("BROKERLAB_STACK", "docker")
    assert scratch.scratch_mode() == "docker"
    redis = scratch.DockerScratchRedis({"appendonly": "yes", "maxmemory_policy": "allkeys-lru"})
    argv = redis.run_argv()
    assert compose_images()["redis"] in argv and f"127.0.0.1:{redis.port}:6379" in argv
    assert argv[argv.index("redis-server"):] == ["redis-server", "--appendonly", "yes",
                                                 "--maxmemory-policy", "allkeys-lru"]
    assert redis.url == f"redis://127.0.0.1:{redis.port}/0"
    rabbit = scratch.DockerScratchRabbitMQ({"vm_memory_high_watermark.absolute": "200MiB"})
    try:
        argv = rabbit.run_argv()
        assert argv[-1] == compose_images()["rabbitmq"]
        assert f"127.0.0.1:{rabbit.ep.ports['amqp']}:5672" in argv
        assert "vm_memory_high_watermark.absolute = 200MiB" in rabbit.conf_file.read_text()
    finally:
        shutil.rmtree(rabbit.dir, ignore_errors=True)  # nothing was started
    monkeypatch.setenv("BROKERLAB_STACK", "native")
    assert scratch.scratch_mode() == "native"


def test_a_scratch_rabbitmq_cluster_forms_and_goes_away():
    from brokerlab.stack.scratch import scratch_rabbitmq_cluster

    with scratch_rabbitmq_cluster(nodes=2) as (first, second):
        running = wait_for(lambda: {n["name"] for n in first.api_get("nodes") if n.get("running")}
                           == {first.nodename, second.nodename}, 30, "both nodes running in one cluster")
        assert running
        pids = [first.pid, second.pid]
        epmd = first.ep.ports["epmd"]
    assert not any(pid_alive(pid) for pid in pids)
    assert not port_in_use("127.0.0.1", epmd)
    assert leftovers(owner=os.getpid()) == []


def test_stack_down_stops_a_scratch_rabbitmq_whose_kernel_died_before_its_cleanup():
    import subprocess
    import sys
    import textwrap

    from brokerlab.stack.procs import pids_naming
    from brokerlab.stack.scratch import stop_scratch_leftovers

    # a "kernel" that starts a scratch RabbitMQ, prints its folder and is then SIGKILLed: no cleanup runs.
    # RabbitMQ's Erlang VM does not die with it (a Redis does: it gets the parent-death signal).
    kernel = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import time
        from brokerlab.stack.scratch import scratch_rabbitmq
        with scratch_rabbitmq() as server:
            print(server.dir, flush=True)
            time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        folder = kernel.stdout.readline().strip()
        assert folder and pids_naming(f"{folder}/")
        assert not stop_scratch_leftovers() or pids_naming(f"{folder}/")  # its kernel still runs: left to it
        kernel.kill()
        kernel.wait()
        orphans = pids_naming(f"{folder}/")
        assert orphans, "the Erlang VM died with its kernel: nothing for stack down to do"
        assert set(orphans) <= set(stop_scratch_leftovers())               # `stack down` sweeps them
        assert wait_for(lambda: not pids_naming(f"{folder}/"), 15)
    finally:
        kernel.kill()
        kernel.wait()
