"""Fault injection for lab checks: a worker that dies between two steps.

A process can die between any two commands it sends.  `crashing_redis(steps)` gives the learner's
function a real Redis client that sends the first `steps` commands and then dies: the next
command raises SimulatedCrash and the connection is closed, so Redis sees exactly what it would
see of a SIGKILL at that point.  A MULTI/EXEC pipeline and a Lua script are one command each
(that is what makes them atomic); a plain pipeline (transaction=False) is as many steps as it has
commands.  `count_commands` runs a function once on a counting client, so a check can crash it after
each of its steps in turn.  `interrupting_redis(steps, peer)` does not die:
after `steps` commands it runs `peer()` (say, the same function on another connection, as a concurrent
redelivery would) and then carries on, so a check can show a check-then-act race deterministically.
"""
from __future__ import annotations

from ..clients import redis_client


class SimulatedCrash(Exception):
    """Raised by a check's fault injection: the learner's worker 'died' here."""


def _crashing_class(base):
    class CrashingRedis(base):
        """A Redis client that sends `budget` commands, then dies (None: never dies, just counts)."""
        budget: int | None = None
        sent: int = 0
        commands: list
        peer = None  # set: at the budget, run peer() once instead of dying

        def _step(self, name: str) -> None:
            if self.budget is not None and self.sent >= self.budget:
                if self.peer is None:
                    self.connection_pool.disconnect()
                    raise SimulatedCrash(f"the worker died before sending {name} (after {self.sent} command(s))")
                peer, self.peer, self.budget = self.peer, None, None   # interrupted once, then carries on
                peer()
            self.sent += 1
            self.commands.append(name)

        def execute_command(self, *args, **kwargs):
            self._step(str(args[0]).upper() if args else "?")
            return super().execute_command(*args, **kwargs)

        def pipeline(self, transaction=True, shard_hint=None):
            client = self
            pipe = super().pipeline(transaction, shard_hint)
            execute = pipe.execute

            def counted_execute(raise_on_error=True):
                if not pipe.command_stack:
                    return execute(raise_on_error)
                if pipe.transaction:
                    client._step("MULTI/EXEC")
                    return execute(raise_on_error)
                # a plain pipeline only batches the sending: Redis runs its commands one by one, and a
                # process can die after sending part of the batch, so each command is a step of its own
                names = [str(args[0]).upper() for args, _options in pipe.command_stack]
                room = len(names)
                if client.budget is not None and client.peer is None:
                    room = max(client.budget - client.sent, 0)
                if room < len(names):
                    pipe.command_stack = pipe.command_stack[:room]
                    for name in names[:room]:
                        client._step(name)
                    if room:
                        execute(raise_on_error)       # the part that left the process before it died
                    client._step(names[room])         # dies here
                for name in names:
                    client._step(name)
                return execute(raise_on_error)

            pipe.execute = counted_execute
            return pipe

    return CrashingRedis


def crashing_redis(steps: int | None, **options):
    """A decode_responses Redis client that dies before its (steps+1)-th command; None never dies."""
    plain = redis_client(**options)
    cls = _crashing_class(type(plain))
    client = cls(connection_pool=plain.connection_pool)
    client.endpoints = plain.endpoints
    client.budget, client.sent, client.commands = steps, 0, []
    return client


def interrupting_redis(steps: int, peer, **options):
    """A client like crashing_redis(steps) that, instead of dying, runs peer() once before its
    (steps+1)-th command and then carries on."""
    client = crashing_redis(steps, **options)
    client.peer = peer
    return client


def count_commands(function, *args, **kwargs) -> tuple[object, list[str]]:
    """Run function(r, *args) on a counting client; return (its result, the commands it sent)."""
    client = crashing_redis(None)
    try:
        return function(client, *args, **kwargs), list(client.commands)
    finally:
        client.close()


def run_crashed(function, steps: int, *args) -> list[str]:
    """Run the learner's function(r, *args) on a client that dies after `steps` commands, as a checked
    learner call (its own failures are blamed on it); return the commands it sent before dying."""
    from .checking import call

    doomed = crashing_redis(steps)
    try:
        call(function, doomed, *args, passthrough=(SimulatedCrash,))
    except SimulatedCrash:
        pass
    finally:
        doomed.close()
    return doomed.commands


__all__ = ["SimulatedCrash", "count_commands", "crashing_redis", "interrupting_redis", "run_crashed"]
