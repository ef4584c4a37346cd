"""The Celery app factory and Celery's own worker and beat processes, against the real Redis.

- delay() on a stopped or frozen Redis fails within 5 s with the course's BrokerUnavailable;
- a worker never outlives its handle, its pool children or the process that started it (even a SIGKILLed kernel);
- per-run apps keep every key under the run's name, and forget_run removes them all.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from brokerlab import BrokerUnavailable, run_name
from brokerlab.celery_app import (BROKER_DB, RESULT_DB, celery_worker, forget_run, make_app, run_keys, start_beat,
                                  start_worker, start_workers)
from brokerlab.clients import redis_client
from brokerlab.endpoints import Endpoints
from brokerlab.errors import StackError
from brokerlab.stack.procs import pid_alive
from brokerlab.stack.scratch import scratch_redis
from brokerlab.waiting import wait_for

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LIMIT = 5.0
sys.path.insert(0, str(NOTEBOOKS))


@contextmanager
def frozen_able_redis():
    """A scratch Redis of this test's own (never the shared stack's), so it can be frozen; its endpoints."""
    with scratch_redis() as server:
        yield server, Endpoints("127.0.0.1", 0, {**Endpoints.from_env().ports, "redis": server.port})


def _assert_clear_and_fast(call, ep: Endpoints):
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        call()
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert elapsed < LIMIT, f"delay() took {elapsed:.1f} s to fail"
    assert "Redis" in message and str(ep.ports["redis"]) in message and "python -m brokerlab stack up" in message
    print(f"delay() failed in {elapsed:.2f} s: {message.splitlines()[0]}")
    return elapsed


# --- fast failure ------------------------------------------------------------------------------------------
def test_delay_on_a_stopped_broker_fails_fast_with_the_course_message():
    dead = Endpoints.from_env(offset=1900)  # nothing listens there
    app = make_app("dead", ep=dead, per_run=True)

    @app.task
    def noop():
        return None

    _assert_clear_and_fast(noop.delay, dead)


def test_delay_on_a_frozen_broker_fails_fast_cold_and_warm():
    with frozen_able_redis() as (server, ep):
        app = make_app("frozen", ep=ep, per_run=True)

        @app.task
        def noop():
            return None

        noop.delay()                           # warm: pooled connections and a result subscription exist
        os.kill(server.pid, signal.SIGSTOP)    # port open, nobody answering
        _assert_clear_and_fast(noop.delay, ep)
        cold = make_app("frozen-cold", ep=ep, per_run=True)

        @cold.task
        def noop_cold():
            return None

        _assert_clear_and_fast(noop_cold.delay, ep)


def test_a_worker_whose_broker_is_down_exits_and_shows_its_log(tmp_path):
    (tmp_path / "dead_broker_app.py").write_text(
        "from brokerlab.celery_app import make_app\n"
        "from brokerlab.endpoints import Endpoints\n"
        "app = make_app('dead', ep=Endpoints.from_env(offset=1900))\n")
    started = time.monotonic()
    with pytest.raises(StackError) as info:
        with celery_worker("dead_broker_app", cwd=tmp_path, ready_timeout=20):
            pass
    assert time.monotonic() - started < 25
    assert "exited" in str(info.value) or "ping" in str(info.value)


# --- workers never outlive their handle or their kernel -----------------------------------------------------
def test_worker_runs_a_task_and_is_gone_after_the_block():
    from celery_apps.orientation import add

    queue = run_name("test-celery")
    with celery_worker("celery_apps.orientation", queues=[queue], cwd=NOTEBOOKS) as worker:
        result = add.apply_async((20, 22), queue=queue)
        assert result.get(timeout=15) == 42
        pid = worker.process.pid
    assert worker.process.returncode is not None and not pid_alive(pid)
    result.forget()
    forget_run(add.app, prefixes=[queue])
    assert run_keys(add.app, prefixes=[queue]) == {BROKER_DB: [], RESULT_DB: []}


def test_stop_and_kill_leave_no_worker_or_pool_process():
    from celery_apps import lesson03 as tasks

    queue = run_name("t-q")
    warm, crashed = start_workers("celery_apps.lesson03",
                                  dict(name=run_name("t-warm"), pool="prefork", concurrency=2, queues=[queue],
                                       cwd=NOTEBOOKS),
                                  dict(name=run_name("t-kill"), pool="prefork", concurrency=2, queues=[queue],
                                       cwd=NOTEBOOKS))
    try:
        assert len(warm.pids()) == 3 and len(crashed.pids()) == 3       # the worker and 2 pool children each
        assert crashed.kill() == -signal.SIGKILL
        assert crashed.all_gone()                                       # the pool children died with it
        assert warm.stop() == 0 and warm.all_gone()
        assert warm.log_contains("ready")                               # its log stays readable
    finally:
        warm.stop(warm=False)
        crashed.stop(warm=False)
        forget_run(tasks.app, prefixes=[queue])


def test_a_worker_dies_with_the_kernel_that_started_it(tmp_path):
    """A notebook kernel that is SIGKILLed (or crashes) takes its workers with it: no orphans."""
    pid_file = tmp_path / "pids"
    queue = run_name("orphan-q")
    kernel = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(NOTEBOOKS)!r})
        from brokerlab.celery_app import start_worker
        worker = start_worker("celery_apps.lesson03", pool="prefork", concurrency=2, cwd={str(NOTEBOOKS)!r},
                              queues=["{queue}"])
        open({str(pid_file)!r}, "w").write(" ".join(map(str, worker.pids())))
        time.sleep(60)
        """)], cwd=NOTEBOOKS)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), seconds=40, what="the worker to start")
        pids = [int(p) for p in pid_file.read_text().split()]
        assert len(pids) == 3 and all(pid_alive(p) for p in pids)
        kernel.kill()                                                    # SIGKILL: no atexit, no cleanup
        kernel.wait(10)
        wait_for(lambda: not any(pid_alive(p) for p in pids), seconds=10,
                 what=lambda: f"the worker's processes to die: {[p for p in pids if pid_alive(p)]} alive")
    finally:
        kernel.kill()
        kernel.wait(10)
        from celery_apps import lesson03 as tasks

        forget_run(tasks.app, prefixes=[queue])


def test_beat_sends_and_stops_without_leftovers():
    from celery_apps import lesson03 as tasks

    r = redis_client()
    worker = start_worker("celery_apps.lesson03", name=run_name("t-beat-worker"), pool="threads", cwd=NOTEBOOKS)
    beat = start_beat("celery_apps.lesson03", name=run_name("t-beat"), cwd=NOTEBOOKS, env={"BEAT_NAME": "t"})
    try:
        wait_for(lambda: r.llen(tasks.BEAT_JOURNAL) >= 2, seconds=20, what="two heartbeats")
    finally:
        beat.stop()
        worker.stop()
        r.delete(tasks.BEAT_JOURNAL)
        forget_run(tasks.app)
        r.close()
    assert beat.all_gone() and worker.all_gone()
    assert not list(beat.schedule_file.parent.glob(beat.schedule_file.name + "*"))


# --- per-run isolation -------------------------------------------------------------------------------------
def test_a_per_run_app_keeps_its_keys_under_its_name_and_forget_run_removes_them():
    from celery_apps import lesson03 as tasks

    app = tasks.app
    assert app.conf.task_default_queue == tasks.RUN != "celery"
    options = app.conf.broker_transport_options
    assert options["unacked_key"].startswith(tasks.RUN) and options["visibility_timeout"] == tasks.VISIBILITY_TIMEOUT
    result = tasks.add.delay(1, 2)                       # no worker: it stays queued
    keys = run_keys(app)
    assert tasks.RUN in keys[BROKER_DB]
    forget_run(app)
    assert run_keys(app) == {BROKER_DB: [], RESULT_DB: []}
    assert result.id


def test_two_runs_get_different_queues(monkeypatch):
    from brokerlab.celery_app import run_id_variable

    monkeypatch.delenv(run_id_variable("isolated"), raising=False)
    first = make_app("isolated", per_run=True).conf.task_default_queue
    monkeypatch.delenv(run_id_variable("isolated"))
    second = make_app("isolated", per_run=True).conf.task_default_queue
    assert first != second and "celery" not in (first, second)


def test_old_worker_logs_are_pruned_but_never_a_recent_one(tmp_path):
    import os
    import time

    from brokerlab.celery_app import prune_old_logs

    now = time.time()
    for i in range(50):
        log = tmp_path / f"worker-{i}.log"
        log.write_text("x")
        age = 7200 if i < 45 else 60          # 45 old logs, 5 from the last minutes
        os.utime(log, (now - age - i, now - age - i))
    prune_old_logs(tmp_path, keep=10)
    left = sorted(int(p.stem.split("-")[1]) for p in tmp_path.glob("*.log"))
    assert left == list(range(0, 5)) + list(range(45, 50))   # the 5 newest old ones + the 5 recent
