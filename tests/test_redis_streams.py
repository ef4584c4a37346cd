"""brokerlab.redis_streams against the real Redis: the reference consumer recovers its own pending
entries after a real crash, the `>`-only consumer does not; groups, sharing, trimming, XAUTOCLAIM."""
from functools import partial

import pytest

import brokerlab as bl
from brokerlab import redis_streams as rs


@pytest.fixture
def stream(r):
    name = bl.run_name("test-streams")
    yield name
    rs.delete_stream(r, name)
    assert list(r.scan_iter(match=name + "*")) == []


def _crash_holding_one(r, stream, group, consumer):
    """Run the reference consumer in a process, SIGKILL it while it holds an entry; return that entry id."""
    with bl.BoundedWorkers(seconds=20) as workers:
        crashy = workers.process(partial(rs.group_consumer, work_seconds=60), stream, group, consumer)
        assert workers.wait(until=lambda: rs.pending_of(r, stream, group, consumer))
        crashy.kill()
    assert crashy.exitcode == -9
    [held] = rs.pending_of(r, stream, group, consumer)
    return held["message_id"]


def test_restarted_consumer_finishes_its_own_pending_entry_first(r, stream):
    ids = rs.add_entries(r, stream, 3)
    rs.create_group(r, stream, "g")
    held = _crash_holding_one(r, stream, "g", "worker-1")
    assert held == ids[0]
    # the anti-pattern: reading only ">" after the restart never returns the held entry
    assert rs.group_consumer(stream, "g", "worker-1", seconds=5, recover_pending=False) == 2
    assert [p["message_id"] for p in rs.pending_of(r, stream, "g")] == [held]
    assert held not in rs.done_ids(r, stream, "g")
    # the reference consumer reads its history (id 0) first
    assert rs.group_consumer(stream, "g", "worker-1", seconds=5) == 1
    assert r.xpending(stream, "g")["pending"] == 0
    assert rs.done_ids(r, stream, "g") == {i: 1 for i in ids}


def test_own_history_comes_before_new_entries(r, stream):
    rs.create_group(r, stream, "g")
    old = rs.add_entries(r, stream, 2)
    assert [i for i, _ in r.xreadgroup("g", "c", {stream: ">"}, count=2)[0][1]] == old  # taken, "crash"
    new = rs.add_entries(r, stream, 2)
    assert rs.group_consumer(stream, "g", "c", seconds=5) == 4
    assert rs.done_ids(r, stream, "g") == {i: 1 for i in old + new}
    assert r.xpending(stream, "g")["pending"] == 0


def test_pending_entry_trimmed_away_is_acked_not_counted(r, stream):
    rs.create_group(r, stream, "g")
    early = rs.add_entries(r, stream, 1)
    r.xreadgroup("g", "c", {stream: ">"}, count=1)
    later = rs.add_entries(r, stream, 3, maxlen=2)             # trims the pending entry away
    assert r.xpending(stream, "g")["pending"] == 1              # still referenced by the PEL
    assert rs.group_consumer(stream, "g", "c", seconds=5) == 2  # the 2 kept entries; the trimmed one is skipped
    assert r.xpending(stream, "g")["pending"] == 0
    assert sorted(rs.done_ids(r, stream, "g")) == later[-2:] and early[0] not in rs.done_ids(r, stream, "g")


def test_two_groups_each_get_everything_consumers_share(r, stream):
    ids = rs.add_entries(r, stream, 12)
    for group in ("billing", "shipping"):
        rs.create_group(r, stream, group)
    with bl.BoundedWorkers(seconds=20) as workers:
        workers.thread(rs.group_consumer, stream, "billing", "ann", until=workers.running)
        for name in ("bob", "cy"):
            workers.thread(rs.group_consumer, stream, "shipping", name, work_seconds=0.02, until=workers.running)
    assert rs.done_ids(r, stream, "billing") == rs.done_ids(r, stream, "shipping") == {i: 1 for i in ids}
    assert sum(rs.done_by(r, stream, "shipping").values()) == 12


def test_autoclaim_all_takes_a_dead_peers_entry_and_counts_the_delivery(r, stream):
    rs.add_entries(r, stream, 2)
    rs.create_group(r, stream, "g")
    held = _crash_holding_one(r, stream, "g", "dead")
    claimed, deleted = rs.autoclaim_all(r, stream, "g", "rescuer", min_idle_ms=0)
    assert [i for i, _ in claimed] == [held] and deleted == []
    [entry] = rs.pending_of(r, stream, "g")
    assert entry["consumer"] == "rescuer" and entry["times_delivered"] == 2
