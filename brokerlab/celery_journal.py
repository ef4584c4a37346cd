"""A journal in Redis that Celery tasks write and notebooks read: what ran, where, when.

A task runs in another process (a worker, maybe a pool child), so counting its side effects
needs a shared place.  Each entry is one JSON object pushed on a Redis list (database 0):

    note(journal, "charged", payment=7)   # inside a task
    entries(journal)                      # in the notebook: [{"what": "charged", "payment": 7, "at": ..., ...}]

`at` is wall-clock time (time.time()), comparable between processes on one machine.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time

from .clients import redis_client

_clients: dict[int, object] = {}
_lock = threading.Lock()


def _client():
    """One client per process: a prefork child must not share its parent's socket."""
    pid = os.getpid()
    with _lock:
        if pid not in _clients:
            _clients.clear()
            _clients[pid] = redis_client()
        return _clients[pid]


def note(journal: str, what: str, task=None, **fields) -> dict:
    """Append one entry; `task` (a bound task's self) adds its id, retries and worker."""
    entry = {"what": what, "at": time.time(), "pid": os.getpid(), **fields}
    if task is not None:
        request = task.request
        entry.update(task_id=request.id, retries=request.retries, worker=request.hostname or socket.gethostname())
    _client().rpush(journal, json.dumps(entry))
    return entry


def entries(journal: str, what: str | None = None, client=None) -> list[dict]:
    """Every entry so far, oldest first (only those whose `what` matches, if given)."""
    raw = (client or _client()).lrange(journal, 0, -1)
    found = [json.loads(item) for item in raw]
    return [e for e in found if what is None or e["what"] == what]


def count(journal: str, what: str, client=None, **match) -> int:
    return sum(1 for e in entries(journal, what, client) if all(e.get(k) == v for k, v in match.items()))


def wait_released(flag: str, seconds: float) -> bool:
    """Block (bounded) until the Redis key `flag` exists: lets a notebook hold a task mid-way
    and crash its worker at a known point.  True if released, False at the deadline."""
    deadline = time.monotonic() + seconds
    client = _client()
    while time.monotonic() < deadline:
        if client.exists(flag):
            return True
        time.sleep(0.05)
    return False
