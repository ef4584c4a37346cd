"""brokerlab.redis_queue against the real Redis: the split, the loss, the fix, the reaper's two modes."""
from functools import partial


import brokerlab as bl
from brokerlab import redis_queue as rq
from brokerlab.waiting import wait_for


def test_push_is_fifo_from_the_right(r, queue):
    tasks = rq.push_tasks(r, queue, 3)
    assert tasks == ["task-0", "task-1", "task-2"]
    assert r.rpop(queue) == "task-0"


def test_competing_workers_split_the_work_once_each(r, queue):
    tasks = rq.push_tasks(r, queue, 20)
    with bl.BoundedWorkers(seconds=20) as workers:
        for name in ("a", "b", "c"):
            workers.thread(rq.naive_worker, queue, name, work_seconds=0.02, until=workers.running)
    result = rq.outcome(r, queue, tasks)
    assert result["done"] == sorted(tasks) and result["done_twice"] == [] and result["lost"] == []
    assert sum(result["by_worker"].values()) == 20
    assert sum(workers.results.values()) == 20
    assert len(result["by_worker"]) >= 2


def test_killed_naive_worker_loses_its_task(r, queue):
    tasks = rq.push_tasks(r, queue, 3)
    with bl.BoundedWorkers(seconds=20) as workers:
        crashy = workers.process(partial(rq.naive_worker, work_seconds=60), queue, "crashy")
        assert workers.wait(until=lambda: rq.taken_by(r, queue, "crashy"))
        crashy.kill()
    with bl.BoundedWorkers(seconds=10) as workers:
        workers.thread(rq.naive_worker, queue, "healthy", until=workers.running)
    result = rq.outcome(r, queue, tasks)
    assert result["lost"] == ["task-0"] == rq.taken_by(r, queue, "crashy")
    assert result["done"] == ["task-1", "task-2"]


def test_killed_reliable_worker_loses_nothing(r, queue):
    tasks = rq.push_tasks(r, queue, 3)
    with bl.BoundedWorkers(seconds=20) as workers:
        crashy = workers.process(partial(rq.reliable_worker, work_seconds=60), queue, "crashy")
        assert workers.wait(until=lambda: r.llen(rq.processing_key(queue, "crashy")) == 1)
        crashy.kill()
    assert rq.outcome(r, queue, tasks)["in_flight"] == ["task-0"]
    assert wait_for(lambda: not rq.is_alive(r, queue, "crashy"), seconds=5)
    with bl.BoundedWorkers(seconds=20) as workers:
        workers.thread(rq.reaper, queue, name="reaper", until=workers.running)
        workers.thread(rq.reliable_worker, queue, "healthy", stop_when_empty=False, until=workers.running)
        assert workers.wait(until=lambda: len(rq.outcome(r, queue, tasks)["done"]) == 3)
        workers.stop()
    result = rq.outcome(r, queue, tasks)
    assert workers.results["reaper"] == ["task-0"]
    assert result["lost"] == [] and result["done_twice"] == [] and result["in_flight"] == []


def test_reap_leaves_live_workers_alone_unless_eager(r, queue):
    r.lpush(rq.processing_key(queue, "alive"), "t-alive")
    r.set(rq.alive_key(queue, "alive"), "1", ex=30)
    r.lpush(rq.processing_key(queue, "dead"), "t-dead")
    assert rq.reap(r, queue) == ["t-dead"]
    assert r.lrange(queue, 0, -1) == ["t-dead"]
    assert rq.reap(r, queue, only_dead=False) == ["t-alive"]
    assert r.rpop(queue) == "t-alive"  # rescued tasks go to the consuming end


def test_reliable_worker_acks_and_cleans_up(r, queue):
    tasks = rq.push_tasks(r, queue, 5)
    assert rq.reliable_worker(queue, "solo", seconds=10) == 5
    assert rq.processing_lists(r, queue) == {}
    assert not rq.is_alive(r, queue, "solo")
    assert rq.outcome(r, queue, tasks)["done"] == sorted(tasks)


def test_workers_end_by_deadline_on_an_empty_queue(queue):
    import time

    started = time.monotonic()
    assert rq.reliable_worker(queue, "idle", seconds=1.0, stop_when_empty=False) == 0
    assert rq.naive_worker(queue, "idle", seconds=1.0, stop_when_empty=False) == 0
    assert time.monotonic() - started < 4
