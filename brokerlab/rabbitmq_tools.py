"""RabbitMQ machinery for notebook 04 and lab 04: read queues back, bounded consumers (threads, or
processes you kill), publisher confirms in three strategies, an RPC server and client with a
timeout, stream reads, and per-run cleanup through the management API.

The notebooks show pika's own calls first (exchange_declare, queue_bind, basic_publish,
basic_get, basic_consume, basic_ack/nack, confirm_delivery); these helpers only wrap what a lesson
repeats.  Every loop here is bounded by a count and a deadline, and every connection is closed.

    from brokerlab import rabbitmq_tools as rt
    rt.bodies(channel, queue)                 # drain a queue with basic_get: ['m1', 'm2', ...]
    rt.counts(queue)                          # {'ready': .., 'unacked': .., 'consumers': ..} (management API)
    rt.work(queue, "fast", done, until=workers.running)   # a consumer thread/process target
    rt.publish_with_confirms(queue, 200, window=20)       # msg/s with confirms, window of 20
    rt.delete_run(prefix)                     # delete every queue and exchange whose name starts with prefix
"""
from __future__ import annotations

import json
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .clients import rabbit_api, rabbit_connection, rabbit_parameters
from .waiting import wait_for

READ_LIMIT = 10_000  # no lesson drains more than this from one queue


@dataclass
class Message:
    """One message as a consumer saw it."""

    body: str
    routing_key: str = ""
    exchange: str = ""
    redelivered: bool = False
    headers: dict = field(default_factory=dict)
    priority: int | None = None
    delivery_tag: int = 0
    properties: object = None

    @classmethod
    def from_pika(cls, method, properties, body: bytes) -> "Message":
        return cls(body=body.decode(errors="replace"), routing_key=method.routing_key, exchange=method.exchange,
                   redelivered=method.redelivered, headers=dict(properties.headers or {}),
                   priority=properties.priority, delivery_tag=method.delivery_tag, properties=properties)


# --- reading queues back -------------------------------------------------------------------

def get_all(channel, queue: str, limit: int = READ_LIMIT, ack: bool = True) -> list[Message]:
    """Take every ready message from `queue` with basic_get (no waiting: what is there now).

    ack=False leaves them unacknowledged on this channel (they return to the queue when it closes)."""
    messages = []
    for _ in range(limit):
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            break
        messages.append(Message.from_pika(method, properties, body))
        if ack:
            channel.basic_ack(method.delivery_tag)
    return messages


def bodies(channel, queue: str, limit: int = READ_LIMIT) -> list[str]:
    """The bodies of every ready message in `queue`, in delivery order (the messages are acked)."""
    return [m.body for m in get_all(channel, queue, limit)]


def ready(channel, queue: str) -> int:
    """Ready messages, straight from the queue (a passive declare: no statistics delay)."""
    return channel.queue_declare(queue, passive=True).method.message_count


def queue_info(queue: str, vhost: str = "/") -> dict:
    return rabbit_api(f"queues/{_q(vhost)}/{_q(queue)}")


def exists(queue: str) -> bool:
    """Whether the queue exists (management API)."""
    import urllib.error

    try:
        queue_info(queue)
        return True
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise


def counts(queue: str) -> dict:
    """Ready, unacknowledged and consumer counts from the management API (refreshed every second)."""
    return _counts(queue_info(queue))


def _counts(info: dict) -> dict:
    return {"ready": info.get("messages_ready", 0), "unacked": info.get("messages_unacknowledged", 0),
            "consumers": info.get("consumers", 0), "type": info.get("type", "classic")}


def wait_counts(queue: str, seconds: float = 15.0, **expected: int) -> dict:
    """Wait until the management API reports the expected counts, e.g. wait_counts(q, unacked=3).

    Returns the queue's whole API record plus the short names of counts().  The API's statistics lag
    the broker by a second or two, so this waits; a passive declare (`ready`) does not lag."""
    last = {}

    def matches():
        info = queue_info(queue)
        last.clear()
        last.update(info, **_counts(info))
        return all(last.get(k) == v for k, v in expected.items())

    shown = ("ready", "unacked", "consumers", *[k for k in expected if k not in ("ready", "unacked", "consumers")])
    wait_for(matches, seconds, lambda: f"{queue} to reach {expected}; last seen "
             f"{ {k: last.get(k) for k in shown} }", poll=0.2)
    return dict(last)


def x_death(message: Message) -> list[dict]:
    """The broker's dead-letter history of a message, newest first: [{'queue', 'reason', 'count', ...}]."""
    deaths = []
    for entry in message.headers.get("x-death") or []:
        deaths.append({k: (v.decode() if isinstance(v, bytes) else v) for k, v in entry.items()})
    return deaths


def death_count(message: Message, queue: str | None = None, reason: str | None = None) -> int:
    """How many times the message was dead-lettered (from `queue`, for `reason`), per its x-death header."""
    return sum(int(d.get("count", 0)) for d in x_death(message)
               if (queue is None or d.get("queue") == queue) and (reason is None or d.get("reason") == reason))


def nack_until_gone(channel, queue: str, max_deliveries: int = 30, settle: float = 1.0) -> list[int]:
    """Play a consumer that fails on every message: basic_get, note its x-delivery-count, nack with requeue;
    until the queue gives nothing for `settle` seconds (the message was dropped or dead-lettered) or
    `max_deliveries` were made.  Returns the x-delivery-count of each delivery (0 when absent)."""
    seen: list[int] = []
    for _ in range(max_deliveries):
        got = wait_for_message(channel, queue, settle)
        if got is None:
            break
        seen.append(int(got.headers.get("x-delivery-count", 0)))
        channel.basic_nack(got.delivery_tag, requeue=True)
    return seen


def wait_for_message(channel, queue: str, seconds: float) -> Message | None:
    """basic_get until a message comes (unacked: ack or nack it yourself) or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        if method is not None:
            return Message.from_pika(method, properties, body)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


# --- bounded consumers (targets for BoundedWorkers.thread / .process) ------------------------

def work(queue: str, name: str, done: list | None = None, *, work_seconds: float = 0.0, prefetch: int = 0,
         until: Callable[[], bool] = lambda: True, max_messages: int = READ_LIMIT,
         fail: Callable[[Message], bool] | None = None, requeue: bool = False) -> list[str]:
    """Consume `queue` with manual acks until `until()` turns false or `max_messages` were handled.

    Each message is "processed" for `work_seconds`, (name, body) is appended to `done`, then it is acked.
    prefetch=0 means no limit (RabbitMQ pushes as fast as it can: round-robin); prefetch=1 is fair
    dispatch.  When fail(message) is true the message is nacked instead (requeue as given)."""
    handled: list[str] = []
    connection = rabbit_connection()
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch)
        for method, properties, body in channel.consume(queue, inactivity_timeout=0.05):
            if not until() or len(handled) >= max_messages:
                break
            if method is None:
                continue
            message = Message.from_pika(method, properties, body)
            time.sleep(work_seconds)
            if fail is not None and fail(message):
                channel.basic_nack(method.delivery_tag, requeue=requeue)
                continue
            handled.append(message.body)
            if done is not None:  # recorded just before the ack, so done + ready + unacked never overcounts
                done.append((name, message.body))
            channel.basic_ack(method.delivery_tag)
        channel.cancel()
    finally:
        _close(connection)
    return handled


def hold(queue: str, prefetch: int = 3, auto_ack: bool = False, seconds: float = 60.0) -> None:
    """A consumer that takes messages and never finishes them: run it as a process, then kill it.

    With auto_ack=False it holds up to `prefetch` messages unacknowledged; with auto_ack=True
    RabbitMQ considers every message it pushes delivered the moment it leaves the broker."""
    connection = rabbit_connection()
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    channel.basic_consume(queue, lambda *args: None, auto_ack=auto_ack)  # "working" forever: never acks
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.2)
    _close(connection)


# --- publisher confirms -----------------------------------------------------------------

def publish_with_confirms(queue: str, count: int, window: int = 1, batch: bool = False, size: int = 100,
                          seconds: float = 60.0) -> dict:
    """Publish `count` persistent messages to `queue` (default exchange) with publisher confirms.

    window=1: one by one (wait for each confirm); batch=True: publish `window` messages, then wait
    until all are confirmed; otherwise windowed: keep up to `window` unconfirmed in flight.
    Uses pika's asynchronous SelectConnection (the blocking adapter waits for every confirm).
    Returns {'confirmed', 'nacked', 'seconds', 'per_second'}."""
    import pika

    state = {"sent": 0, "confirmed": 0, "nacked": 0, "outstanding": set(), "error": None, "done": False}
    payload = b"x" * size
    started = time.monotonic()

    def publish_more(channel):
        if batch and state["outstanding"]:
            return  # a batch waits until every message in it is confirmed
        while state["sent"] < count and len(state["outstanding"]) < window:
            state["sent"] += 1
            state["outstanding"].add(state["sent"])
            channel.basic_publish("", queue, payload, pika.BasicProperties(delivery_mode=2))

    def on_confirm(frame, channel):
        tag, multiple = frame.method.delivery_tag, frame.method.multiple
        settled = {t for t in state["outstanding"] if t <= tag} if multiple else {tag} & state["outstanding"]
        state["outstanding"] -= settled
        key = "confirmed" if isinstance(frame.method, pika.spec.Basic.Ack) else "nacked"
        state[key] += len(settled)
        if state["confirmed"] + state["nacked"] >= count:
            state["done"] = True
            connection.close()
        else:
            publish_more(channel)

    def on_channel(channel):
        channel.confirm_delivery(lambda frame: on_confirm(frame, channel),
                                 callback=lambda _frame: publish_more(channel))

    def on_open_error(_connection, error):
        state["error"] = error
        connection.ioloop.stop()

    connection = pika.SelectConnection(
        rabbit_parameters(), on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_open_error_callback=on_open_error, on_close_callback=lambda *_: connection.ioloop.stop())
    timer = connection.ioloop.call_later(seconds, lambda: connection.close() if connection.is_open
                                         else connection.ioloop.stop())
    connection.ioloop.start()
    connection.ioloop.remove_timeout(timer)
    if state["error"] is not None:
        raise ConnectionError(f"RabbitMQ: {state['error']}")
    if not state["done"]:
        raise TimeoutError(f"only {state['confirmed']} of {count} confirms within {seconds:g} s")
    elapsed = time.monotonic() - started
    return {"confirmed": state["confirmed"], "nacked": state["nacked"], "seconds": elapsed,
            "per_second": count / elapsed if elapsed else float("inf")}


# --- RPC ---------------------------------------------------------------------------------

def rpc_server(queue: str, until: Callable[[], bool] = lambda: True, handler: Callable[[str], str] = str.upper,
               seconds: float = 60.0, max_requests: int = READ_LIMIT) -> int:
    """Answer requests on `queue`: reply handler(body) to the request's reply_to, with its correlation_id.
    Returns how many requests it answered.  Run it as a thread, or as a process you can kill."""
    import pika

    answered = 0
    deadline = time.monotonic() + seconds
    connection = rabbit_connection()
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1)
        for method, properties, body in channel.consume(queue, inactivity_timeout=0.05):
            if not until() or time.monotonic() > deadline or answered >= max_requests:
                break
            if method is None:
                continue
            reply = handler(body.decode())
            channel.basic_publish("", properties.reply_to, reply.encode(),
                                  pika.BasicProperties(correlation_id=properties.correlation_id))
            channel.basic_ack(method.delivery_tag)
            answered += 1
        channel.cancel()
    finally:
        _close(connection)
    return answered


class RpcTimeout(TimeoutError):
    """No reply within the client's timeout: the server is gone, slow, or never got the request."""


class RpcClient:
    """Request/reply over RabbitMQ with direct reply-to (no reply queue to declare or delete).

        with RpcClient() as rpc:
            rpc.call(queue, "hello", timeout=2)   # -> 'HELLO', or RpcTimeout after 2 s
    """

    REPLY_TO = "amq.rabbitmq.reply-to"

    def __init__(self):
        self.connection = rabbit_connection()
        self.channel = self.connection.channel()
        self.replies: dict[str, str] = {}
        # direct reply-to: consume the pseudo-queue (auto-ack is required) before publishing
        self.channel.basic_consume(self.REPLY_TO, self._on_reply, auto_ack=True)

    def _on_reply(self, channel, method, properties, body):
        self.replies[properties.correlation_id] = body.decode()

    def call(self, queue: str, body: str, timeout: float = 2.0) -> str:
        import pika

        correlation_id = uuid.uuid4().hex
        self.channel.basic_publish("", queue, body.encode(),
                                   pika.BasicProperties(reply_to=self.REPLY_TO, correlation_id=correlation_id))
        deadline = time.monotonic() + timeout
        while correlation_id not in self.replies:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RpcTimeout(f"no reply from {queue!r} within {timeout:g} s")
            self.connection.process_data_events(time_limit=min(left, 0.1))
        return self.replies.pop(correlation_id)

    def close(self) -> None:
        _close(self.connection)

    def __enter__(self) -> "RpcClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- streams -------------------------------------------------------------------------------

def read_stream(channel, stream: str, offset="first", max_messages: int = READ_LIMIT,
                idle: float = 0.5) -> list[tuple[int, str]]:
    """Read a stream queue over AMQP 0-9-1 from `offset` ('first', 'last', 'next', a number or a
    datetime) until `max_messages` or `idle` seconds without a message.  Returns [(offset, body)].

    Stream consumers need a prefetch and manual acks; acking does not remove anything from a stream."""
    channel.basic_qos(prefetch_count=100)
    read = []
    for method, properties, body in channel.consume(stream, arguments={"x-stream-offset": offset},
                                                    inactivity_timeout=idle):
        if method is None:
            break
        read.append((int(properties.headers["x-stream-offset"]), body.decode()))
        channel.basic_ack(method.delivery_tag)
        if len(read) >= max_messages:
            break
    channel.cancel()
    return read


# --- cleanup ----------------------------------------------------------------------------------

def names(prefix: str, vhost: str = "/") -> dict[str, list[str]]:
    """Queues and exchanges whose names start with `prefix` (management API)."""
    found = {}
    for kind in ("queues", "exchanges"):
        items = rabbit_api(f"{kind}/{_q(vhost)}?columns=name")
        found[kind] = sorted(i["name"] for i in items if i["name"].startswith(prefix))
    return found


def delete_run(prefix: str, vhost: str = "/") -> dict[str, list[str]]:
    """Delete every queue and exchange whose name starts with `prefix`; return what was deleted."""
    import urllib.error

    if len(prefix) < 6:
        raise ValueError(f"refusing to delete by the short prefix {prefix!r}: use a per-run name")
    doomed = names(prefix, vhost)
    for kind, items in doomed.items():
        for name in items:
            try:
                rabbit_api(f"{kind}/{_q(vhost)}/{_q(name)}", method="DELETE")
            except urllib.error.HTTPError as exc:
                if exc.code != 404:  # deleted meanwhile (an auto-delete queue): fine
                    raise
    return doomed


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _close(connection) -> None:
    try:
        if connection.is_open:
            connection.close()
    except Exception:  # closing a broken connection: nothing left to release
        pass


__all__ = ["Message", "RpcClient", "RpcTimeout", "bodies", "counts", "death_count", "delete_run", "exists", "get_all",
           "hold", "nack_until_gone", "names", "publish_with_confirms", "queue_info", "read_stream", "ready", "rpc_server",
           "wait_counts", "wait_for_message", "work", "x_death"]
