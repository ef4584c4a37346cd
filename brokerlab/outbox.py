"""A transactional outbox: the order and the events about it are written in ONE local transaction; a relay
publishes the events to Kafka afterwards (notebook 08b).

The service's own database is SQLite (Python's standard library, a file per run): the point is the
transaction, not the database.  `place_order` inserts the order row and its outbox row inside one
`BEGIN ... COMMIT`, so either both exist or neither does, whatever crashes.  No broker is written while the
customer waits.

The relay (`relay_once`, or `relay_process` in a separate process that can be killed) reads unpublished
outbox rows in order, produces them to Kafka with an idempotent producer (acks=all), waits for every
delivery report, and only then marks the rows published.  A relay killed after Kafka acknowledged a batch
and before it marked it publishes that batch again when it restarts: the outbox guarantees *at least once*,
so the consumers downstream must be idempotent (they deduplicate by the event id every record carries).

    db = outbox.open_db(path)
    outbox.place_order(db, "o-1", customer="alice", total_cents=1250)
    outbox.relay_once(db, producer, topic)       # -> how many events it published
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id          TEXT PRIMARY KEY,
    customer    TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    placed_at   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- the relay publishes in this order
    event_id     TEXT NOT NULL UNIQUE,               -- what consumers deduplicate on
    order_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   REAL NOT NULL,
    published_at REAL                                -- NULL until Kafka acknowledged it
);
"""


class ServiceCrash(RuntimeError):
    """Raised on purpose inside place_order: the service dies in the middle of writing an order."""


def open_db(path: str | Path) -> sqlite3.Connection:
    """The service's database (created if missing). Autocommit mode: transactions are explicit BEGIN/COMMIT."""
    db = sqlite3.connect(str(path), timeout=5.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")   # the relay (another process) reads while the service writes
    db.executescript(SCHEMA)
    return db


def order_event(order_id: str, customer: str, total_cents: int, placed_at: float) -> dict:
    """The `order_placed` event of an order: what the outbox stores and every consumer receives."""
    return {"event_id": f"{order_id}:placed", "kind": "order_placed", "order_id": order_id,
            "customer": customer, "total_cents": total_cents, "placed_at": placed_at}


def save_order(db: sqlite3.Connection, order_id: str, customer: str, total_cents: int) -> dict:
    """What the naive service does: commit the order row alone (no outbox row); returns its event for the facade."""
    now = time.time()
    db.execute("INSERT INTO orders VALUES (?, ?, ?, ?)", (order_id, customer, total_cents, now))
    return order_event(order_id, customer, total_cents, now)


def place_order(db: sqlite3.Connection, order_id: str, customer: str, total_cents: int,
                crash_before_commit: bool | str = False) -> dict:
    """Insert the order and its `order_placed` event in one transaction; return the event.
    crash_before_commit=True raises ServiceCrash after both INSERTs and before COMMIT (rolled back);
    crash_before_commit="kill" SIGKILLs this process there (SQLite discards the unfinished transaction)."""
    now = time.time()
    event = order_event(order_id, customer, total_cents, now)
    event_id, payload = event["event_id"], json.dumps(event)
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("INSERT INTO orders VALUES (?, ?, ?, ?)", (order_id, customer, total_cents, now))
        db.execute("INSERT INTO outbox (event_id, order_id, kind, payload, created_at) VALUES (?, ?, ?, ?, ?)",
                   (event_id, order_id, "order_placed", payload, now))
        if crash_before_commit == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if crash_before_commit:
            raise ServiceCrash(f"the service died while placing {order_id}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return event


def place_order_process(db_path: str, order_id: str, customer: str, total_cents: int,
                        crash_before_commit: bool | str = False) -> None:
    """place_order in a process of its own (a target for BoundedWorkers.process), e.g. one killed mid-transaction."""
    db = open_db(db_path)
    place_order(db, order_id, customer, total_cents, crash_before_commit)
    db.close()


def counts(db: sqlite3.Connection) -> dict:
    """{'orders', 'events', 'unpublished'}: what the service's database holds."""
    orders = db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
    events, unpublished = db.execute(
        "SELECT COUNT(*), COUNT(*) - COUNT(published_at) FROM outbox").fetchone()
    return {"orders": orders, "events": events, "unpublished": unpublished}


def order_ids(db: sqlite3.Connection) -> list[str]:
    return [row[0] for row in db.execute("SELECT id FROM orders ORDER BY placed_at")]


def event_row(db: sqlite3.Connection, order_id: str) -> dict | None:
    """The order's row and its outbox row joined: what the trace view shows of the database."""
    row = db.execute("SELECT o.id, o.placed_at, x.seq, x.event_id, x.created_at, x.published_at "
                     "FROM orders o JOIN outbox x ON x.order_id = o.id WHERE o.id = ?", (order_id,)).fetchone()
    if row is None:
        return None
    keys = ("order_id", "placed_at", "seq", "event_id", "created_at", "published_at")
    return dict(zip(keys, row))


def idempotent_producer(**config):
    """confluent-kafka's producer with enable.idempotence (acks=all, retries without duplicates or reordering
    WITHIN this producer's session). A new process is a new producer id: it does not dedupe across restarts."""
    from .clients import kafka_producer

    return kafka_producer(**{"enable.idempotence": True, "acks": "all", "linger.ms": 5, **config})


def relay_once(db: sqlite3.Connection, producer, topic: str, batch: int = 10,
               die_after_produce: bool = False) -> int:
    """Publish up to `batch` unpublished events (oldest first), wait until Kafka acknowledged each, then mark them
    published. Returns how many. die_after_produce=True SIGKILLs this process after Kafka's acknowledgement and
    before the marking: the worst moment (the events are in Kafka, the outbox says they are not)."""
    from .kafka_tools import produce

    rows = db.execute("SELECT seq, event_id, order_id, payload FROM outbox WHERE published_at IS NULL "
                      "ORDER BY seq LIMIT ?", (batch,)).fetchall()
    if not rows:
        return 0
    # key = order id: every event of one order lands in one partition, in order
    produce(producer, topic, [(order_id, payload, {"headers": {"event_id": event_id}})
                              for _, event_id, order_id, payload in rows], timeout=10.0)
    if die_after_produce:
        os.kill(os.getpid(), signal.SIGKILL)
    db.execute("UPDATE outbox SET published_at = ? WHERE seq IN (%s)" % ",".join("?" * len(rows)),
               (time.time(), *[seq for seq, *_ in rows]))
    return len(rows)


def relay_until_drained(db: sqlite3.Connection, producer, topic: str, batch: int = 10,
                        seconds: float = 20.0) -> int:
    """Relay batches until the outbox has nothing unpublished (bounded by `seconds`); returns how many events."""
    deadline, total = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        sent = relay_once(db, producer, topic, batch)
        if not sent:
            break
        total += sent
    return total


def relay_process(db_path: str, topic: str, batch: int = 10, die_in_batch: int | None = None,
                  seconds: float = 20.0) -> None:
    """A relay as its own process (target for BoundedWorkers.process): drains the outbox; with die_in_batch=k it
    is killed (SIGKILL, by itself) in its k-th batch, after Kafka acknowledged it and before marking it."""
    db = open_db(db_path)
    producer = idempotent_producer()
    deadline, done = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        done += 1
        if not relay_once(db, producer, topic, batch, die_after_produce=(done == die_in_batch)):
            break
    producer.flush(5)
    db.close()


def decode(record) -> dict:
    """An outbox event as a consumer sees it: the JSON payload of a Kafka record (kafka_tools.Record)."""
    return json.loads(record.value)
