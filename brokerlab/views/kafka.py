"""OffsetsView: one topic's partitions × (log start, committed, log end, lag) for each consumer group,
read from the broker (AdminClient list_offsets and list_consumer_group_offsets) on every refresh."""
from __future__ import annotations

from .. import kafka_tools
from ..clients import kafka_admin
from .base import LiveView, short_name


class OffsetsView(LiveView):
    """    view = OffsetsView(topic, groups=[group])
    view.watch(seconds=10, until=lambda: view.lag(group) == 0)
    times, lags = view.series(lambda m: m["groups"][group]["lag"])

    The model is kafka_tools.offsets_table(): {"topic", "partitions": {p: {"log_start", "log_end"}},
    "groups": {g: {"partitions": {p: {"committed", "lag"}}, "lag": total}}}.
    A group that has committed nothing shows committed '-' and, since it would start at the log
    start, a lag of log end - log start."""

    columns = ("group", "partition", "log start", "committed", "log end", "lag")
    bar_columns = ("lag",)          # offsets are positions, partition numbers are ids: no bars
    blank_repeats = ("group",)
    interval = 0.3

    def __init__(self, topic: str, groups=(), admin=None):
        super().__init__()
        self.topic = topic
        self.groups = list(groups)
        self.admin = admin if admin is not None else kafka_admin()
        self.title = f"Kafka offsets: {topic}"

    def add_group(self, group: str) -> "OffsetsView":
        if group not in self.groups:
            self.groups.append(group)
        return self

    @property
    def chart(self) -> dict:
        """Each group's total lag over this cell's history."""
        return {f"lag {short_name(g)}": (lambda m, g=g: (m["groups"].get(g) or {}).get("lag") or 0)
                for g in self.groups}

    def snapshot(self) -> dict:
        return kafka_tools.offsets_table(self.admin, self.topic, self.groups)

    def rows(self, model: dict) -> list[tuple]:
        parts = model.get("partitions", {})
        out = []
        for group, g in model.get("groups", {}).items():
            for p, ends in parts.items():
                c = g["partitions"][p]
                out.append((group, p, ends["log_start"], "-" if c["committed"] is None else c["committed"],
                            ends["log_end"], c["lag"]))
        if not model.get("groups"):
            out = [("(no group)", p, e["log_start"], "-", e["log_end"], "-") for p, e in parts.items()]
        return out

    # --- what notebooks and tests read --------------------------------------------------------
    def lag(self, group: str, model: dict | None = None) -> int:
        model = self.model if model is None else model
        return model["groups"][group]["lag"]

    def log_end(self, model: dict | None = None) -> int:
        model = self.model if model is None else model
        return sum(e["log_end"] for e in model["partitions"].values())

    def committed(self, group: str, model: dict | None = None) -> dict[int, int | None]:
        model = self.model if model is None else model
        return {p: c["committed"] for p, c in model["groups"][group]["partitions"].items()}
