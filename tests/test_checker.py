"""The Jepsen-style checker: its arithmetic, and its verdicts on real scratch Redis servers that are SIGKILLed."""
from __future__ import annotations

import signal

import pytest

from brokerlab.checker import History
from brokerlab.stack.procs import pid_alive, port_in_use, wait_gone
from brokerlab.stack.scratch import scratch_redis
from brokerlab.waiting import wait_for


def test_report_counts_lost_duplicated_and_unacknowledged():
    history = History("arithmetic")
    for i in range(5):
        history.acked(i)
    history.failed(5, "timeout")
    report = history.check([0, 1, 1, 3, 5])  # 2 and 4 lost, 1 twice, 5 came back although never acknowledged
    assert (report.attempted, report.acknowledged, report.failed) == (6, 5, 1)
    assert (report.received, report.lost, report.duplicated, report.unacknowledged_received) == (4, 2, 1, 1)
    assert report.lost_ids == [2, 4]


def test_a_quiet_run_cannot_claim_lost_zero():
    history = History("quiet")
    history.acked("a")
    report = history.check(["a"])
    assert report.lost == 0 and not report.faulted
    with pytest.raises(AssertionError, match="no fault was injected"):
        report.require_fault()


def test_notes_go_into_the_report_as_they_were_when_it_was_made():
    history = History("notes")
    history.note("leader after the kill", 2)
    report = history.check([])
    history.note("leader after the kill", 3)  # a later note does not rewrite a verdict already given
    assert report.notes == {"leader after the kill": 2}


def _write_kill_read(server, history: History, count: int, kill_after: int) -> list[str]:
    """SET count keys (one acknowledgement per reply), SIGKILL the server after kill_after of them
    through the checker, restart it on the same data folder and read every key back."""
    client = server.client()
    for i in range(count):
        if i == kill_after:
            pid = server.pid
            history.inject(pid, signal.SIGKILL, f"scratch redis :{server.port}")
            assert wait_gone(pid, 10)
            wait_for(lambda: not port_in_use("127.0.0.1", server.port), 10, "the killed server's port to close")
            break
        client.set(f"m:{i}", "v")
        history.acked(f"m:{i}")
    history.done_publishing()
    server.restart()
    client = server.client()
    return [f"m:{i}" for i in range(count) if client.exists(f"m:{i}")]


def test_checker_counts_every_acknowledged_write_lost_without_persistence():
    with scratch_redis() as server:
        history = History("redis, no persistence")
        received = _write_kill_read(server, history, count=300, kill_after=200)
        report = history.check(received)
    fault = report.require_fault().faults[0]
    assert fault.signal == "SIGKILL" and fault.acked_before == 200 and fault.pid and not pid_alive(fault.pid)
    assert (report.acknowledged, report.received, report.lost) == (200, 0, 200)


def test_checker_finds_nothing_lost_with_appendfsync_always_after_a_real_kill():
    with scratch_redis(appendonly="yes", appendfsync="always") as server:
        history = History("redis, appendfsync always")
        received = _write_kill_read(server, history, count=300, kill_after=200)
        report = history.check(received)
    assert report.require_fault().faults[0].acked_before == 200
    assert (report.acknowledged, report.received, report.lost, report.duplicated) == (200, 200, 0, 0)
