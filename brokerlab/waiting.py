"""Wait on observable state, never on a sleep-and-hope: poll a condition until it holds, within a deadline."""
from __future__ import annotations

import time
from typing import Callable


class WaitTimeout(AssertionError):
    """The condition did not hold in time.  An AssertionError, because a cell that waits is asserting it."""


def wait_for(condition: Callable[[], object], seconds: float = 10.0, what: str | Callable[[], str] | None = None,
             poll: float = 0.05):
    """Call `condition` until it returns something truthy (which is returned) or `seconds` pass.

    At the deadline it raises WaitTimeout saying what it waited for (`what` may be a callable, to report
    the last state seen)."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            described = what() if callable(what) else (what or getattr(condition, "__name__", "a condition"))
            raise WaitTimeout(f"gave up after {seconds:g} s waiting for {described}")
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
