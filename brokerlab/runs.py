"""Per-run names and the CI scale switch.

A second run of a notebook must not trip over what the first one left (a
RabbitMQ queue declared with other arguments, a consumer group's committed
offsets), so everything a notebook creates is named per run.

BROKERLAB_QUICK=1 (set by the test suite) shrinks message counts and durations;
the code paths stay the same.
"""
from __future__ import annotations

import os
import secrets
import time


def quick() -> bool:
    return os.environ.get("BROKERLAB_QUICK", "").strip() not in ("", "0", "false", "no")


def scaled(full: int | float, quick_value: int | float | None = None):
    """`full` normally, a smaller value under BROKERLAB_QUICK (default: a tenth, at least 1)."""
    if not quick():
        return full
    if quick_value is not None:
        return quick_value
    return type(full)(max(1, full / 10))


def run_name(topic: str) -> str:
    """A name unique to this run, readable in a broker's UI: e.g. 'bl-lists-1732200000-3fa2'."""
    return f"bl-{topic}-{int(time.time())}-{secrets.token_hex(2)}"
