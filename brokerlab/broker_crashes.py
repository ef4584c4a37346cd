"""Lesson 07c's experiments: a broker process is SIGKILLed and restarted on the same data folder. What is left?

Everything runs on single scratch servers of brokerlab.stack.scratch (never the shared stack):

- RabbitMQ queues (`QUEUE_SETUPS`): `fill_queue` publishes with publisher confirms and records every
  confirmed message in a brokerlab.checker.History; `kill` SIGKILLs the node and records the fault in
  every history; after `restart_with` (optionally with other rabbitmq.conf settings), `read_back` drains
  the queue and `History.check` counts what was lost.
- Celery (`crash_app`, `start_crash_worker`): a Celery app whose broker is a scratch server and whose
  results live in another scratch Redis that is never killed. The notebook's Celery apps
  (notebooks/celery_apps/crash_redis.py, crash_rabbitmq.py) are made here from an environment variable
  the kernel sets before it starts Celery's own worker (`celery -A ... worker`), so kernel and worker
  agree on the scratch servers' ports.

Every loop is bounded by a count and every wait by a deadline.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .checker import History
from .endpoints import Endpoints

__all__ = ["QUEUE_SETUPS", "QueueSetup", "declare_queue", "fill_queue", "kill", "restart_with", "read_back", "declare_refusal",
           "queue_depth", "quorum_member", "quorum_registrations_saved", "quorum_recovered", "declare_queues", "crash_app", "app_from_environment", "start_crash_worker", "publish_timed",
           "answers_ping", "reconnections", "note", "journal"]

# --- RabbitMQ queues --------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueSetup:
    """One way to declare a queue and publish to it (every publish waits for its publisher confirm)."""

    label: str
    durable: bool            # the queue's definition is stored on disk and recreated at boot
    persistent: bool         # delivery_mode=2: the message is written to disk (quorum queues always do)
    queue_type: str = "classic"

    def declare_arguments(self) -> dict:
        return {"x-queue-type": self.queue_type}


QUEUE_SETUPS = (
    QueueSetup("transient queue, persistent messages", durable=False, persistent=True),
    QueueSetup("durable queue, transient messages", durable=True, persistent=False),
    QueueSetup("durable queue, persistent messages", durable=True, persistent=True),
    QueueSetup("quorum queue", durable=True, persistent=True, queue_type="quorum"),
)


def declare_queue(node, queue: str, setup: QueueSetup) -> None:
    """Declare `queue` as `setup` says (fill_queue does too; declaring early keeps a fresh quorum queue's
    creation apart from a crash that follows at once)."""
    with node.connection() as connection:
        connection.channel().queue_declare(queue, durable=setup.durable, arguments=setup.declare_arguments())


def fill_queue(node, queue: str, setup: QueueSetup, count: int) -> History:
    """Declare `queue` as `setup` says and publish messages 0..count-1, each confirmed by the broker before
    the next (basic_publish on a confirm channel returns only then).  Returns the run's History; its
    healthy_rate is the confirmed messages per second."""
    import pika

    history = History(f"RabbitMQ {setup.label}")
    properties = pika.BasicProperties(delivery_mode=2 if setup.persistent else 1)
    with node.connection() as connection:
        channel = connection.channel()
        channel.queue_declare(queue, durable=setup.durable, arguments=setup.declare_arguments())
        channel.confirm_delivery()
        started = time.monotonic()
        for i in range(count):
            history.attempt(i)
            channel.basic_publish("", queue, str(i).encode(), properties, mandatory=True)  # raises unless confirmed
            history.acked(i)
        history.healthy_rate = count / max(time.monotonic() - started, 1e-6)
        history.done_publishing()
    return history


def kill(server, histories=(), target: str = "") -> int:
    """SIGKILL a scratch server (no shutdown, no final flush) and wait until it is gone; the fault is
    recorded in every History first.  Returns the pid that died."""
    pid = server.pid
    if not pid:
        raise RuntimeError(f"{target or server} is not running: nothing to kill")
    for history in histories:
        history.record_fault("SIGKILL", target or f"scratch {server.service.name}", pid)
    server.kill(signal.SIGKILL)
    return pid


def restart_with(server, settings: dict | None = None) -> float:
    """Start a killed scratch server again on the same ports and data folder; for RabbitMQ, `settings` are
    rabbitmq.conf lines added for this and later starts.  Returns the seconds the start took."""
    if settings:
        lines = "".join(f"{k} = {v}\n" for k, v in settings.items())
        server.config.update(settings)
        conf_file = getattr(server, "conf_file", None)
        if conf_file is not None:  # docker mode: the mounted conf.d file
            conf_file.write_text(conf_file.read_text() + lines)
        else:
            server.service.extra_config += lines
    return server.restart()


def read_back(node, queue: str, limit: int) -> list[int] | None:
    """The ids left in `queue` (drained with basic_get, at most `limit` + 10), or None when the queue
    itself no longer exists."""
    import pika.exceptions

    with node.connection() as connection:
        channel = connection.channel()
        try:
            channel.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return None
            raise
        ids = []
        for _ in range(limit + 10):  # bounded: everything once, and then some
            method, _properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            ids.append(int(body))
        return ids


def queue_depth(node, queue: str) -> int | None:
    """Ready messages in `queue` (a passive declare), or None when it does not exist."""
    import pika.exceptions

    with node.connection() as connection:
        try:
            return connection.channel().queue_declare(queue, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return None
            raise


def quorum_member(node, queue: str) -> dict:
    """The Raft state of the quorum queue's member on `node`, as `rabbitmq-queues quorum_status` reports it
    ({"Raft State": "leader", "Term": 1, "Last Written": 7, ...}); {} if the command fails."""
    result = node.ctl("rabbitmq-queues", "quorum_status", queue, "--formatter", "json", timeout=30)
    try:
        members = json.loads(result.stdout[result.stdout.index("["):]) if result.returncode == 0 else []
    except ValueError:
        members = []
    return next((m for m in members if m.get("Node Name") == node.nodename), {})


def quorum_registrations_saved(node, since: float) -> bool:
    """True once RabbitMQ's Raft library has written its table of quorum queue members (names.dets) to disk
    after the wall-clock time `since`.  It does so when the table has been idle for 0.5 s; a node killed
    before that forgets members registered since (see 07c: `name_not_registered`, an empty queue)."""
    path = node.service.dir / "mnesia" / node.nodename / "quorum" / node.nodename / "names.dets"
    return path.exists() and path.stat().st_mtime > since


def quorum_recovered(node, queue: str) -> bool:
    """True once the quorum queue's member on `node` leads again and has applied every entry it wrote:
    before that, a restarted node may report only part of its messages."""
    m = quorum_member(node, queue)
    return bool(m) and m["Raft State"] == "leader" and m["Last Written"] >= 0 and \
        m["Last Applied"] == m["Commit Index"] == m["Last Written"]


def declare_refusal(node, queue: str, **declare) -> str | None:
    """Declare `queue` with `declare` (queue_declare's arguments) on a fresh connection: None if RabbitMQ
    accepts it, else the first line of its refusal (a refused deprecated feature closes the connection)."""
    import pika.exceptions

    connection = node.connection()
    try:
        connection.channel().queue_declare(queue, **declare)
        return None
    except (pika.exceptions.ChannelClosedByBroker, pika.exceptions.ConnectionClosedByBroker) as exc:
        return f"{exc.reply_code} {exc.reply_text.splitlines()[0]}"
    finally:
        if connection.is_open:
            connection.close()


# --- Celery -------------------------------------------------------------------------------------

RECONNECT_ATTEMPTS = 10       # the worker's broker_connection_max_retries: 2, 4, 6 ... s apart (kombu)
_VARIABLE = "BROKERLAB_CRASH_APP_{}"


def _variable(kind: str) -> str:
    return _VARIABLE.format(kind.upper())


def crash_app(kind: str, broker, results, run: str, queues: dict[str, str]) -> dict:
    """Describe the Celery app `kind` ("redis" or "rabbitmq") in this process's environment, where
    `app_from_environment` (in the kernel and in every worker the kernel starts) finds it.

    broker: the scratch server carrying the tasks; results: a scratch Redis for the results (never killed);
    queues: {queue name: "classic" | "quorum"} (on Redis every queue is a list)."""
    spec = {"kind": kind, "host": broker.ep.host, "ports": {k: v for k, v in broker.ep.ports.items() if v},
            "results": f"redis://{results.ep.host}:{results.port}/0", "run": run, "queues": queues}
    os.environ[_variable(kind)] = json.dumps(spec)
    return spec


def app_from_environment(kind: str):
    """The Celery app described by crash_app(kind, ...): brokerlab.celery_app.make_app's timeouts, results in
    the results Redis, the queues named there (quorum ones with x-queue-type), and one task, `crash_<kind>.work`."""
    from kombu import Queue

    from .celery_app import make_app
    from .endpoints import BASE_PORTS

    spec = json.loads(os.environ[_variable(kind)])
    ep = Endpoints(host=spec["host"], offset=0, ports={name: spec["ports"].get(name, 0) for name in BASE_PORTS})
    app = make_app(f"crash_{kind}", broker="amqp" if kind == "rabbitmq" else "redis", ep=ep, results=False)
    if kind.startswith("redis"):
        app.conf.broker_url = f"redis://{ep.host}:{ep.ports['redis']}/0"  # a private server: database 0
    app.conf.result_backend = f"brokerlab.celery_app:CourseRedisBackend+{spec['results']}"
    queues = [Queue(name, routing_key=name, durable=True,
                    queue_arguments={"x-queue-type": queue_type} if kind == "rabbitmq" else None)
              for name, queue_type in spec["queues"].items()]
    app.conf.update(
        task_queues=queues,
        task_default_queue=queues[0].name,
        # a worker that lost its broker keeps trying (Celery's default, 100 times); bounded here
        broker_connection_retry=True,
        broker_connection_max_retries=RECONNECT_ATTEMPTS,
    )
    if kind == "rabbitmq":
        app.conf.update(
            task_default_queue_type="quorum",            # queues Celery declares itself (Celery >= 5.5)
            worker_detect_quorum_queues=True,            # the default: no global QoS on quorum queues
            # apply_async returns only once RabbitMQ confirmed the message (kombu waits for the confirm)
            broker_transport_options={**app.conf.broker_transport_options, "confirm_publish": True},
        )
    app.course_run = spec["run"]

    @app.task(name=f"crash_{kind}.work", bind=True)
    def work(self, label):
        return {"label": label, "worker": self.request.hostname,
                "redelivered": bool((self.request.delivery_info or {}).get("redelivered"))}

    @app.task(name=f"crash_{kind}.hold", bind=True, acks_late=True)  # acknowledged only when it returns
    def hold(self, label, release, seconds=30.0):
        """Notes its start in the journal, waits (bounded) until the key `release` exists in the results
        Redis, notes its end: lets the notebook crash the broker while this task runs."""
        redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
        note(spec["results"], spec["run"], event="started", label=label, redelivered=redelivered)
        client = _results_client(spec["results"])
        deadline = time.monotonic() + seconds
        while not client.exists(release) and time.monotonic() < deadline:
            time.sleep(0.05)
        note(spec["results"], spec["run"], event="finished", label=label, redelivered=redelivered)
        return {"label": label, "redelivered": redelivered}

    return app


_clients: dict = {}


def _results_client(url: str):
    """One redis-py client per process and URL (the journal lives in the results Redis, never killed)."""
    key = (os.getpid(), url)
    if key not in _clients:
        import redis

        from . import timeouts

        _clients[key] = redis.Redis.from_url(url, socket_timeout=timeouts.REPLY,
                                             socket_connect_timeout=timeouts.CONNECT, decode_responses=True)
    return _clients[key]


def note(results_url: str, run: str, **entry) -> None:
    """Append one entry to the run's journal (a list in the results Redis): what a task did, and when."""
    _results_client(results_url).rpush(f"{run}:journal", json.dumps({**entry, "at": time.time()}))


def journal(results, run: str, **match) -> list[dict]:
    """The run's journal entries (from the results scratch Redis `results`) whose fields equal `match`."""
    found = [json.loads(e) for e in results.client().lrange(f"{run}:journal", 0, -1)]
    return [e for e in found if all(e.get(k) == v for k, v in match.items())]


def start_crash_worker(kind: str, queues: list[str], cwd: str | Path, name: str):
    """Start Celery's own worker for the app `kind` (module celery_apps.crash_<kind> under `cwd`), consuming
    `queues`, without waiting for it (call .wait_ready()).  The module is re-imported, so the handle's
    `.app` reflects the environment crash_app() set just now (a second run of the notebook in one kernel)."""
    from .celery_app import WorkerHandle

    module = f"celery_apps.crash_{kind}"
    sys.modules.pop(module, None)
    # 4 threads: a held task and its redelivered copy may each occupy one while other tasks still run
    return WorkerHandle(module, pool="threads", concurrency=4, queues=queues, cwd=cwd, name=name).start()


def declare_queues(app) -> list[str]:
    """Declare every queue of the app's task_queues on its broker now (a worker declares only the queues
    it consumes; a publish declares its queue on first use).  Returns their names."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in app.conf.task_queues:
            queue.bind(channel).declare()
    return [queue.name for queue in app.conf.task_queues]


def publish_timed(task, *args, **options) -> tuple[object, float]:
    """task.apply_async(args, **options): (its result or the exception it raised, seconds it took)."""
    started = time.monotonic()
    try:
        outcome = task.apply_async(args, **options)
    except Exception as exc:  # the lesson looks at which error, and how fast
        outcome = exc
    return outcome, time.monotonic() - started


def answers_ping(worker, timeout: float = 0.5) -> bool:
    """True when the worker answers a remote-control ping, which travels through the broker both ways;
    False while the broker, the worker's connection or this process's connection to it is not back yet."""
    import kombu.exceptions

    try:
        return bool(worker.app.control.ping(destination=[worker.nodename], timeout=timeout))
    except (OSError, kombu.exceptions.OperationalError):  # a pooled connection from before the restart
        return False


def reconnections(worker) -> int:
    """How many times the worker's log says it could not reach its broker and would try again."""
    text = worker.log_file.read_text(errors="replace") if worker.log_file.exists() else ""
    return text.count("consumer: Cannot connect to")
