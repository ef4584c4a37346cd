"""Lab 01 checks: a correct implementation passes, each typical mistake fails with a hint."""
import pytest

from brokerlab import redis_queue as rq
from brokerlab.labs import redis_lab
from brokerlab.labs.checking import LabCheckFailed


def fetch(r, queue, worker, timeout=0.5):
    return r.blmove(queue, rq.processing_key(queue, worker), timeout, "RIGHT", "LEFT")


def ack(r, queue, worker, task):
    return r.lrem(rq.processing_key(queue, worker), 1, task) == 1


def reap(r, queue, live_workers, max_attempts=3):
    prefix = rq.processing_key(queue, "")
    result = {"requeued": [], "dead": []}
    for key in list(r.scan_iter(match=prefix + "*")):
        if key[len(prefix):] in live_workers:
            continue
        for _ in range(r.llen(key)):
            task = r.lindex(key, -1)
            if r.hincrby(rq.attempts_key(queue), task, 1) >= max_attempts:
                r.lmove(key, rq.dead_letter_key(queue), "RIGHT", "LEFT")
                result["dead"].append(task)
            else:
                r.lmove(key, queue, "RIGHT", "RIGHT")
                result["requeued"].append(task)
    return result


def test_correct_implementation_passes(capsys):
    redis_lab.check_fetch_and_ack(fetch, ack)
    redis_lab.check_reaper(fetch, reap)
    redis_lab.check_dead_letter(fetch, reap)
    assert capsys.readouterr().out.count("✔") == 3


def not_written(*args):
    raise NotImplementedError("your code here")


def naive_fetch(r, queue, worker, timeout=0.5):  # the lossy version: the task lives only in memory
    popped = r.brpop([queue], timeout=timeout)
    return popped[1] if popped else None


def lifo_fetch(r, queue, worker, timeout=0.5):
    return r.blmove(queue, rq.processing_key(queue, worker), timeout, "LEFT", "LEFT")


def reap_everyone(r, queue, live_workers, max_attempts=3):
    return reap(r, queue, set(), max_attempts)


def reap_without_dead_letters(r, queue, live_workers, max_attempts=3):
    return reap(r, queue, live_workers, max_attempts=10**9)


def reap_to_the_back(r, queue, live_workers, max_attempts=3):
    prefix = rq.processing_key(queue, "")
    moved = []
    for key in list(r.scan_iter(match=prefix + "*")):
        if key[len(prefix):] not in live_workers:
            while (task := r.lmove(key, queue, "RIGHT", "LEFT")) is not None:
                moved.append(task)
    return {"requeued": moved, "dead": []}


@pytest.mark.parametrize("check, args, hint_words", [
    (redis_lab.check_fetch_and_ack, (not_written, ack), "BLMOVE"),
    (redis_lab.check_fetch_and_ack, (fetch, not_written), "LREM"),
    (redis_lab.check_fetch_and_ack, (naive_fetch, ack), "processing"),
    (redis_lab.check_fetch_and_ack, (lifo_fetch, ack), "RIGHT"),
    (redis_lab.check_reaper, (fetch, not_written), "live_workers"),
    (redis_lab.check_reaper, (fetch, reap_everyone), "slow worker"),
    (redis_lab.check_reaper, (fetch, reap_to_the_back), "consuming end"),
    (redis_lab.check_dead_letter, (fetch, reap_without_dead_letters), "max_attempts"),
])
def test_mistakes_fail_with_a_hint(check, args, hint_words):
    with pytest.raises(LabCheckFailed) as failure:
        check(*args)
    assert hint_words in failure.value.hint
    assert "Hint:" in str(failure.value)
