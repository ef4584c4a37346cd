"""The native launcher, on real processes: idempotent up, clean down, leftovers, port clashes, bad set-ups."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import time

import pytest

from brokerlab import stack
from brokerlab.endpoints import Endpoints, current
from brokerlab.errors import StackError
from brokerlab.stack import kafka_dist
from brokerlab.stack.native import RedisService, apt_install
from brokerlab.stack.paths import stack_dir
from brokerlab.stack.procs import pid_alive

SIDE_OFFSET = 300  # a third port set, beside the learner's (0) and the test suite's (100)


@pytest.fixture
def side_redis():
    ep = Endpoints.from_env(offset=SIDE_OFFSET)
    service = RedisService(ep, stack_dir(SIDE_OFFSET))
    yield service
    service.stop()
    shutil.rmtree(stack_dir(SIDE_OFFSET), ignore_errors=True)


def test_a_second_stack_runs_beside_the_test_stack_and_stops_cleanly(side_redis):
    assert side_redis.needs_start()
    side_redis.start_and_wait()
    assert side_redis.healthy() and current().ports["redis"] != side_redis.ep.ports["redis"]
    pid = side_redis.pids()[0]
    side_redis.stop()
    assert not pid_alive(pid) and side_redis.pids() == []
    assert not side_redis.healthy()


def test_a_killed_run_leaves_a_stale_pid_file_that_up_clears(side_redis):
    side_redis.start_and_wait()
    pid = side_redis.pids()[0]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert side_redis.pid_file.exists()  # what the killed run left behind
    assert side_redis.needs_start()
    side_redis.start_and_wait()
    assert side_redis.healthy() and side_redis.pids()[0] != pid


def test_a_frozen_leftover_is_stopped_and_replaced(side_redis):
    side_redis.start_and_wait()
    pid = side_redis.pids()[0]
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert side_redis.needs_start()  # it holds the port but does not answer: ours, so it is stopped
        assert not pid_alive(pid)
        assert time.monotonic() - started < 15
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGCONT)
    side_redis.start_and_wait()
    assert side_redis.healthy()


def test_a_port_taken_by_another_program_is_named_with_a_way_out(side_redis):
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", side_redis.ep.ports["redis"]))
    squatter.listen()
    try:
        with pytest.raises(StackError) as info:
            side_redis.needs_start()
    finally:
        squatter.close()
    message = str(info.value)
    assert str(side_redis.ep.ports["redis"]) in message
    assert f"pid {os.getpid()}" in message  # the owner, found through /proc
    assert "BROKERLAB_PORT_OFFSET" in message


def test_up_on_a_running_stack_is_idempotent_and_quick(capsys):
    started = time.monotonic()
    outcome = stack.up()
    elapsed = time.monotonic() - started
    assert outcome == {"redis": "already running", "rabbitmq": "already running", "kafka": "already running"}
    assert elapsed < 5
    out = capsys.readouterr().out
    assert current().kafka_bootstrap in out and current().redis_url in out
    print(f"warm `stack up` on a running stack: {elapsed:.2f} s")


def test_status_reports_every_broker_with_its_memory():
    report = stack.status()
    assert report["mode"] == "native"
    total = 0
    for name, row in report["brokers"].items():
        assert row["healthy"], name
        assert row["pids"] and row["rss_bytes"] > 0, name
        total += row["rss_bytes"]
    print(f"stack resident memory: {total / 2**20:.0f} MiB")
    assert total < 2**30  # the course's budget: 1 GiB for the three brokers


def test_mode_follows_the_docker_engine(monkeypatch):
    monkeypatch.setenv("BROKERLAB_STACK", "docker")
    assert stack.choose_mode(current())[0] == "docker"
    monkeypatch.setenv("BROKERLAB_STACK", "sideways")
    with pytest.raises(StackError, match="native, docker or auto"):
        stack.choose_mode(current())
    monkeypatch.setenv("BROKERLAB_STACK", "auto")
    side = Endpoints.from_env(offset=SIDE_OFFSET + 7)  # no recorded mode
    expected = "docker" if stack.compose.engine_available() else "native"
    assert stack.choose_mode(side)[0] == expected


def test_pinned_kafka_jars_are_verified(tmp_path):
    libs = tmp_path / "libs"
    libs.mkdir()
    cached = kafka_dist.classpath().rstrip("*")
    for name in kafka_dist.expected_digests():
        (libs / name).symlink_to(os.path.join(cached, name))
    kafka_dist.verify(libs)  # the cache matches the committed digests
    victim = sorted(kafka_dist.expected_digests())[0]
    (libs / victim).unlink()
    (libs / victim).write_bytes(b"not the jar")
    with pytest.raises(StackError, match="SHA-256"):
        kafka_dist.verify(libs)
    (libs / victim).unlink()
    with pytest.raises(StackError, match="missing"):
        kafka_dist.verify(libs)


def test_no_jdk_is_explained(monkeypatch, tmp_path):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match="openjdk-17"):
        kafka_dist.java_binary()


def test_no_apt_is_explained(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match="Docker"):
        apt_install("redis-server")


def test_a_killed_stack_up_leaves_nothing_mounted_and_down_stops_everything_it_started():
    """SIGKILL `stack up` while RabbitMQ is still starting (no pid file yet), then `stack down`."""
    import subprocess
    import sys
    from pathlib import Path

    from brokerlab.stack.procs import pids_naming, port_in_use

    side = Endpoints.from_env(offset=SIDE_OFFSET + 17)
    folder = stack_dir(side.offset)
    launcher = subprocess.Popen([sys.executable, "-m", "brokerlab", "stack", "up"],
                                env={**os.environ, "BROKERLAB_PORT_OFFSET": str(side.offset)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not pids_naming(f"{folder}/rabbitmq/"):  # RabbitMQ's launcher is running
            assert launcher.poll() is None and time.monotonic() < deadline, "RabbitMQ never started"
            time.sleep(0.05)
    finally:
        launcher.kill()
        launcher.wait()
    try:
        assert f" {folder}" not in Path("/proc/self/mountinfo").read_text()  # bwrap mounts nothing on the host
    finally:
        stack.down(side)
    assert pids_naming(f"{folder}/") == []
    busy = [name for name, port in side.ports.items() if port_in_use(side.host, port)]
    assert busy == [], f"ports still answering after down: {busy}"
    shutil.rmtree(folder, ignore_errors=True)


def test_a_broker_running_another_version_than_the_pins_is_restarted(side_redis, monkeypatch, capsys):
    """E.g. a stack started before the pins moved (Redis 7 from Debian 12): `up` replaces it."""
    from brokerlab.stack import versions

    side_redis.start_and_wait()
    first = side_redis.pids()[0]
    assert not side_redis.needs_start()  # the pinned version: left alone
    monkeypatch.setattr(versions, "native_pins", lambda: {"redis": "9.9.9", "rabbitmq": "4.0.5", "kafka": "4.3.1"})
    assert side_redis.needs_start()  # another version: stopped, to be started from the current root
    assert not pid_alive(first)
    assert "Redis 8.0.2 is running, the course pins 9.9.9: restarting it" in capsys.readouterr().out


def test_rabbitmq_data_of_another_version_is_deleted_before_start(tmp_path, capsys):
    """3.10's mnesia under 4.0 fails with schema_integrity_check_failed: the launcher starts on fresh data."""
    from brokerlab.stack.native import RabbitMQService

    service = RabbitMQService(Endpoints.from_env(offset=SIDE_OFFSET + 19), tmp_path)
    old_data = service.dir / "mnesia" / "rabbit@old"
    old_data.mkdir(parents=True)
    (service.dir / "data-version").write_text("rabbitmq-server 3.10.8 (host)\n")
    service.reset_data_of_another_version()
    assert not (service.dir / "mnesia").exists()
    assert "written by rabbitmq-server 3.10.8 (host)" in capsys.readouterr().out
    kept = service.dir / "mnesia" / "queues"
    kept.mkdir(parents=True)
    service.reset_data_of_another_version()  # same version now: the data stays
    assert kept.exists()


def test_a_failed_start_shows_the_logs_first_errors_above_its_last_lines(tmp_path):
    from brokerlab.stack.procs import tail

    log = tmp_path / "server.log"
    log.write_text("\n".join(["INFO starting"] * 5 + ["ERROR [KafkaServer] bind: Address already in use"]
                             + ["INFO shutting down"] * 40))
    shown = tail(log).splitlines()
    assert "ERROR [KafkaServer] bind: Address already in use" in shown and shown[-1] == "INFO shutting down"
    log.write_text("\n".join(["INFO fine"] * 30))
    assert tail(log).splitlines() == ["INFO fine"] * 20           # nothing to add when nothing went wrong
