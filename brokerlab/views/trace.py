"""Views of notebook 08b's order system: where every order's effects are (OrderEffectsView), and one order's path
through the systems with timestamps (OrderTrace).

Both read the systems themselves on every refresh: the service's SQLite database (order and outbox rows), the
Kafka topic the relay writes (records keyed by order id, with their broker timestamps), and the effects journal
in Redis that the idempotent consumers append to atomically with their effect (brokerlab.hybrid.apply_once).
"""
from __future__ import annotations

from .. import hybrid, outbox
from ..kafka_tools import read_all
from .base import LiveView, short_name


def _kafka_records(topic: str) -> dict[str, list]:
    """{order id: [Record, ...]} of every record in the topic (a throwaway reader, no group)."""
    found: dict[str, list] = {}
    for record in read_all(topic, seconds=10):
        found.setdefault(record.key, []).append(record)
    return found


class OrderEffectsView(LiveView):
    """For the orders in the service's database: how many reached each system, how many are missing, and how many
    repeats there were (kept in the Kafka log; absorbed by each idempotent consumer).

    model = {"orders": int, "outbox_unpublished": int, "kafka_orders": int, "kafka_records": int,
             "emailed": int, "emailed_absorbed": int, "notified": int, "notified_absorbed": int}
    """

    title = "Order placed: effects per system"
    columns = ("system", "effect", "orders", "missing", "repeats")
    bar_columns = ("missing",)
    chart = {"emailed": lambda m: m["emailed"], "notified": lambda m: m["notified"]}
    interval = 0.3

    def __init__(self, db, topic: str, journal: str, redis):
        super().__init__()
        self.db, self.topic, self.journal, self.r = db, topic, journal, redis

    def snapshot(self) -> dict:
        db = outbox.counts(self.db)
        records = _kafka_records(self.topic)
        effects = hybrid.effect_counts(self.r, self.journal)
        return {"orders": db["orders"], "outbox_unpublished": db["unpublished"],
                "kafka_orders": len(records), "kafka_records": sum(len(r) for r in records.values()),
                "emailed": effects.get("emailed", 0), "emailed_absorbed": effects.get("emailed-absorbed", 0),
                "notified": effects.get("notified", 0), "notified_absorbed": effects.get("notified-absorbed", 0)}

    def converged(self) -> bool:
        m = self.model
        return bool(m) and m["orders"] == m["kafka_orders"] == m["emailed"] == m["notified"]

    def rows(self, model: dict) -> list[tuple]:
        if not model:
            return []
        n = model["orders"]
        return [
            ("SQLite", "order + outbox row", n, 0, "-"),
            ("Kafka", "audit event (repeats kept)", model["kafka_orders"], n - model["kafka_orders"],
             model["kafka_records"] - model["kafka_orders"]),
            ("Celery/RabbitMQ", "email (repeats absorbed)", model["emailed"], n - model["emailed"], model["emailed_absorbed"]),
            ("Redis", "notify+uncache (absorbed)", model["notified"], n - model["notified"],
             model["notified_absorbed"]),
        ]


class OrderTrace(LiveView):
    """One order's path: committed (with its outbox row), relayed to Kafka (each record: partition@offset), the email
    task sent to RabbitMQ (once per record) and its effect, and the Redis effects, each with its time after the commit and how often it happened.

    model = {"order": str, "steps": [{"step", "system", "where", "ms", "times", "absorbed"}], "done": int}
    """

    columns = ("step", "system", "where", "+ms", "times", "absorbed")
    interval = 0.3
    total_steps = 6

    def __init__(self, db, order_id: str, topic: str, journal: str, redis):
        super().__init__()
        self.db, self.order_id, self.topic, self.journal, self.r = db, order_id, topic, journal, redis

    def heading(self, model: dict) -> str:
        done = model.get("done", 0) if model else 0
        run, _, suffix = self.order_id.rpartition("-")   # 'bl-combine-<time>-<tag>-o5' -> 'combine…<tag>-o5'
        shown = f"{short_name(run)}-{suffix}" if run and short_name(run) != run else self.order_id
        return f"Order {shown}: {done} of {self.total_steps} steps done"

    def snapshot(self) -> dict:
        row = outbox.event_row(self.db, self.order_id)
        steps = []
        if row is None:
            return {"order": self.order_id, "steps": steps, "done": 0}
        t0 = row["placed_at"]

        def ms(at):
            return None if at is None else round((at - t0) * 1000)

        steps.append({"step": "order committed", "system": "SQLite", "where": "orders", "ms": 0,
                      "times": 1, "absorbed": 0})
        steps.append({"step": "outbox row (same tx)", "system": "SQLite", "where": f"outbox seq {row['seq']}",
                      "ms": ms(row["created_at"]), "times": 1, "absorbed": 0})
        records = sorted(_kafka_records(self.topic).get(self.order_id, []), key=lambda r: r.offset)
        if records:
            steps.append({"step": "relayed (audit log)", "system": "Kafka",
                          "where": ", ".join(f"p{r.partition}@{r.offset}" for r in records),
                          "ms": ms(records[0].timestamp / 1000), "times": len(records), "absorbed": 0})
        entries = [e for e in hybrid.journal_entries(self.r, self.journal) if e["order"] == self.order_id]
        queued = [e for e in entries if e["what"] == "email-queued"]
        if queued:
            steps.append({"step": "email task queued", "system": "RabbitMQ", "where": queued[0]["queue"],
                          "ms": ms(queued[0]["at"]), "times": len(queued), "absorbed": 0})
        for effect, step, system, where in (("emailed", "email sent", "Celery", "worker"),
                                            ("notified", "notified + cache dropped", "Redis", "Lua script")):
            applied = [e for e in entries if e["what"] == effect]
            if applied:
                absorbed = sum(1 for e in entries if e["what"] == f"{effect}-absorbed")
                where = applied[0].get("worker", where).split("@")[0] if effect == "emailed" else where
                steps.append({"step": step, "system": system, "where": where, "ms": ms(applied[0]["at"]),
                              "times": len(applied), "absorbed": absorbed})
        return {"order": self.order_id, "steps": steps, "done": len(steps)}

    def complete(self) -> bool:
        return self.model.get("done", 0) == self.total_steps

    def rows(self, model: dict) -> list[tuple]:
        return [(s["step"], s["system"], s["where"], "-" if s["ms"] is None else s["ms"], s["times"], s["absorbed"])
                for s in (model or {}).get("steps", [])]
