import time

import pytest

from brokerlab.waiting import WaitTimeout, wait_for


def test_returns_the_first_truthy_value():
    calls = iter([0, None, "ready"])
    assert wait_for(lambda: next(calls), seconds=2, poll=0) == "ready"


def test_raises_at_the_deadline_saying_what_it_waited_for():
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="gave up after 0.3 s waiting for the queue to fill"):
        wait_for(lambda: False, seconds=0.3, what=lambda: "the queue to fill")
    assert 0.25 < time.monotonic() - started < 1.5
