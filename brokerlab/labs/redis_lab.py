"""Checks for lab 01 (a reliable Redis list queue with a reaper and dead letters).

The learner writes:

    fetch(r, queue, worker, timeout) -> task | None      take the oldest task into the worker's processing list
    ack(r, queue, worker, task) -> bool                  remove it from there
    reap(r, queue, live_workers, max_attempts) -> {"requeued": [...], "dead": [...]}
    RESCUED_TASKS_GO_TO = "front" | "back"               a design decision
    reap_exact(...)                                      stretch: every rescue counted exactly once, even
                                                         when the reaper dies between two steps

Each check builds the state it needs itself (no check relies on another learner function, so a fetch
bug is never reported as a reaper bug), on a per-run queue it deletes afterwards.  Crashes are
injected with faults.crashing_redis: the learner's function gets a real client that dies after
its k-th command, for every k, which is what Redis sees of a SIGKILL at that point.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import contextmanager

from .. import redis_queue as rq
from ..clients import redis_client
from .checking import Lab, LabCheckFailed, call, decided, expect, passed
from .faults import count_commands, run_crashed

lab = Lab("01 · a reliable Redis queue")
hint = lab.hint

BLOCKING = {"BLMOVE", "BRPOPLPUSH", "BLMPOP", "BRPOP", "BLPOP"}  # commands that wait in Redis
MAX_CRASH_POINTS = 60  # enough for 6 rescued tasks x 3 commands; spread evenly beyond that


@contextmanager
def _fresh_queue(topic: str):
    r = redis_client()
    queue = lab.scratch(topic, kind="redis")
    try:
        yield r, queue
    finally:
        rq.delete_queue(r, queue)
        r.close()


def _crash_points(commands: list[str]) -> list[int]:
    """Crash after k commands, 1 <= k < len(commands) (k = len is a run that completed).  A crash right after
    a SCAN is skipped: SCAN changes nothing, and on a busy Redis it is most of a reaper's commands."""
    points = [k for k in range(1, len(commands)) if commands[k - 1] != "SCAN"]
    if len(points) > MAX_CRASH_POINTS:
        stride = len(points) / MAX_CRASH_POINTS
        points = sorted({points[int(i * stride)] for i in range(MAX_CRASH_POINTS)})
    return points


def _everywhere(r, queue: str) -> Counter:
    """Every task in the queue, in any processing list, or dead-lettered (with multiplicity)."""
    found = Counter(r.lrange(queue, 0, -1))
    for key in r.scan_iter(match=rq.processing_key(queue, "*"), count=1000):
        found.update(r.lrange(key, 0, -1))
    found.update(r.lrange(rq.dead_letter_key(queue), 0, -1))
    return found


def _crash_story(commands: list[str], k: int, function: str) -> str:
    before = commands[k - 1] if k - 1 < len(commands) else "?"
    after = commands[k] if k < len(commands) else "its next command"
    return f"died inside {function} after its command {k} ({before}), before {after}"


# --- fetch ------------------------------------------------------------------------------------------

@lab.check("fetch",
           idea="A worker can die at any moment. Between taking a task and finishing it, the task must live in "
                "Redis, in the worker's own processing list, never only in the worker's memory.",
           code="Look at BLMOVE (r.blmove(source, destination, timeout, src, dest)): one command that takes from "
                "one end of a list and puts on an end of another, blocking up to `timeout` seconds. Which end of "
                "`queue` holds the oldest task, given that producers LPUSH? redis-py's blmove has defaults for "
                "src and dest: do not rely on them.")
def check_fetch(fetch) -> None:
    with _fresh_queue("lab01-fetch") as (r, queue):
        tasks = rq.push_tasks(r, queue, 4)  # task-0 is the oldest, at the right end
        got = call(fetch, r, queue, "w1", 0.5)
        expect(got == tasks[0], f"fetch returned {got!r} from a queue of {tasks} (pushed in that order), "
               f"expected the oldest, {tasks[0]!r}", "Producers LPUSH: which end holds the oldest task?",
               blame="fetch")
        mine = rq.processing_key(queue, "w1")
        expect(r.lrange(mine, 0, -1) == [got], f"after fetch, worker w1's processing list {mine} holds "
               f"{r.lrange(mine, 0, -1)}, expected [{got!r}]",
               "The task must be in the worker's own processing list, rq.processing_key(queue, worker), "
               "when fetch returns.", blame="fetch")
        expect(got not in r.lrange(queue, 0, -1), f"after fetch, {got!r} is still in the queue as well",
               "Taking a task moves it; a copy left in the queue is fetched again by the next worker.",
               blame="fetch")
        second = call(fetch, r, queue, "w2", 0.5)
        expect(r.lrange(rq.processing_key(queue, "w2"), 0, -1) == [tasks[1]] and r.lrange(mine, 0, -1) == [got],
               f"after w2 fetched {second!r}: w1's processing list holds {r.lrange(mine, 0, -1)}, w2's holds "
               f"{r.lrange(rq.processing_key(queue, 'w2'), 0, -1)}",
               "Each worker has its own processing list, so the reaper can tell whose tasks are stuck.",
               blame="fetch")

        # a crash between any two of fetch's commands must not lose the task
        rq.delete_queue(r, queue)
        rq.push_tasks(r, queue, 2)
        _, commands = count_commands(lambda c: call(fetch, c, queue, "w3", 0.5))
        for k in _crash_points(commands):
            rq.delete_queue(r, queue)
            tasks = rq.push_tasks(r, queue, 2)
            run_crashed(fetch, k, queue, "w3", 0.5)
            where = _everywhere(r, queue)
            lost = [t for t in tasks if where[t] == 0]
            expect(not lost, f"a worker {_crash_story(commands, k, 'fetch')}: {lost} is now in neither the "
                   f"queue nor any processing list (fetch sends {' then '.join(commands)})",
                   "Between two commands the task existed only in the worker's memory. One atomic command "
                   "must take it and store it.", blame="fetch")
            doubled = [t for t in tasks if where[t] > 1]
            expect(not doubled, f"a worker {_crash_story(commands, k, 'fetch')}: {doubled} is now in two "
                   "places at once", "Move the task with one command, do not copy it and delete it later.",
                   blame="fetch")

        # blocking: a task that arrives while fetch waits is taken; an empty queue gives None after `timeout`
        rq.delete_queue(r, queue)
        late = threading.Thread(target=lambda: (time.sleep(0.3), r.lpush(queue, "late-task")))
        started = time.monotonic()
        late.start()
        try:
            got = call(fetch, r, queue, "w4", 2.0)
        finally:
            late.join()
        expect(got == "late-task", f"fetch(timeout=2.0) on an empty queue returned {got!r} after "
               f"{time.monotonic() - started:.1f} s, although a task arrived 0.3 s after it started",
               "Wait for a task for up to `timeout` seconds, in Redis (a blocking command), not by polling.",
               blame="fetch")
        rq.delete_queue(r, queue)
        started = time.monotonic()
        empty = call(fetch, r, queue, "w4", 0.5)
        waited = time.monotonic() - started
        expect(empty is None, f"fetch on an empty queue returned {empty!r}, expected None", "When the wait "
               "times out there is no task: return None.", blame="fetch")
        expect(waited < 2.0, f"fetch(timeout=0.5) on an empty queue took {waited:.1f} s",
               "Pass `timeout` through to the blocking command.", blame="fetch")
        # waiting happens in Redis: a fetch that polls (a non-blocking command in a sleep loop) also passes the
        # timing above, but sends a command per turn and adds up to one sleep of latency to every task
        _, waiting_commands = count_commands(lambda c: call(fetch, c, queue, "w4", 0.5))
        expect(any(name in BLOCKING for name in waiting_commands) and len(waiting_commands) <= 3,
               f"fetch(timeout=0.5) on an empty queue sent {len(waiting_commands)} command(s) "
               f"({' then '.join(waiting_commands[:6])}{' ...' if len(waiting_commands) > 6 else ''}), expected "
               "one blocking command that waits in Redis", "Do not poll: let Redis wait for you with a "
               "blocking command, given the timeout.", blame="fetch")
    passed("fetch moves the oldest task into the worker's processing list in one step, blocks up to timeout, "
           f"and a crash after any of its {len(commands)} command(s) loses nothing")


# --- ack ----------------------------------------------------------------------------------------------

@lab.check("ack",
           idea="Acknowledging removes exactly this task from this worker's processing list, wherever it is in "
                "the list; nothing else changes.",
           code="Look at LREM (r.lrem(name, count, value)) and what it returns.")
def check_ack(ack) -> None:
    with _fresh_queue("lab01-ack") as (r, queue):
        mine, theirs = rq.processing_key(queue, "w1"), rq.processing_key(queue, "w2")
        r.lpush(mine, "t-0", "t-1", "t-2")  # w1 holds three tasks; t-0 is its oldest
        r.lpush(theirs, "t-5")
        r.lpush(queue, "t-9")
        acked = call(ack, r, queue, "w1", "t-1")
        expect(len(r.lrange(mine, 0, -1)) < 3, f"after ack(w1, 't-1'), w1's processing list {mine} still holds "
               f"{r.lrange(mine, 0, -1)}", "The acknowledged task leaves the worker's processing list, "
               "rq.processing_key(queue, worker): that is where fetch put it.", blame="ack")
        expect(r.lrange(mine, 0, -1) == ["t-2", "t-0"],
               f"after ack(w1, 't-1'), w1's processing list holds {r.lrange(mine, 0, -1)}, "
               "expected ['t-2', 't-0']", "Remove the task you were given, not whichever is at an end.",
               blame="ack")
        expect(r.lrange(queue, 0, -1) == ["t-9"] and r.lrange(theirs, 0, -1) == ["t-5"],
               f"ack(w1, 't-1') changed other lists: queue={r.lrange(queue, 0, -1)}, "
               f"w2's processing list={r.lrange(theirs, 0, -1)}",
               "Only this worker's processing list changes.", blame="ack")
        expect(acked == True, f"ack returned {acked!r} for a task that was there, expected True",  # noqa: E712
               "Return whether the task was removed.", blame="ack")
        again = call(ack, r, queue, "w1", "t-1")
        expect(again == False, f"a second ack of 't-1' returned {again!r}, expected False",  # noqa: E712
               "A task that is no longer in the list (acked twice, or taken away by a reaper) was not removed "
               "now: the caller must learn that.", blame="ack")
        foreign = call(ack, r, queue, "w1", "t-5")
        expect(foreign == False and r.lrange(theirs, 0, -1) == ["t-5"],  # noqa: E712
               f"ack(w1, 't-5') of w2's task returned {foreign!r}; w2's list is {r.lrange(theirs, 0, -1)}",
               "A worker acknowledges only its own tasks.", blame="ack")
    passed("ack removes exactly that task from that worker's list and says whether it was there")


# --- reap ---------------------------------------------------------------------------------------------

LIVE = "w1"
HELD = {"w1": ["live-0", "live-1"],          # alive: a slow worker is not a dead one
        "w12": ["a-0", "a-1", "a-2"],        # dead; its name starts with a live worker's name
        "w7": ["b-0", "b-1"],                # dead
        "w9": ["c-0"]}                       # dead
WAITING = ["wait-0", "wait-1", "wait-2"]
RESCUED = sorted(t for w, tasks in HELD.items() if w != LIVE for t in tasks)
SIDES = ("front", "back")


def _reap_scene(r, queue: str, attempts: dict | None = None) -> None:
    rq.delete_queue(r, queue)
    r.lpush(queue, *WAITING)  # wait-0 is the oldest, at the right end
    for worker, tasks in HELD.items():
        r.lpush(rq.processing_key(queue, worker), *tasks)  # each worker's oldest at the right
    if attempts:
        r.hset(rq.attempts_key(queue), mapping=attempts)


def _result_lists(result, function: str = "reap") -> tuple[list, list]:
    expect(isinstance(result, dict) and isinstance(result.get("requeued"), list)
           and isinstance(result.get("dead"), list),
           f"{function} returned {result!r}", 'Return {"requeued": [tasks...], "dead": [tasks...]}.', blame=function)
    return result["requeued"], result["dead"]


def _judge_reap(r, queue: str, result, side: str, function: str) -> None:
    requeued, dead = _result_lists(result, function)
    left_live = r.lrange(rq.processing_key(queue, LIVE), 0, -1)
    expect(left_live == list(reversed(HELD[LIVE])), f"{function} changed live worker {LIVE}'s processing list "
           f"to {left_live}", "Workers in live_workers are alive, perhaps slow: leave their tasks alone.",
           blame=function)
    stuck = {w: r.lrange(rq.processing_key(queue, w), 0, -1) for w in HELD if w != LIVE}
    stuck = {w: tasks for w, tasks in stuck.items() if tasks}
    expect(not stuck, f"after {function}, dead workers still hold tasks: {stuck} (dead workers: "
           f"{sorted(w for w in HELD if w != LIVE)}, each holding several tasks; live: {[LIVE]})",
           "Every processing list of a worker not in live_workers must end empty: all of its tasks, "
           "for all of those workers. Compare worker names exactly.", blame=function)
    where = _everywhere(r, queue)
    everyone = WAITING + [t for tasks in HELD.values() for t in tasks]
    lost = [t for t in everyone if where[t] == 0]
    doubled = [t for t in everyone if where[t] > 1]
    expect(not lost and not doubled, f"after {function}: lost {lost}, in two places {doubled}",
           "Each task must end in exactly one list.", blame=function)
    counts = r.hgetall(rq.attempts_key(queue))
    wrong = {t: counts.get(t) for t in RESCUED if counts.get(t) != "1"}
    extra = {t: n for t, n in counts.items() if t not in RESCUED}
    expect(not wrong and not extra, f"after one rescue of each task, the attempts hash "
           f"{rq.attempts_key(queue)} says {wrong or extra}; expected 1 for each of {RESCUED}",
           "Count each rescue against the task you actually move (the one at the end you move from).",
           blame=function)
    queued = r.lrange(queue, 0, -1)
    expect(sorted(queued) == sorted(WAITING + RESCUED), f"after {function}, the queue holds {queued}, expected "
           f"the waiting {WAITING} and the rescued {RESCUED}", "Rescued tasks go back into the queue.",
           blame=function)
    expect(sorted(requeued) == RESCUED and dead == [],
           f"{function} reported requeued={requeued}, dead={dead}; it moved {RESCUED} back to the queue",
           "Report each task you moved, once, in the list it went to.", blame=function)
    front = queued[len(queued) - len(RESCUED):]  # the right end: taken next
    back = queued[:len(RESCUED)]
    placed = "front" if sorted(front) == RESCUED else "back" if sorted(back) == RESCUED else "mixed"
    expect(placed == side, f"you chose RESCUED_TASKS_GO_TO={side!r}, but the rescued tasks are at the {placed} "
           f"of the queue: {queued} (workers take from the right end)",
           "Workers take from the right end: put rescued tasks at the end that matches your decision.",
           blame=function)


REAP_CODE = ("Find the processing lists with SCAN (r.scan_iter(match=...)) or rq.processing_lists(r, queue); the "
             "worker is what follows rq.processing_key(queue, ''). For each task of a dead worker: look at the "
             "task at the end you will move from (LINDEX), count the rescue with HINCRBY on "
             "rq.attempts_key(queue) (it returns the new count), then LMOVE it: to the queue, or to "
             "rq.dead_letter_key(queue) when the count has reached max_attempts. Loop until the list is empty.")


@lab.check("reap",
           idea="A dead worker's tasks go back to the queue, all of them, for every dead worker, and only theirs. "
                "The reaper itself can die between two commands: a task must never be only in its memory.",
           code=REAP_CODE)
def check_reap(reap, rescued_tasks_go_to) -> None:
    side = decided(rescued_tasks_go_to, "RESCUED_TASKS_GO_TO", SIDES,
                   "Front: a rescued task runs next, so its caller waits least, but a poison task comes straight "
                   "back. Back: it waits its turn behind the queue. Choose, and say why in the markdown cell.")
    with _fresh_queue("lab01-reap") as (r, queue):
        _reap_scene(r, queue)
        result = call(reap, r, queue, {LIVE}, 3)
        _judge_reap(r, queue, result, side, "reap")

        # the reaper dies after each of its commands in turn, then a new reaper runs: nothing lost
        _reap_scene(r, queue)
        _, commands = count_commands(lambda c: call(reap, c, queue, {LIVE}, 3))
        for k in _crash_points(commands):
            _reap_scene(r, queue)
            run_crashed(reap, k, queue, {LIVE}, 3)
            call(reap, r, queue, {LIVE}, 3)
            where = _everywhere(r, queue)
            lost = [t for t in RESCUED if where[t] == 0]
            expect(not lost, f"the reaper {_crash_story(commands, k, 'reap')}; after a new reaper ran, {lost} had "
                   "vanished: in no list at all",
                   "Between taking a task out of a processing list and putting it into the queue it lived only "
                   "in the reaper's memory. Move it with one atomic command.", blame="reap")
            doubled = [t for t in RESCUED if where[t] > 1]
            expect(not doubled, f"the reaper {_crash_story(commands, k, 'reap')}; after a new reaper ran, {doubled} "
                   "were in two lists", "Move tasks, do not copy them.", blame="reap")
    passed(f"reap rescues every task of 3 dead workers (6 tasks) to the {side} of the queue, leaves the live "
           f"worker alone, counts each rescue, and survives a crash after any of its {len(commands)} commands")


@lab.check("dead letters",
           idea="A task that has killed its worker max_attempts times is poison: it leaves the queue for the "
                "dead-letter list instead of being rescued again.",
           code="HINCRBY returns the count after the increment: compare it with max_attempts and pick the "
                "destination of the LMOVE: rq.dead_letter_key(queue) or the queue.")
def check_dead_letters(reap, max_attempts: int = 3) -> None:
    with _fresh_queue("lab01-dead") as (r, queue):
        # one dead worker holds a task rescued max_attempts-1 times already, and a fresh one
        doomed = rq.processing_key(queue, "w5")
        r.lpush(doomed, "poison", "fresh")
        r.hset(rq.attempts_key(queue), "poison", max_attempts - 1)
        result = call(reap, r, queue, set(), max_attempts)
        requeued, dead = _result_lists(result)
        expect("poison" in r.lrange(rq.dead_letter_key(queue), 0, -1) and "poison" not in r.lrange(queue, 0, -1),
               f"a task rescued for time number {max_attempts} (max_attempts={max_attempts}) is in the queue "
               f"{r.lrange(queue, 0, -1)}; the dead-letter list {rq.dead_letter_key(queue)} holds "
               f"{r.lrange(rq.dead_letter_key(queue), 0, -1)}",
               f"When this rescue brings its count to max_attempts={max_attempts}, the task goes to the "
               "dead-letter list.", blame="reap")
        expect(r.lrange(queue, 0, -1) == ["fresh"], f"a task rescued for the first time ended in "
               f"{'the dead-letter list' if 'fresh' in r.lrange(rq.dead_letter_key(queue), 0, -1) else 'nowhere'}"
               f"; the queue holds {r.lrange(queue, 0, -1)}", "Only tasks that reached max_attempts are dead.",
               blame="reap")
        expect(dead == ["poison"] and requeued == ["fresh"], f"reap reported requeued={requeued}, dead={dead}",
               "Report each task in the list it went to.", blame="reap")

        # end to end: a task that kills every worker that takes it, rescued until it is dead-lettered
        rq.delete_queue(r, queue)
        r.lpush(queue, "killer")
        for attempt in range(1, max_attempts + 1):
            victim = rq.processing_key(queue, f"victim-{attempt}")
            taken = r.lmove(queue, victim, "RIGHT", "LEFT")  # the check plays the worker: it takes it, then dies
            expect(taken == "killer", f"crash {attempt}: the killer task was not back in the queue after "
                   f"{attempt - 1} rescue(s); the queue holds {r.lrange(queue, 0, -1)}",
                   f"Rescue a task while its count is below max_attempts={max_attempts}.", blame="reap")
            call(reap, r, queue, set(), max_attempts)
        expect(r.lrange(rq.dead_letter_key(queue), 0, -1) == ["killer"] and r.llen(queue) == 0,
               f"after {max_attempts} crashes the killer task is in the queue {r.lrange(queue, 0, -1)}, "
               f"dead letters: {r.lrange(rq.dead_letter_key(queue), 0, -1)}",
               f"The {max_attempts}th rescue is the one that dead-letters it.", blame="reap")
    passed(f"a task that kills its worker {max_attempts} times ends in the dead-letter list, not in an endless loop")


# --- stretch: exact counts under a crash --------------------------------------------------------------

@lab.check("stretch: exact reap",
           idea="Your reaper loses nothing when it dies, but a crash between counting a rescue and moving the task "
                "counts that rescue twice, so a healthy task can be dead-lettered early. Make count-and-move one "
                "step that happens entirely or not at all.",
           code="Two ways: a Lua script (r.register_script(...) or r.eval) that does LINDEX, HINCRBY and LMOVE "
                "inside Redis, one task per call (or all of them); or read the task with LINDEX, then send "
                "HINCRBY and LMOVE in one MULTI/EXEC (r.pipeline(transaction=True)). In Lua, redis.call returns "
                "false for a nil reply.")
def check_exact_reap(reap_exact, rescued_tasks_go_to) -> None:
    side = decided(rescued_tasks_go_to, "RESCUED_TASKS_GO_TO", SIDES, "Choose where rescued tasks go first.")
    with _fresh_queue("lab01-exact") as (r, queue):
        _reap_scene(r, queue)
        _judge_reap(r, queue, call(reap_exact, r, queue, {LIVE}, 3), side, "reap_exact")
        _reap_scene(r, queue)
        _, commands = count_commands(lambda c: call(reap_exact, c, queue, {LIVE}, 3))
        for k in _crash_points(commands):
            _reap_scene(r, queue)
            run_crashed(reap_exact, k, queue, {LIVE}, 3)
            call(reap_exact, r, queue, {LIVE}, 3)
            where = _everywhere(r, queue)
            lost = [t for t in RESCUED if where[t] != 1]
            expect(not lost, f"the reaper {_crash_story(commands, k, 'reap_exact')}; after a new reaper ran, {lost} were lost "
                   "or in two lists", "Count and move in one atomic step.", blame="reap_exact")
            counts = r.hgetall(rq.attempts_key(queue))
            wrong = {t: counts.get(t) for t in RESCUED if counts.get(t) != "1"}
            expect(not wrong, f"the reaper {_crash_story(commands, k, 'reap_exact')}; after a new reaper ran, each task had "
                   f"been rescued once but the attempts hash says {wrong}",
                   "The count and the move must happen together or not at all.", blame="reap_exact")
    passed(f"every rescue counted exactly once, whichever of the reaper's {len(commands)} commands it died after")


__all__ = ["LabCheckFailed", "check_ack", "check_dead_letters", "check_exact_reap", "check_fetch", "check_reap",
           "hint", "lab"]
