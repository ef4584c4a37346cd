"""Errors a learner can act on: which broker, where, and how to start it."""
from __future__ import annotations


class BrokerUnavailable(ConnectionError):
    """A broker did not answer in time.  The message names it, its address and the fix."""

    def __init__(self, broker: str, address: str, reason: str, start_command: str):
        self.broker = broker
        self.address = address
        self.reason = reason
        self.start_command = start_command
        super().__init__(
            f"{broker} is not answering at {address} ({reason}).\n"
            f"Start the broker stack with:  {start_command}\n"
            f"Check what is running with:   python -m brokerlab stack status"
        )

    # IPython shows this instead of a long traceback through client internals.
    def _render_traceback_(self):
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


class StackError(RuntimeError):
    """The launcher could not bring the stack to the state asked for."""

    def _render_traceback_(self):
        return [f"\x1b[31mStackError\x1b[0m: {self}"]


class WorkerTimeout(RuntimeError):
    """A bounded background worker was still running at its deadline."""
