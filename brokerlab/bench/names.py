"""Per-run names for everything the benchmark creates (keys, queues, topics), remembered, so a
notebook or a test can ask the brokers afterwards whether anything was left behind."""
from __future__ import annotations

from ..runs import run_name

CREATED: list[tuple[str, str]] = []   # (kind, name): kind is "redis", "channel", "queue" or "topic"


def scratch(topic: str, kind: str) -> str:
    name = run_name(f"bench-{topic}")
    CREATED.append((kind, name))
    return name


def leftovers() -> list[str]:
    """Every name this process's benchmark runs created that a broker still holds (expected: none)."""
    from .. import kafka_tools
    from ..celery_app import BROKER_DB
    from ..clients import kafka_admin, rabbit_api, redis_client
    from .celery_apps import PREFIX

    kinds: dict[str, set[str]] = {}
    for kind, name in CREATED:
        kinds.setdefault(kind, set()).add(name)
    found = []
    r, celery_db = redis_client(), redis_client(db=BROKER_DB)
    try:
        found += [f"Redis key {k}" for k in sorted(kinds.get("redis", ())) if r.exists(k)]
        found += [f"Celery's Redis key {k}" for k in celery_db.scan_iter(match=PREFIX + "*", count=1000)]
    finally:
        r.close()
        celery_db.close()
    if kinds.get("queue"):
        queues = {q["name"] for q in rabbit_api("queues?columns=name")}
        found += [f"RabbitMQ queue {q}" for q in sorted(kinds["queue"] & queues)]
    if kinds.get("topic"):
        topics = set(kafka_tools.topic_names(kafka_admin()))
        found += [f"Kafka topic {t}" for t in sorted(kinds["topic"] & topics)]
    return found
