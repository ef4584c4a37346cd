import os
import signal
import time

import pytest

from brokerlab import BoundedWorkers, WorkerTimeout


def sleeper(seconds):
    time.sleep(seconds)


def test_threads_are_joined_and_results_kept():
    with BoundedWorkers(seconds=5) as workers:
        for n in range(3):
            workers.thread(lambda n=n: n * n, name=f"w{n}")
    assert workers.results == {"w0": 0, "w1": 1, "w2": 4}
    assert workers.alive() == []


def test_loops_bounded_by_running_end_at_the_deadline():
    count = {"n": 0}

    def loop():
        while workers.running():
            count["n"] += 1
            time.sleep(0.01)

    started = time.monotonic()
    with BoundedWorkers(seconds=0.5) as workers:
        workers.thread(loop)
    assert 0.4 < time.monotonic() - started < 2.0
    assert count["n"] > 5


def test_a_thread_that_ignores_the_deadline_raises_worker_timeout():
    started = time.monotonic()
    with pytest.raises(WorkerTimeout, match="still running"):
        with BoundedWorkers(seconds=0.3) as workers:
            workers.thread(sleeper, 4.5, name="stubborn")  # ignores running(), outlives the grace period
    assert time.monotonic() - started < 5


def test_an_error_in_a_worker_is_raised_in_the_caller():
    def boom():
        raise ValueError("inside the worker")

    with pytest.raises(ValueError, match="inside the worker"):
        with BoundedWorkers(seconds=2) as workers:
            workers.thread(boom)


def test_a_process_can_be_killed_like_a_crash_and_is_always_joined():
    with BoundedWorkers(seconds=10) as workers:
        process = workers.process(sleeper, 30)
        assert workers.wait(until=lambda: process.is_alive())
        os.kill(process.pid, signal.SIGKILL)
        process.join(5)
    assert process.exitcode == -signal.SIGKILL


def test_a_hung_process_is_killed_at_the_deadline():
    started = time.monotonic()
    with pytest.raises(WorkerTimeout):
        with BoundedWorkers(seconds=1) as workers:
            process = workers.process(sleeper, 60)
    assert not process.is_alive()
    assert time.monotonic() - started < 10
