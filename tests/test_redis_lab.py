"""Lab 01 checks against the real Redis: the solution passes; a catalogue of wrong implementations,
each failing with the right message and blaming the right function; nothing is left behind."""
import pytest

from brokerlab import redis_queue as rq
from brokerlab.labs import redis_lab
from brokerlab.labs.catalogue import Wrong, fails_right, params, passes


# --- the solution -------------------------------------------------------------------------------------

def fetch(r, queue, worker, timeout=0.5):
    return r.blmove(queue, rq.processing_key(queue, worker), timeout, "RIGHT", "LEFT")


def ack(r, queue, worker, task):
    return r.lrem(rq.processing_key(queue, worker), 1, task) == 1


def _dead_lists(r, queue, live_workers):
    prefix = rq.processing_key(queue, "")
    return [k for k in r.scan_iter(match=prefix + "*", count=1000) if k[len(prefix):] not in live_workers]


def make_reap(side="front", max_override=None, stop_after_first=False, peek_end=-1):
    def reap(r, queue, live_workers, max_attempts=3):
        limit = max_override or max_attempts
        result = {"requeued": [], "dead": []}
        for key in _dead_lists(r, queue, live_workers):
            while (task := r.lindex(key, peek_end)) is not None:
                if r.hincrby(rq.attempts_key(queue), task, 1) >= limit:
                    r.lmove(key, rq.dead_letter_key(queue), "RIGHT", "LEFT")
                    result["dead"].append(task)
                else:
                    r.lmove(key, queue, "RIGHT", "RIGHT" if side == "front" else "LEFT")
                    result["requeued"].append(task)
            if stop_after_first:
                break
        return result
    return reap


reap = make_reap()

RESCUE_ONE = """
local task = redis.call('LINDEX', KEYS[1], -1)
if not task then return false end
local count = redis.call('HINCRBY', KEYS[2], task, 1)
if count >= tonumber(ARGV[1]) then
  redis.call('LMOVE', KEYS[1], KEYS[4], 'RIGHT', 'LEFT')
  return {task, 'dead'}
end
redis.call('LMOVE', KEYS[1], KEYS[3], 'RIGHT', 'RIGHT')
return {task, 'requeued'}
"""


def reap_exact(r, queue, live_workers, max_attempts=3):
    rescue_one = r.register_script(RESCUE_ONE)
    result = {"requeued": [], "dead": []}
    for key in _dead_lists(r, queue, live_workers):
        keys = [key, rq.attempts_key(queue), queue, rq.dead_letter_key(queue)]
        while moved := rescue_one(keys=keys, args=[max_attempts]):
            result[moved[1]].append(moved[0])
    return result


def reap_multi(r, queue, live_workers, max_attempts=3):
    result = {"requeued": [], "dead": []}
    for key in _dead_lists(r, queue, live_workers):
        while (task := r.lindex(key, -1)) is not None:
            count = int(r.hget(rq.attempts_key(queue), task) or 0) + 1
            where = "dead" if count >= max_attempts else "requeued"
            with r.pipeline(transaction=True) as p:
                p.hincrby(rq.attempts_key(queue), task, 1)
                if where == "dead":
                    p.lmove(key, rq.dead_letter_key(queue), "RIGHT", "LEFT")
                else:
                    p.lmove(key, queue, "RIGHT", "RIGHT")
                p.execute()
            result[where].append(task)
    return result


def test_the_solution_passes_every_check(capsys):
    passes(redis_lab.check_fetch, fetch)
    passes(redis_lab.check_ack, ack)
    passes(redis_lab.check_reap, reap, "front")
    passes(redis_lab.check_reap, make_reap("back"), "back")
    passes(redis_lab.check_dead_letters, reap)
    passes(redis_lab.check_exact_reap, reap_exact, "front")
    passes(redis_lab.check_exact_reap, reap_multi, "front")
    assert capsys.readouterr().out.count("✔") == 7


# --- wrong implementations ----------------------------------------------------------------------------

def not_written(*args):
    raise NotImplementedError("your code here")


def fetch_brpop_then_lpush(r, queue, worker, timeout=0.5):
    popped = r.brpop([queue], timeout=timeout)
    if popped is None:
        return None
    r.lpush(rq.processing_key(queue, worker), popped[1])
    return popped[1]


def fetch_newest(r, queue, worker, timeout=0.5):
    return r.blmove(queue, rq.processing_key(queue, worker), timeout)  # redis-py defaults: LEFT, the newest


def fetch_shared_processing_list(r, queue, worker, timeout=0.5):
    return r.blmove(queue, rq.processing_key(queue, "all"), timeout, "RIGHT", "LEFT")


def fetch_copy(r, queue, worker, timeout=0.5):
    task = r.lindex(queue, -1)
    if task is not None:
        r.lpush(rq.processing_key(queue, worker), task)
    return task


def fetch_no_wait(r, queue, worker, timeout=0.5):
    return r.lmove(queue, rq.processing_key(queue, worker), "RIGHT", "LEFT")


def fetch_lpush_first(r, queue, worker, timeout=0.5):  # stores a copy first, then removes: a crash duplicates
    task = r.lindex(queue, -1)
    if task is None:
        return None
    r.lpush(rq.processing_key(queue, worker), task)
    r.rpop(queue)
    return task


def fetch_crashes_in_a_helper(r, queue, worker, timeout=0.5):
    return _pick(r, queue)


def _pick(r, queue):
    return r.blmove(queue, None, 0.5)  # a bug in the learner's helper: no destination


def ack_from_the_queue(r, queue, worker, task):
    return r.lrem(queue, 1, task) == 1


def ack_pops_the_oldest(r, queue, worker, task):
    return r.rpop(rq.processing_key(queue, worker)) is not None


def ack_always_true(r, queue, worker, task):
    r.lrem(rq.processing_key(queue, worker), 1, task)
    return True


def ack_returns_nothing(r, queue, worker, task):
    r.lrem(rq.processing_key(queue, worker), 1, task)


def reap_everyone(r, queue, live_workers, max_attempts=3):
    return reap(r, queue, set(), max_attempts)


def reap_rpop_rpush(r, queue, live_workers, max_attempts=3):
    result = {"requeued": [], "dead": []}
    for key in _dead_lists(r, queue, live_workers):
        while (task := r.rpop(key)) is not None:
            if r.hincrby(rq.attempts_key(queue), task, 1) >= max_attempts:
                r.lpush(rq.dead_letter_key(queue), task)
                result["dead"].append(task)
            else:
                r.rpush(queue, task)
                result["requeued"].append(task)
    return result


def reap_substring_match(r, queue, live_workers, max_attempts=3):
    prefix = rq.processing_key(queue, "")
    result = {"requeued": [], "dead": []}
    for key in r.scan_iter(match=prefix + "*"):
        if any(worker in key for worker in live_workers):  # 'w1' is in 'w12' too
            continue
        while r.lindex(key, -1) is not None:
            result["requeued"].append(r.lmove(key, queue, "RIGHT", "RIGHT"))
            r.hincrby(rq.attempts_key(queue), result["requeued"][-1], 1)
    return result


def reap_one_task_per_worker(r, queue, live_workers, max_attempts=3):
    result = {"requeued": [], "dead": []}
    for key in _dead_lists(r, queue, live_workers):
        task = r.lmove(key, queue, "RIGHT", "RIGHT")
        r.hincrby(rq.attempts_key(queue), task, 1)
        result["requeued"].append(task)
    return result


def reap_without_reporting(r, queue, live_workers, max_attempts=3):
    reap(r, queue, live_workers, max_attempts)
    return None


def reap_counts_before_looking(r, queue, live_workers, max_attempts=3):  # counts the worker, not the task
    result = {"requeued": [], "dead": []}
    for key in _dead_lists(r, queue, live_workers):
        count = r.hincrby(rq.attempts_key(queue), key, 1)
        while (task := r.lmove(key, queue, "RIGHT", "RIGHT")) is not None:
            result["requeued"].append(task)
        del count
    return result


REAP_BUGS = [
    ("reap: ignores live_workers (takes a slow worker's tasks)", reap_everyone, ("live worker",)),
    ("reap: stops after the first dead worker", make_reap(stop_after_first=True), ("still hold tasks",)),
    ("reap: RPOP then RPUSH is not atomic", reap_rpop_rpush, ("vanished", "atomic")),
    ("reap: peeks at one end, moves from the other", make_reap(peek_end=0), ("attempts",)),
    ("reap: 'w1' in key matches dead worker w12", reap_substring_match, ("still hold tasks", "exactly")),
    ("reap: one task per dead worker", reap_one_task_per_worker, ("still hold tasks",)),
    ("reap: returns None", reap_without_reporting, ("returned none",)),
    ("reap: counts per worker, not per task", reap_counts_before_looking, ("attempts",)),
    ("reap: puts rescued tasks at the other end than decided", make_reap("back"), ("front", "back")),
]

CATALOGUE = [
    Wrong("fetch: not written", redis_lab.check_fetch, (not_written,), "not_written", ("not written",)),
    Wrong("fetch: BRPOP then LPUSH loses the task in a crash", redis_lab.check_fetch, (fetch_brpop_then_lpush,),
          "fetch", ("BRPOP", "neither", "atomic")),
    Wrong("fetch: blmove defaults take the newest", redis_lab.check_fetch, (fetch_newest,), "fetch", ("oldest",)),
    Wrong("fetch: one processing list shared by all workers", redis_lab.check_fetch,
          (fetch_shared_processing_list,), "fetch", ("processing list",)),
    Wrong("fetch: copies the task (LINDEX + LPUSH)", redis_lab.check_fetch, (fetch_copy,), "fetch",
          ("still in the queue",)),
    Wrong("fetch: copy first, remove later duplicates in a crash", redis_lab.check_fetch, (fetch_lpush_first,),
          "fetch", ("two places",)),
    Wrong("fetch: does not wait (LMOVE)", redis_lab.check_fetch, (fetch_no_wait,), "fetch", ("arrived", "blocking")),
    Wrong("fetch: a crash in the learner's helper is blamed on the helper", redis_lab.check_fetch,
          (fetch_crashes_in_a_helper,), "_pick", ("raised",)),
    Wrong("ack: not written", redis_lab.check_ack, (not_written,), "not_written", ("not written",)),
    Wrong("ack: removes from the queue, not the processing list", redis_lab.check_ack, (ack_from_the_queue,),
          "ack", ("processing list",)),
    Wrong("ack: pops whichever task is oldest", redis_lab.check_ack, (ack_pops_the_oldest,), "ack",
          ("the task you were given",)),
    Wrong("ack: always returns True", redis_lab.check_ack, (ack_always_true,), "ack", ("second ack",)),
    Wrong("ack: returns nothing", redis_lab.check_ack, (ack_returns_nothing,), "ack", ("returned none",)),
    Wrong("reap: not written", redis_lab.check_reap, (not_written, "front"), "not_written", ("not written",)),
    Wrong("reap: no design decision", redis_lab.check_reap, (reap, None), "RESCUED_TASKS_GO_TO", ("decision",)),
    *[Wrong(name, redis_lab.check_reap, (impl, "front"), "reap", says) for name, impl, says in REAP_BUGS],
    Wrong("dead letters: never dead-letters", redis_lab.check_dead_letters, (make_reap(max_override=10**9),),
          "reap", ("dead-letter",)),
    Wrong("dead letters: off by one (dead only above max_attempts)", redis_lab.check_dead_letters,
          (make_reap(max_override=4),), "reap", ("dead-letter",)),
    Wrong("dead letters: every rescue dead-letters", redis_lab.check_dead_letters, (make_reap(max_override=1),),
          "reap", ("first time",)),
    Wrong("stretch: count then move in two commands over-counts after a crash", redis_lab.check_exact_reap,
          (reap, "front"), "reap_exact", ("attempts hash",)),
    Wrong("stretch: RPOP then RPUSH loses a task", redis_lab.check_exact_reap, (reap_rpop_rpush, "front"),
          "reap_exact", ("lost",)),
]


def test_the_catalogue_covers_the_bug_classes_of_issue_13():
    assert len(CATALOGUE) >= 10
    names = " ".join(w.name for w in CATALOGUE)
    for bug in ("BRPOP then LPUSH", "RPOP then RPUSH", "first dead worker", "peeks at one end"):
        assert bug in names


@pytest.mark.parametrize("wrong", params(CATALOGUE))
def test_a_wrong_implementation_fails_with_the_right_message(wrong):
    fails_right(wrong)
