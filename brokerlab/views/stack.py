"""StackView: is each broker up, where, and what is it holding right now."""
from __future__ import annotations

from ..endpoints import BROKER_NAMES, Endpoints, current
from ..health import BROKERS, probe
from .base import LiveView


class StackView(LiveView):
    """Which brokers answer, where, and what they hold: facts checked once, not a changing state, so the output
    says when it was checked instead of pretending to be live. `watch(seconds)` waits (bounded) until every broker
    answers, e.g. right after `stack up`, and shows the result under the running cell."""

    title = "Broker stack"
    columns = ("broker", "address", "up", "answer", "holding")
    interval = 1.0
    live = False

    def watch(self, seconds: float = 5.0, until=None, interval: float | None = None) -> dict:
        if until is None:
            until = lambda: all(m["up"] for m in self.model.values())  # noqa: E731
        return super().watch(seconds, until=until, interval=interval)

    def __init__(self, brokers=BROKERS, ep: Endpoints | None = None):
        super().__init__()
        self.brokers = tuple(brokers)
        self.ep = ep or current()

    def snapshot(self) -> dict:
        results = probe(self.brokers, self.ep)
        model = {}
        for name, r in results.items():
            model[name] = {"address": r.address, "up": r.ok, "answer": r.detail,
                           "seconds": round(r.seconds, 3), "holding": self._holding(name) if r.ok else "-"}
        return model

    def _holding(self, broker: str) -> str:
        """A one-line census of the broker's contents, from its own admin interface."""
        try:
            if broker == "redis":
                from ..clients import redis_client

                client = redis_client(ep=self.ep)
                try:
                    return f"{client.dbsize()} keys"
                finally:
                    client.close()
            if broker == "rabbitmq":
                from ..clients import rabbit_api

                queues = rabbit_api("queues?columns=name,messages", ep=self.ep)
                return f"{len(queues)} queues, {sum(q.get('messages') or 0 for q in queues)} messages"
            if broker == "kafka":
                from ..clients import kafka_check

                topics = [t for t in kafka_check(self.ep).topics if not t.startswith("__")]
                return f"{len(topics)} topics"
        except Exception as exc:  # the census is a nicety; the "up" column is the health check
            return f"? ({type(exc).__name__})"
        return "-"

    def rows(self, model: dict) -> list[tuple]:
        return [(BROKER_NAMES[name], m["address"], m["up"], m["answer"], m["holding"])
                for name, m in model.items()]
