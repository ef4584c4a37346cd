"""A live view of RabbitMQ routing: exchanges → bindings → queues, with ready/unacknowledged counts.

It reads the management HTTP API (the same data as the management UI; the stack refreshes queue
statistics every second), limited to names starting with a per-run prefix.

    graph = ExchangeGraph(run)
    graph.watch(seconds=5, until=lambda: graph.ready(f"{run}.errors") == 1)
    graph.model = {"exchanges": {name: type}, "queues": {name: {"ready", "unacked", "consumers", "type"}},
                   "bindings": [(exchange, key, queue)]}
"""
from __future__ import annotations

import json
import urllib.parse

from ..clients import rabbit_api
from .base import LiveView


class ExchangeGraph(LiveView):
    columns = ("exchange", "binding", "queue", "ready", "unacked", "consumers")
    bar_columns = ("ready", "unacked")       # quantities; consumers is a count too small to need a bar
    blank_repeats = ("exchange",)            # an exchange with several bindings is named once
    interval = 0.5

    def __init__(self, prefix: str, vhost: str = "/"):
        super().__init__()
        self.prefix = prefix
        self.vhost = urllib.parse.quote(vhost, safe="")
        self.title = f"RabbitMQ routing of {prefix}*"

    def snapshot(self) -> dict:
        mine = lambda name: name.startswith(self.prefix)  # noqa: E731
        exchanges = {e["name"]: e["type"] for e in rabbit_api(f"exchanges/{self.vhost}?columns=name,type")
                     if mine(e["name"])}
        queues = {q["name"]: {"ready": q.get("messages_ready", 0), "unacked": q.get("messages_unacknowledged", 0),
                              "consumers": q.get("consumers", 0), "type": q.get("type", "classic")}
                  for q in rabbit_api(f"queues/{self.vhost}?columns=name,type,consumers,messages_ready,"
                                      "messages_unacknowledged") if mine(q["name"])}
        bindings = []
        for b in rabbit_api(f"bindings/{self.vhost}"):
            if b["source"] and mine(b["source"]):
                bindings.append((b["source"], _binding_label(b), b["destination"]))
        return {"exchanges": exchanges, "queues": queues, "bindings": sorted(bindings)}

    # --- what notebooks assert on -----------------------------------------------------------
    def ready(self, queue: str) -> int:
        return self.model.get("queues", {}).get(queue, {}).get("ready", 0)

    def unacked(self, queue: str) -> int:
        return self.model.get("queues", {}).get(queue, {}).get("unacked", 0)

    def edges(self) -> set[tuple[str, str, str]]:
        return set(self.model.get("bindings", []))

    def rows(self, model: dict) -> list[tuple]:
        if not model:
            return []
        short = lambda name: name[len(self.prefix):].lstrip(".") or name  # noqa: E731
        rows, bound = [], set()
        for exchange, key, queue in model["bindings"]:
            q = model["queues"].get(queue, {})
            kind = model["exchanges"].get(exchange, "?")
            label = "(any key)" if kind == "fanout" else (key or "(none)")
            rows.append((f"{short(exchange)} ({kind})", label, short(queue),
                         q.get("ready", 0), q.get("unacked", 0), q.get("consumers", 0)))
            bound.add(queue)
        for queue, q in sorted(model["queues"].items()):
            if queue not in bound:  # reached through the default exchange only
                rows.append(("(default exchange)", short(queue), short(queue), q["ready"], q["unacked"],
                             q["consumers"]))
        return rows


def _binding_label(binding: dict) -> str:
    arguments = binding.get("arguments") or {}
    if arguments:
        return json.dumps(arguments, sort_keys=True, separators=(",", ":"))
    return binding.get("routing_key", "")
