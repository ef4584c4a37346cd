"""Redis lists as a work queue: the workers notebook 01 runs (naive and reliable) and the reaper.

Key layout for a queue named Q (Q itself is named per run):

    Q                  the queue: producers LPUSH, workers take from the right (FIFO)
    Q:processing:W     worker W's in-flight tasks (reliable pattern only)
    Q:alive:W          worker W's heartbeat: a key that expires unless W keeps refreshing it
    Q:taken            a log of every take, "W task", newest first: what a notebook waits on
    Q:done             hash task -> how many times it was completed (2 means done twice)
    Q:by_worker        hash worker -> how many tasks it completed

Every key derives from the queue's name, so in Redis Cluster a queue named with a hash tag,
"{orders}", keeps all of them in one slot, which BLMOVE/LMOVE between the queue and a processing
list require (without a tag: CROSSSLOT; notebook 01's Cluster section shows both).

Workers open their own client, so the same function runs in a thread or in a
separate process (a process is what a notebook kills to simulate a crash).
Every loop is bounded by a deadline and a count; `until` lets a thread worker
also stop when a BoundedWorkers block ends.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from .clients import redis_client

BLOCK = 0.5  # seconds a blocking pop waits; below the client's socket timeout (3 s), or redis-py times out


# --- key names ----------------------------------------------------------------------------

def processing_key(queue: str, worker: str) -> str:
    return f"{queue}:processing:{worker}"


def alive_key(queue: str, worker: str) -> str:
    return f"{queue}:alive:{worker}"


def taken_key(queue: str) -> str:
    return f"{queue}:taken"


def done_key(queue: str) -> str:
    return f"{queue}:done"


def by_worker_key(queue: str) -> str:
    return f"{queue}:by_worker"


def dead_letter_key(queue: str) -> str:
    return f"{queue}:dead"


def attempts_key(queue: str) -> str:
    return f"{queue}:attempts"


# --- producing and counting ------------------------------------------------------------------

def push_tasks(r, queue: str, n: int, prefix: str = "task") -> list[str]:
    """LPUSH n tasks named prefix-0 .. prefix-(n-1); returns their names in push order."""
    tasks = [f"{prefix}-{i}" for i in range(n)]
    if tasks:
        r.lpush(queue, *tasks)
    return tasks


def taken_by(r, queue: str, worker: str) -> list[str]:
    """Tasks `worker` has taken so far (from the take log)."""
    return [entry.split(" ", 1)[1] for entry in r.lrange(taken_key(queue), 0, -1)
            if entry.split(" ", 1)[0] == worker]


def outcome(r, queue: str, tasks: list[str]) -> dict:
    """Where each task ended up: done (once or more), still waiting, in flight, or lost (nowhere)."""
    done = {task: int(count) for task, count in r.hgetall(done_key(queue)).items()}
    waiting = set(r.lrange(queue, 0, -1))
    in_flight = set()
    for key in r.scan_iter(match=processing_key(queue, "*"), count=100):
        in_flight.update(r.lrange(key, 0, -1))
    dead = set(r.lrange(dead_letter_key(queue), 0, -1))
    lost = [t for t in tasks if t not in done and t not in waiting and t not in in_flight and t not in dead]
    return {
        "done": sorted(t for t in tasks if t in done),
        "done_twice": sorted(t for t in tasks if done.get(t, 0) > 1),
        "waiting": sorted(t for t in tasks if t in waiting),
        "in_flight": sorted(t for t in tasks if t in in_flight),
        "dead": sorted(t for t in tasks if t in dead),
        "lost": lost,
        "by_worker": {w: int(n) for w, n in r.hgetall(by_worker_key(queue)).items()},
    }


def delete_queue(r, queue: str) -> int:
    """Delete the queue and every key derived from it; returns how many keys went."""
    keys = [queue, *r.scan_iter(match=f"{queue}:*", count=200)]
    return r.delete(*keys) if keys else 0


# --- the workers -------------------------------------------------------------------------------

def _complete(r, queue: str, worker: str, task: str, work_seconds: float, deadline: float) -> None:
    """'Do' the task (sleep, bounded by the deadline), then record it as done."""
    time.sleep(max(0.0, min(work_seconds, deadline - time.monotonic())))
    r.hincrby(done_key(queue), task, 1)
    r.hincrby(by_worker_key(queue), worker, 1)


def _keep_going(deadline: float, count: int, max_tasks: int | None, until: Callable[[], bool] | None) -> bool:
    if time.monotonic() >= deadline or (max_tasks is not None and count >= max_tasks):
        return False
    return until is None or until()


def naive_worker(queue: str, worker: str, seconds: float = 10.0, max_tasks: int | None = None,
                 work_seconds: float = 0.0, stop_when_empty: bool = True,
                 until: Callable[[], bool] | None = None) -> int:
    """BRPOP a task, work, record it. Returns how many tasks it completed.

    Between BRPOP and "done" the task exists only in this process's memory:
    kill the process there and the task is gone."""
    r = redis_client()
    deadline = time.monotonic() + seconds
    completed = 0
    try:
        while _keep_going(deadline, completed, max_tasks, until):
            popped = r.brpop([queue], timeout=BLOCK)
            if popped is None:
                if stop_when_empty:
                    break
                continue
            task = popped[1]
            r.lpush(taken_key(queue), f"{worker} {task}")  # only a log: nothing can recover the task from it
            _complete(r, queue, worker, task, work_seconds, deadline)
            completed += 1
    finally:
        r.close()
    return completed


def _heartbeat(r, queue: str, worker: str, ttl: float, stop: threading.Event) -> None:
    """Refresh the worker's alive key until stopped; if the process dies, the key expires after `ttl`."""
    while not stop.wait(ttl / 3):
        r.set(alive_key(queue, worker), "1", px=int(ttl * 1000))


def reliable_worker(queue: str, worker: str, seconds: float = 10.0, max_tasks: int | None = None,
                    work_seconds: float = 0.0, stop_when_empty: bool = True, heartbeat_ttl: float = 1.0,
                    until: Callable[[], bool] | None = None) -> int:
    """BLMOVE a task into this worker's processing list, work, then acknowledge with LREM.

    The task is always in Redis: in the queue, or in Q:processing:W until acknowledged.
    A heartbeat key tells the reaper this worker is alive. Returns how many tasks it completed."""
    r = redis_client()
    mine = processing_key(queue, worker)
    deadline = time.monotonic() + seconds
    # Announce liveness before taking anything, so the reaper never mistakes us for dead.
    r.set(alive_key(queue, worker), "1", px=int(heartbeat_ttl * 1000))
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(redis_client(), queue, worker, heartbeat_ttl, stop),
                            name=f"heartbeat-{worker}", daemon=True)
    beat.start()
    completed = 0
    try:
        while _keep_going(deadline, completed, max_tasks, until):
            task = r.blmove(queue, mine, BLOCK, "RIGHT", "LEFT")  # atomic: never in neither list
            if task is None:
                if stop_when_empty:
                    break
                continue
            r.lpush(taken_key(queue), f"{worker} {task}")
            _complete(r, queue, worker, task, work_seconds, deadline)
            r.lrem(mine, 1, task)  # the acknowledgement: only now does the task leave Redis
            completed += 1
    finally:
        stop.set()
        beat.join(heartbeat_ttl)
        r.delete(alive_key(queue, worker))  # a clean exit; our processing list is empty
        r.close()
    return completed


# --- the reaper ------------------------------------------------------------------------------------

def processing_lists(r, queue: str) -> dict[str, int]:
    """worker -> length of its processing list."""
    prefix = processing_key(queue, "")
    return {key[len(prefix):]: r.llen(key) for key in r.scan_iter(match=prefix + "*", count=100)}


def is_alive(r, queue: str, worker: str) -> bool:
    return bool(r.exists(alive_key(queue, worker)))


def reap(r, queue: str, only_dead: bool = True) -> list[str]:
    """Move tasks stuck in processing lists back to the head of the queue; returns them.

    only_dead=True: only lists whose worker's heartbeat has expired (the right thing).
    only_dead=False: every in-flight task, like a reaper with a too-short visibility timeout;
    a slow but healthy worker's task then runs twice (a pitfall notebook 01 shows)."""
    requeued = []
    for worker, length in processing_lists(r, queue).items():
        if only_dead and is_alive(r, queue, worker):
            continue
        for _ in range(length):  # bounded by the length we saw
            # LMOVE is atomic: a reaper crash here leaves the task in one list or the other.
            task = r.lmove(processing_key(queue, worker), queue, "RIGHT", "RIGHT")
            if task is None:
                break
            requeued.append(task)
    return requeued


def reaper(queue: str, seconds: float = 10.0, interval: float = 0.2, max_rounds: int = 1000,
           until: Callable[[], bool] | None = None) -> list[str]:
    """Run `reap` every `interval` seconds (bounded); returns everything it re-queued."""
    r = redis_client()
    deadline = time.monotonic() + seconds
    requeued: list[str] = []
    try:
        for _ in range(max_rounds):
            if time.monotonic() >= deadline or (until is not None and not until()):
                break
            requeued += reap(r, queue)
            time.sleep(interval)
    finally:
        r.close()
    return requeued
