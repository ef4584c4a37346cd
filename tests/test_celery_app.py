"""The Celery app factory and the bounded worker, against the real brokers."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from brokerlab import run_name
from brokerlab.celery_app import celery_worker, make_app
from brokerlab.endpoints import Endpoints
from brokerlab.errors import StackError
from brokerlab.stack.procs import pid_alive

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_worker_runs_a_task_and_is_gone_after_the_block():
    sys.path.insert(0, str(NOTEBOOKS))
    from celery_apps.orientation import add

    queue = run_name("test-celery")
    with celery_worker("celery_apps.orientation", queues=[queue], cwd=NOTEBOOKS) as worker:
        assert add.apply_async((20, 22), queue=queue).get(timeout=15) == 42
        pid = worker.process.pid
    assert worker.process.returncode is not None and not pid_alive(pid)


def test_sending_a_task_to_a_stopped_broker_fails_within_seconds():
    dead = Endpoints.from_env(offset=1900)  # nothing listens there
    app = make_app("dead", broker="redis", ep=dead)

    @app.task
    def noop():
        return None

    started = time.monotonic()
    with pytest.raises(Exception):
        noop.delay()
    assert time.monotonic() - started < 5


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
