"""Checks for lab 01 (a reliable Redis list queue with a reaper and dead letters).

The learner writes three functions:

    fetch(r, queue, worker, timeout) -> task | None   # BLMOVE into the worker's processing list
    ack(r, queue, worker, task) -> bool               # LREM from it
    reap(r, queue, live_workers, max_attempts) -> {"requeued": [...], "dead": [...]}

Each check runs them against the real Redis on a fresh, per-run queue and
deletes it afterwards.  A crash is simulated the way Redis experiences one: the
worker's connection closes after `fetch` and nothing else runs for that worker
(notebook 01 shows the same with a real SIGKILL; a learner's notebook function
cannot run in a separate spawned process).
"""
from __future__ import annotations

import time
from contextlib import contextmanager

from .. import redis_queue as rq
from ..clients import redis_client
from ..runs import run_name
from .checking import LabCheckFailed, call_learner, check, passed

FETCH_HINT = ("Write fetch: a single BLMOVE from the RIGHT end of `queue` (the oldest task) to the LEFT end of "
              "rq.processing_key(queue, worker), passing `timeout`; return what it returns. Pass src and dest: "
              "redis-py's blmove defaults to src=\"LEFT\", the newest task.")
ACK_HINT = "Write ack: LREM the task (count 1) from rq.processing_key(queue, worker); return whether it removed one."
REAP_HINT = ("Write reap: for each key from r.scan_iter(match=rq.processing_key(queue, '*')) whose worker is not in "
             "live_workers (the worker is the key minus rq.processing_key(queue, '')), loop "
             "`while (task := r.lindex(key, -1)) is not None:`, count it with r.hincrby(rq.attempts_key(queue), "
             "task, 1), then LMOVE it back to the RIGHT end of `queue`, or to the dead-letter list once the count "
             "reaches max_attempts.")


@contextmanager
def _fresh_queue(topic: str):
    r = redis_client()
    queue = run_name(topic)
    try:
        yield r, queue
    finally:
        rq.delete_queue(r, queue)
        r.close()


def _crash_after_fetch(fetch, queue: str, worker: str, hint: str):
    """A worker takes one task and dies: its own connection closes, it never acknowledges."""
    doomed = redis_client()
    try:
        return call_learner(fetch, doomed, queue, worker, 0.5, hint=hint)
    finally:
        doomed.close()


def check_fetch_and_ack(fetch, ack) -> None:
    with _fresh_queue("lab-fetch") as (r, queue):
        tasks = rq.push_tasks(r, queue, 3)
        mine = rq.processing_key(queue, "w1")
        task = call_learner(fetch, r, queue, "w1", 0.5,
                            hint=FETCH_HINT)
        check(task == tasks[0], f"fetch returned {task!r}, expected the oldest task {tasks[0]!r}",
              "Producers LPUSH on the left, so the oldest task is on the RIGHT: move from 'RIGHT' "
              "(redis-py's blmove defaults to src='LEFT', the newest).")
        check(r.lrange(mine, 0, -1) == [task],
              f"after fetch, {mine} holds {r.lrange(mine, 0, -1)}, expected [{task!r}]",
              "Move the task into rq.processing_key(queue, worker) in the same command (BLMOVE), "
              "so it is never only in your worker's memory.")
        check(task not in r.lrange(queue, 0, -1), "the fetched task is still in the queue",
              "Move it (BLMOVE), do not copy it (LINDEX/LRANGE).")
        acked = call_learner(ack, r, queue, "w1", task, hint=ACK_HINT)
        check(r.llen(mine) == 0, f"after ack, {mine} still holds {r.lrange(mine, 0, -1)}",
              "ack must remove the task from rq.processing_key(queue, worker): r.lrem(key, 1, task).")
        check(acked is True, f"ack returned {acked!r} for a task that was there", "Return r.lrem(...) == 1.")
        check(call_learner(ack, r, queue, "w1", task, hint=ACK_HINT) is False,
              "ack returned True for a task that was already acknowledged",
              "Return whether LREM removed something: r.lrem(...) == 1.")
        crashed = _crash_after_fetch(fetch, queue, "w2", hint=FETCH_HINT)
        check(r.lrange(rq.processing_key(queue, "w2"), 0, -1) == [crashed],
              f"worker w2 crashed right after fetching {crashed!r}, and the task is not in its processing list",
              "The task must be in Redis (the processing list) before fetch returns.")
        r.delete(queue)
        started = time.monotonic()
        empty = call_learner(fetch, r, queue, "w1", 0.5, hint=FETCH_HINT)
        waited = time.monotonic() - started
        check(empty is None, f"fetch on an empty queue returned {empty!r}", "BLMOVE returns None on timeout.")
        check(waited < 2.5, f"fetch on an empty queue took {waited:.1f} s with timeout=0.5",
              "Pass the timeout through to BLMOVE (in seconds; 0 would block forever).")
    passed("fetch moves the oldest task into the worker's processing list; ack removes it; "
           "a crash after fetch leaves the task in Redis")


def check_reaper(fetch, reap) -> None:
    with _fresh_queue("lab-reap") as (r, queue):
        tasks = rq.push_tasks(r, queue, 3)
        lost = _crash_after_fetch(fetch, queue, "ghost", hint=FETCH_HINT)
        busy = call_learner(fetch, r, queue, "alive", 0.5, hint=FETCH_HINT)
        result = call_learner(reap, r, queue, {"alive"}, 3,
                              hint=REAP_HINT)
        check(isinstance(result, dict) and {"requeued", "dead"} <= set(result),
              f"reap returned {result!r}", 'Return {"requeued": [...], "dead": [...]}.')
        check(r.lrange(rq.processing_key(queue, "alive"), 0, -1) == [busy],
              "reap took the task of a live worker",
              "Skip processing lists whose worker is in live_workers: a slow worker is not a dead one.")
        check(r.llen(rq.processing_key(queue, "ghost")) == 0,
              "the crashed worker's task is still in its processing list after reap",
              "Scan r.scan_iter(match=rq.processing_key(queue, '*')) and move tasks of dead workers back.")
        check(result["requeued"] == [lost], f"reap reported requeued={result['requeued']!r}, expected [{lost!r}]",
              "Return the tasks you moved back to the queue.")
        nxt = call_learner(fetch, r, queue, "alive", 0.5, hint=FETCH_HINT)
        check(nxt == lost, f"after reaping, the next fetch got {nxt!r}, not the rescued {lost!r}",
              "Put rescued tasks back at the consuming end (RIGHT): LMOVE processing queue RIGHT RIGHT, "
              "so they do not wait behind the whole queue.")
        everything = set(r.lrange(queue, 0, -1)) | set(r.lrange(rq.processing_key(queue, "alive"), 0, -1))
        check(everything == set(tasks), f"tasks missing after reaping: {sorted(set(tasks) - everything)}",
              "Move tasks one by one with LMOVE, never read-then-delete.")
    passed("reap re-queues a dead worker's tasks at the front and leaves live workers alone")


def check_dead_letter(fetch, reap, max_attempts: int = 3) -> None:
    with _fresh_queue("lab-dead") as (r, queue):
        rq.push_tasks(r, queue, 1, prefix="poison")
        outcomes = []
        for attempt in range(1, max_attempts + 1):
            task = _crash_after_fetch(fetch, queue, f"victim-{attempt}", hint=FETCH_HINT)
            check(task == "poison-0", f"attempt {attempt}: fetch returned {task!r}, expected 'poison-0'",
                  "reap must put the task back in the queue until it has failed max_attempts times.")
            outcomes.append(call_learner(reap, r, queue, set(), max_attempts, hint=REAP_HINT))
        requeued = [o["requeued"] for o in outcomes]
        check(requeued[:-1] == [["poison-0"]] * (max_attempts - 1),
              f"reap results over {max_attempts} crashes: {outcomes!r}",
              f"Re-queue a rescued task while it has been rescued fewer than max_attempts={max_attempts} times; "
              "count rescues with r.hincrby(rq.attempts_key(queue), task, 1).")
        check(outcomes[-1]["dead"] == ["poison-0"] and outcomes[-1]["requeued"] == [],
              f"after the {max_attempts}th crash reap returned {outcomes[-1]!r}",
              "When the count reaches max_attempts, LMOVE the task to rq.dead_letter_key(queue) instead.")
        check(r.lrange(rq.dead_letter_key(queue), 0, -1) == ["poison-0"],
              f"{rq.dead_letter_key(queue)} holds {r.lrange(rq.dead_letter_key(queue), 0, -1)}",
              "Move the poison task into rq.dead_letter_key(queue).")
        check(r.llen(queue) == 0, "the poison task is still in the queue", "A dead task must leave the queue.")
        check(int(r.hget(rq.attempts_key(queue), "poison-0") or 0) == max_attempts,
              f"attempts hash says {r.hget(rq.attempts_key(queue), 'poison-0')!r}, expected {max_attempts}",
              "Count each rescue in rq.attempts_key(queue).")
    passed(f"a task that kills its worker {max_attempts} times ends in the dead-letter list, not in an endless loop")


__all__ = ["LabCheckFailed", "check_dead_letter", "check_fetch_and_ack", "check_reaper"]
