"""QueueView and StreamView: their models after a bounded watch loop, against the real Redis."""
import time
from functools import partial

import pytest

import brokerlab as bl
from brokerlab import redis_queue as rq
from brokerlab import redis_streams as rs
from brokerlab.views.redis import QueueView, StreamView


@pytest.fixture
def stream(r):
    name = bl.run_name("test-sview")
    yield name
    rs.delete_stream(r, name)


def test_queue_view_follows_workers_to_the_end(r, queue):
    tasks = rq.push_tasks(r, queue, 10)
    view = QueueView(queue)
    assert view.refresh()["waiting"] == 10
    started = time.monotonic()
    with bl.BoundedWorkers(seconds=20) as workers:
        for name in ("a", "b"):
            workers.thread(rq.reliable_worker, queue, name, work_seconds=0.05, until=workers.running)
        # done is recorded just before the LREM ack, so wait for both
        model = view.watch(seconds=10, interval=0.05,
                           until=lambda: view.model["done"] == len(tasks) and view.model["in_flight"] == 0)
    assert time.monotonic() - started < 10
    assert model == view.model
    assert model["waiting"] == 0 and model["done"] == 10 and model["in_flight"] == 0
    waiting = view.series(lambda m: m["waiting"])[1]
    assert waiting[0] == 10 and waiting[-1] == 0 and len(view.history) >= 2
    assert "done (completions)" in view.render_text()


def test_queue_view_shows_a_dead_workers_processing_list(r, queue):
    rq.push_tasks(r, queue, 2)
    view = QueueView(queue)
    with bl.BoundedWorkers(seconds=20) as workers:
        crashy = workers.process(partial(rq.reliable_worker, work_seconds=60), queue, "crashy")
        view.watch(seconds=10, until=lambda: view.model["processing"].get("crashy") == 1, interval=0.02)
        crashy.kill()
    assert view.model["processing"] == {"crashy": 1} and view.model["alive"] == {"crashy": True}
    view.watch(seconds=5, until=lambda: view.model["alive"] == {"crashy": False}, interval=0.05)
    assert view.model["alive"] == {"crashy": False} and view.model["waiting"] == 1
    assert ("  processing:crashy", 1, False) in view.rows(view.model)


def test_queue_view_watch_ends_at_its_time_limit(queue):
    view = QueueView(queue)
    started = time.monotonic()
    view.watch(seconds=0.3, until=lambda: False, interval=0.05)
    assert 0.25 < time.monotonic() - started < 2
    assert view.model["waiting"] == 0


def test_stream_view_groups_pending_and_delivery_counts(r, stream):
    ids = rs.add_entries(r, stream, 4)
    rs.create_group(r, stream, "fast", start="0")
    rs.create_group(r, stream, "slow", start="0")
    view = StreamView(stream)
    with bl.BoundedWorkers(seconds=20) as workers:
        workers.thread(rs.group_consumer, stream, "fast", "f1", until=workers.running)
        view.watch(seconds=10, until=lambda: view.model["groups"]["fast"]["last_delivered"] == ids[-1]
                   and view.model["groups"]["fast"]["pending"] == 0, interval=0.05)
    r.xreadgroup("slow", "s1", {stream: ">"}, count=2)                 # two pending for s1
    r.xautoclaim(stream, "slow", "s2", 0, start_id="0-0", count=1)     # one of them re-delivered to s2
    model = view.refresh()
    assert model["length"] == 4 and model["first_id"] == ids[0] and model["last_id"] == ids[-1]
    fast, slow = model["groups"]["fast"], model["groups"]["slow"]
    assert fast["last_delivered"] == ids[-1] and fast["pending"] == 0 and fast["lag"] == 0
    assert slow["last_delivered"] == ids[1] and slow["pending"] == 2 and slow["lag"] == 2
    assert slow["consumers"] == {"s1": {"pending": 1, "max_deliveries": 1}, "s2": {"pending": 1, "max_deliveries": 2}}
    assert slow["pending_entries"] == [(ids[0], "s2", 2), (ids[1], "s1", 1)]
    assert ("slow", ids[1], 2, "s2", 1, 2) in view.rows(model)
    assert "4 entries" in view.render_text()


def test_stream_view_of_a_missing_stream(stream):
    assert StreamView(stream).refresh() == {"length": 0, "first_id": None, "last_id": None, "groups": {}}
