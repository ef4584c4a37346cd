"""brokerlab.work_queues against the real brokers: one work-queue job with a consumer SIGKILLed holding work, on a
Redis Streams group, a RabbitMQ quorum queue and a Kafka share group; the poison-task delivery limits; cleanup."""
from __future__ import annotations

import pytest

import brokerlab as bl
from brokerlab import work_queues as wq
from brokerlab.views.decision import QueueComparison


def _gone(kind: str, name: str) -> bool:
    from brokerlab.clients import kafka_admin, rabbit_api, redis_client

    if kind == "redis":
        with redis_client() as r:
            return not r.exists(name)
    if kind == "rabbitmq":
        return name not in {q["name"] for q in rabbit_api("queues?columns=name")}
    return name not in kafka_admin().list_topics(timeout=10).topics


@pytest.mark.parametrize("kind", wq.BACKENDS)
def test_the_job_survives_a_consumer_killed_holding_work(kind):
    name = bl.run_name(f"test-wq-{kind}")
    result = wq.run_job(kind, tasks=20, consumers=2, hold=4, name=name)
    assert result.every_task_done and result.done_twice == []
    assert len(result.held) == 2 and len(result.acked_before_crash) == 2   # every other one acked
    assert result.redelivered and result.per_message_ack
    assert all(result.redelivery_counts[t] == 2 for t in result.held)   # the broker's own count, not a flag
    assert result.recovered_after is not None and result.recovered_after >= 0
    if kind == "redis":  # Redis does not notice the crash: a live consumer claims after the idle time
        assert result.recovered_after >= wq.CLAIM_IDLE_MS / 2000   # from its last renewal, late under load
    else:  # released when the dead consumer's connection closed, not after a 30 s lock or heartbeat timeout
        assert result.recovered_after < 10
    assert result.replayed == (0 if kind == "rabbitmq" else 20)
    assert sum(result.per_consumer.values()) == 20 - 2   # all but the 2 the doomed consumer acked
    assert _gone(kind, name)


@pytest.mark.parametrize("kind, expected", [("redis", list(range(1, wq.POISON_BOUND + 1))),
                                            ("rabbitmq", [1, 2, 3, 4]), ("kafka", [1, 2, 3])])
def test_poison_deliveries_stop_at_the_brokers_limit_where_there_is_one(kind, expected):
    name = bl.run_name(f"test-poison-{kind}")
    assert wq.poison_deliveries(kind, limit=3, name=name) == expected
    assert _gone(kind, name)


def test_the_comparison_rows_come_from_the_results():
    done = wq.JobResult("A", tasks=2, done={"task-0": 1, "task-1": 1}, held=["task-1"], acked_before_crash=["task-0"],
                        redelivery_counts={"task-1": 2}, recovered_after=0.1, completion_order=["task-1", "task-0"],
                        replayed=2)
    twice = wq.JobResult("B", tasks=2, done={"task-0": 2, "task-1": 1}, held=["task-1"], acked_before_crash=["task-0"],
                         redelivery_counts={"task-0": 2, "task-1": 2}, completion_order=["task-0", "task-1"])
    assert done.every_task_done and done.redelivered and done.per_message_ack and done.inversions == 1
    assert twice.done_twice == ["task-0"] and not twice.per_message_ack and twice.inversions == 0
    table = QueueComparison({"a": done, "b": twice}, {"a": [1, 2, 3], "b": list(range(1, wq.POISON_BOUND + 1))})
    rows = {row[0]: row[1:] for row in table.rows(table.refresh())}
    assert rows["per-message ack"] == (True, False) and rows["a task done twice"] == (False, True)
    assert rows["broker stops a poison task"] == (True, False)
    assert table.columns == ("property", "A", "B")
