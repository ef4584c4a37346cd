"""Shared fixtures.  The broker stack itself is started by brokerlab.pytest_plugin."""
from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager

import pytest

from brokerlab import stack
from brokerlab.endpoints import current
from brokerlab.health import probe


@pytest.fixture
def ep():
    return current()


@contextmanager
def _frozen(broker: str):
    """SIGSTOP the broker's process (port open, nobody answering), SIGCONT it afterwards,
    and wait until it answers again so later tests see a healthy stack."""
    service = next(s for s in stack.services(current()) if s.name == broker)
    pids = service.pids()
    assert pids, f"no running {broker} process of the test stack to freeze"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 60
        while not probe([broker])[broker].ok:
            assert time.monotonic() < deadline, f"{broker} did not recover after SIGCONT"
            time.sleep(0.2)


@pytest.fixture
def frozen():
    """`with frozen("kafka"): ...` runs the block while that broker of the test stack is SIGSTOPped."""
    return _frozen


@pytest.fixture
def r():
    """A Redis client of the test stack, closed after the test."""
    from brokerlab.clients import redis_client

    client = redis_client()
    yield client
    client.close()


@pytest.fixture
def queue(r):
    """A per-test queue name for brokerlab.redis_queue; every key under it is deleted afterwards."""
    from brokerlab import redis_queue, run_name

    name = run_name("test-queue")
    yield name
    redis_queue.delete_queue(r, name)
    assert list(r.scan_iter(match=name + "*")) == []
