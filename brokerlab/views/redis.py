"""Live views of Redis: a list-based work queue (QueueView) and a stream with its groups (StreamView).

Both read the broker's own state (LLEN, XINFO, XPENDING) on every refresh; the
model is a plain dict, so tests and notebook asserts read it directly.
"""
from __future__ import annotations

from .. import redis_queue
from ..clients import redis_client
from .base import LiveView


class QueueView(LiveView):
    """The queue's length, each worker's processing list and heartbeat, and how many tasks are done.

    model = {"waiting": int, "processing": {worker: int}, "alive": {worker: bool},
             "in_flight": int, "done": int, "dead": int}
    """

    title = "Redis work queue"
    columns = ("list", "length", "worker alive")
    bar_columns = ("length",)
    chart = {"waiting": lambda m: m["waiting"], "in flight": lambda m: m["in_flight"], "done": lambda m: m["done"]}
    interval = 0.2

    def __init__(self, queue: str, client=None):
        super().__init__()
        self.queue = queue
        self.title = f"Redis work queue {queue}"
        self.r = client or redis_client()

    def snapshot(self) -> dict:
        processing = redis_queue.processing_lists(self.r, self.queue)
        done = self.r.hvals(redis_queue.done_key(self.queue))
        return {
            "waiting": self.r.llen(self.queue),
            "processing": dict(sorted(processing.items())),
            "alive": {w: redis_queue.is_alive(self.r, self.queue, w) for w in sorted(processing)},
            "in_flight": sum(processing.values()),
            "done": sum(int(n) for n in done),
            "dead": self.r.llen(redis_queue.dead_letter_key(self.queue)),
        }

    def rows(self, model: dict) -> list[tuple]:
        if not model:
            return []
        rows = [(self.queue, model["waiting"], "")]
        rows += [(f"  processing:{w}", n, model["alive"].get(w, False)) for w, n in model["processing"].items()]
        rows.append(("done (completions)", model["done"], ""))
        if model["dead"]:
            rows.append(("dead letters", model["dead"], ""))
        return rows


class StreamView(LiveView):
    """A stream: its length and ids, each group's last-delivered id and lag, and the pending
    entries list per consumer with delivery counts.

    model = {"length": int, "first_id": str|None, "last_id": str,
             "groups": {group: {"last_delivered": str, "pending": int, "lag": int|None,
                                "consumers": {consumer: {"pending": int, "max_deliveries": int}},
                                "pending_entries": [(id, consumer, deliveries)]}}}
    """

    columns = ("group", "last delivered", "lag", "consumer", "pending", "max deliveries")
    bar_columns = ("lag", "pending")
    blank_repeats = ("group", "last delivered", "lag")
    interval = 0.2
    max_pending_listed = 100  # XPENDING is paged; a lesson never needs more

    def __init__(self, stream: str, client=None):
        super().__init__()
        self.stream = stream
        self.r = client or redis_client()

    def snapshot(self) -> dict:
        if not self.r.exists(self.stream):
            return {"length": 0, "first_id": None, "last_id": None, "groups": {}}
        info = self.r.xinfo_stream(self.stream)
        first = info.get("first-entry")
        groups = {}
        for g in self.r.xinfo_groups(self.stream):
            name = g["name"]
            entries = [(p["message_id"], p["consumer"], p["times_delivered"])
                       for p in self.r.xpending_range(self.stream, name, "-", "+", self.max_pending_listed)]
            consumers = {c["name"]: {"pending": c["pending"], "max_deliveries": 0}
                         for c in self.r.xinfo_consumers(self.stream, name)}
            for _, consumer, delivered in entries:
                slot = consumers.setdefault(consumer, {"pending": 0, "max_deliveries": 0})
                slot["max_deliveries"] = max(slot["max_deliveries"], delivered)
            groups[name] = {
                "last_delivered": g["last-delivered-id"],
                "pending": g["pending"],
                "lag": g.get("lag"),  # Redis >= 7.0; None when Redis cannot tell (after trimming)
                "consumers": dict(sorted(consumers.items())),
                "pending_entries": entries,
            }
        return {"length": info["length"], "first_id": first[0] if first else None,
                "last_id": info["last-generated-id"], "groups": groups}

    @property
    def title(self) -> str:
        return self.heading(self.model)

    def heading(self, model: dict) -> str:
        if not model:
            return f"Redis stream {self.stream}"
        return (f"Redis stream {self.stream}: {model['length']} entries, "
                f"first id {model['first_id']}, last id {model['last_id']}")

    @property
    def chart(self) -> dict:
        """Each group's lag over this cell's history."""
        return {f"lag {g}": (lambda m, g=g: (m["groups"].get(g) or {}).get("lag") or 0)
                for g in self.model.get("groups", {})}

    def rows(self, model: dict) -> list[tuple]:
        if not model:
            return []
        rows = []
        for name, g in model["groups"].items():
            lag = "?" if g["lag"] is None else g["lag"]
            if not g["consumers"]:
                rows.append((name, g["last_delivered"], lag, "-", 0, 0))
            for consumer, c in g["consumers"].items():
                rows.append((name, g["last_delivered"], lag, consumer, c["pending"], c["max_deliveries"]))
        return rows
