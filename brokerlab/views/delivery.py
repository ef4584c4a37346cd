"""A live view of brokerlab.delivery's consumer-crash experiments (notebook 07a): per policy, how far the run got
(publishing, consuming, killed, restarted, counted), how many messages the consumers received (redeliveries
included), how many times the effect was applied, and how many ids it was applied to twice.

The experiment runs in a thread (`ConsumerCrash.run`) while the notebook cell watches:

    crash = delivery.ConsumerCrash("redis", n=20)
    with bl.BoundedWorkers(seconds=120) as workers:
        workers.thread(crash.run)
        CrashView(crash).watch(seconds=120, until=lambda: crash.finished)
"""
from __future__ import annotations

from ..clients import redis_client
from .base import LiveView


class CrashView(LiveView):
    """model = {policy: {"phase": str, "received": int, "applied": int, "applied twice": int}}"""

    columns = ("policy", "phase", "received", "applied", "applied twice")
    bar_columns = ("received", "applied", "applied twice")
    interval = 0.2

    def __init__(self, experiment, client=None):
        super().__init__()
        self.experiment = experiment
        self.title = (f"{experiment.system}: consumers killed after {experiment.crash_after} of a batch of "
                      f"{experiment.batch} ({experiment.n} messages each)")
        self.r = client or redis_client()

    def snapshot(self) -> dict:
        return self.experiment.progress(self.r)

    def rows(self, model: dict) -> list[tuple]:
        return [(policy, m["phase"], m["received"], m["applied"], m["applied twice"]) for policy, m in model.items()]
