"""A Celery app factory with timeouts, and Celery's own `celery worker` run as a bounded subprocess.

Celery's defaults suit production (retry the broker forever, 120 s socket
timeouts, 20 result-backend retries); in a course they turn a stopped broker
into a hang.  These settings make every call fail within seconds instead, and
`delay()` on a stopped or frozen broker raises the course's BrokerUnavailable.

Per-run isolation (`make_app(..., per_run=True)`): notebooks run in parallel
against one Redis, so an app gets a run id (shared with the workers it starts
through an environment variable) and every key it creates carries it: its
default queue, kombu's unacked bookkeeping (so a short visibility timeout never
re-delivers another run's tasks) and its result keys.  `forget_run(app)` deletes them.

Workers: `start_worker(...)` returns a running, ready `WorkerHandle`; `stop()` ends
it (warm, then SIGKILL), `kill()` is a crash (SIGKILL to the whole process group),
`log()` shows its output.  Every handle is also stopped at interpreter exit, and the
worker carries PR_SET_PDEATHSIG, so it dies with the kernel that started it.
"""
from __future__ import annotations

import atexit
import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from . import timeouts
from .endpoints import Endpoints, current
from .errors import StackError
from .runs import run_name

BROKER_DB, RESULT_DB = 1, 2  # Celery's keys stay out of the lessons' database 0
VISIBILITY_TIMEOUT = 3600    # Celery's own default on Redis (1 h); per-run apps pass a short one
RESULT_TIMEOUT = 1.5         # the result store's socket timeout: delay() on a frozen Redis fails in 2 x this


def run_id_variable(main: str) -> str:
    return f"BROKERLAB_CELERY_RUN_{''.join(c if c.isalnum() else '_' for c in main).upper()}"


def run_id(main: str) -> str:
    """This run's id for the app `main`: made once per kernel and put in the environment,
    so every worker the kernel starts (a child process) uses the same one."""
    return os.environ.setdefault(run_id_variable(main), run_name(main))


def course_task_class():
    """Celery's Task with one change: a broker that does not answer raises BrokerUnavailable
    (naming Redis or RabbitMQ, the address and the start command) instead of kombu's OperationalError."""
    from celery import Task

    class CourseTask(Task):
        def apply_async(self, *args, **kwargs):
            try:
                return super().apply_async(*args, **kwargs)
            except Exception as exc:
                clear = _as_unavailable(self.app, exc)
                if clear is exc:
                    raise
                raise clear from exc

    return CourseTask


def _as_unavailable(app, exc: Exception) -> Exception:
    """exc, or the course's BrokerUnavailable when exc (or what caused it) is a connection failure."""
    import kombu.exceptions
    import redis

    from .clients import unavailable

    connection_errors = (kombu.exceptions.OperationalError, redis.exceptions.ConnectionError,
                         redis.exceptions.TimeoutError, ConnectionError, TimeoutError)
    cause, seen = exc, set()
    while cause is not None and id(cause) not in seen and not isinstance(cause, connection_errors):
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    if cause is None or id(cause) in seen:
        return exc
    ep: Endpoints = app.course_endpoints
    broker = "rabbitmq" if app.conf.broker_url.startswith("amqp") else "redis"
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return unavailable(broker, f"Celery could not send the task: {reason}", ep=ep)


def course_result_backend():
    """Celery's Redis result backend whose connections do not retry on their own: redis-py 6+ retries a
    failed connect 3 times with backoff, which, under Celery's own retry policy, turns a stopped Redis
    into a 6 s wait.  Celery's retry policy (short, set in make_app) is the only one left."""
    from celery.backends.redis import RedisBackend
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    class CourseRedisBackend(RedisBackend):
        def _get_pool(self, **params):
            return super()._get_pool(**params, retry=Retry(NoBackoff(), 0))

    return CourseRedisBackend


def make_app(main: str, broker: str = "redis", results: bool = True, ep: Endpoints | None = None,
             per_run: bool = False, visibility_timeout: float | None = None, **config):
    """Celery(main) on Redis (broker='redis') or RabbitMQ (broker='amqp'), results in Redis.

    per_run=True: the default queue, kombu's unacked keys and the result keys are named after
    `run_id(main)` (app.course_run), so parallel runs never see each other's tasks.
    visibility_timeout: seconds before Redis re-delivers a task nobody acknowledged (Celery's default: 1 h)."""
    from celery import Celery

    ep = ep or current()
    redis_base = f"redis://{ep.host}:{ep.ports['redis']}"
    broker_url = {"redis": f"{redis_base}/{BROKER_DB}", "amqp": ep.amqp_url}[broker]
    backend = f"brokerlab.celery_app:CourseRedisBackend+{redis_base}/{RESULT_DB}" if results else None
    app = Celery(main, broker=broker_url, backend=backend, task_cls=course_task_class())
    app.course_endpoints = ep
    transport = {
        "socket_timeout": timeouts.REPLY, "socket_connect_timeout": timeouts.CONNECT,
        "max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5,
    }
    # a frozen Redis costs delay() one result-store timeout to subscribe and one more to reconnect
    result_transport: dict = {"retry_policy": {"max_retries": 0, "timeout": RESULT_TIMEOUT}}
    app.conf.update(
        # the worker exits instead of retrying a dead broker forever
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=3,
        broker_connection_timeout=timeouts.REPLY,
        broker_transport_options=transport,
        # delay() raises at the first failure: a second try against a frozen broker would double the wait
        # (a connection that went stale while Redis restarted is replaced by redis-py itself)
        task_publish_retry_policy={"max_retries": 0},
        # the Redis result backend: short socket timeouts, no 20-fold retry
        redis_socket_timeout=RESULT_TIMEOUT,
        redis_socket_connect_timeout=timeouts.CONNECT,
        redis_retry_on_timeout=False,
        result_backend_transport_options=result_transport,
        result_expires=3600,
        # what the lessons observe: STARTED states and task events (Celery's own monitoring feed)
        task_track_started=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        worker_hijack_root_logger=False,
    )
    app.course_run = None
    if per_run:
        run = run_id(main)
        app.course_run = run
        if broker == "redis":
            transport.update(
                # kombu keeps delivered-but-unacknowledged messages in one hash and one sorted set per
                # database; per-run names keep our visibility timeout away from other runs' messages
                unacked_key=f"{run}.unacked", unacked_index_key=f"{run}.unacked_index",
                unacked_mutex_key=f"{run}.unacked_mutex",
                # look for overdue messages every second (kombu's default sweep is every ~100 s)
                unacked_restore_interval=1, unacked_restore_throttle=1,
            )
        result_transport["global_keyprefix"] = f"{run}:"
        app.conf.task_default_queue = run
    if visibility_timeout is not None:
        transport["visibility_timeout"] = visibility_timeout
    app.conf.update(config)
    return app


def run_keys(app, prefixes: tuple[str, ...] | list[str] = ()) -> dict[int, list[str]]:
    """Every Redis key of this app's run, by database (SCAN, never KEYS): names starting with the run id, or with
    one of `prefixes` (queues named outside the run), and kombu's binding records of those queues."""
    from .clients import redis_client

    names = [*([app.course_run] if app.course_run else []), *prefixes]
    if not names:
        raise ValueError("run_keys needs an app made with per_run=True, or prefixes")
    patterns = [f"{kind}{name}*" for name in names for kind in ("", "_kombu.binding.", "_kombu.binding_permanent.")]
    found = {}
    for db in (BROKER_DB, RESULT_DB):
        client = redis_client(db=db, ep=app.course_endpoints)
        try:
            found[db] = sorted({key for pattern in patterns for key in client.scan_iter(match=pattern, count=1000)})
        finally:
            client.close()
    return found


def forget_run(app, prefixes: tuple[str, ...] | list[str] = ()) -> int:
    """Delete every key of this app's run (queues, bindings, unacked bookkeeping, results) and of the queues
    named by `prefixes`; returns how many."""
    from .clients import redis_client

    deleted = 0
    for db, keys in run_keys(app, prefixes).items():
        if keys:
            client = redis_client(db=db, ep=app.course_endpoints)
            try:
                deleted += client.delete(*keys)
            finally:
                client.close()
    return deleted


def __getattr__(name):  # Celery loads the backend class by name: made on first use (it imports Celery)
    if name == "CourseRedisBackend":
        global CourseRedisBackend
        CourseRedisBackend = course_result_backend()
        return CourseRedisBackend
    raise AttributeError(name)


# --- workers -----------------------------------------------------------------------------

_live: set["CeleryProcess"] = set()
_live_lock = threading.Lock()


def _die_with_parent():
    """A function for Popen(preexec_fn=...): the worker gets SIGKILL when the thread that started it
    (a notebook kernel's main thread) dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG).
    Prepared before the fork: the child must not import anything."""
    if not sys.platform.startswith("linux"):
        return None  # elsewhere the atexit handler and stop() still apply
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1

    def set_pdeathsig() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)

    return set_pdeathsig


def _children(pid: int) -> list[int]:
    """Direct children of pid (Linux /proc)."""
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _alive(pid: int) -> bool:
    from .stack.procs import pid_alive

    return pid_alive(pid)


def prune_old_logs(log_dir: Path, keep: int = 40, older_than: float = 3600.0) -> None:
    """Every worker and beat writes a log named after its run: keep the newest `keep`, and never one
    younger than an hour (a running notebook may still read it), so the folder does not grow without end."""
    logs = sorted(log_dir.glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
    cutoff = time.time() - older_than
    for old in logs[keep:]:
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except FileNotFoundError:  # another kernel pruned it first
            pass


class CeleryProcess:
    """One `celery -A app_module <command>` process (with prefork, also its pool's child processes)."""

    command_name = "worker"

    def __init__(self, app_module: str, *, name: str | None = None, cwd: str | Path | None = None,
                 args: list[str] | None = None, env: dict | None = None):
        self.app_module = app_module
        self.cwd = Path(cwd or os.getcwd())
        if str(self.cwd) not in sys.path:
            sys.path.insert(0, str(self.cwd))
        self.app = importlib.import_module(app_module).app
        self.name = name or run_name(self.command_name)
        log_dir = self.cwd / ".celery-logs"
        log_dir.mkdir(exist_ok=True)
        prune_old_logs(log_dir)
        self.log_file = log_dir / f"{self.name}.log"
        self.command = [sys.executable, "-m", "celery", "-A", app_module, self.command_name, "--loglevel=INFO",
                        *(args or [])]
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None
        self.started_at: float | None = None
        self.pids_seen: set[int] = set()

    def start(self) -> "CeleryProcess":
        """Start the process (does not wait for it to be ready)."""
        with open(self.log_file, "wb") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.cwd, env=self.env,
                                            start_new_session=True, preexec_fn=_die_with_parent())
        self.started_at = time.monotonic()
        self.pids_seen.add(self.process.pid)
        with _live_lock:
            _live.add(self)
        return self

    def stop(self, warm: bool = True, timeout: float = 10.0) -> int | None:
        """Warm shutdown (SIGTERM: a worker finishes its running tasks), SIGKILL to the whole process group
        after `timeout`; warm=False: SIGKILL at once.  Returns the exit code; safe to call twice."""
        if self.process is None:
            return None
        self.pids()
        if self.process.poll() is None and warm:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group()
        self._wait_all_gone()
        self._forget()
        return self.process.returncode

    def kill(self) -> int:
        """SIGKILL the process and its pool children at once: a crash, an OOM kill, a pulled plug."""
        return self.stop(warm=False)

    def _kill_group(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group: the worker and its pool children
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def _wait_all_gone(self, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while any(_alive(pid) for pid in self.pids_seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.pids_seen:  # a child that left the group and outlived its parent: end it
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _forget(self) -> None:
        with _live_lock:
            _live.discard(self)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pids(self) -> list[int]:
        """The process's pid and its children's (remembered, so stop() can prove they are all gone)."""
        if not self.alive:
            return []
        found = [self.process.pid, *_children(self.process.pid)]
        self.pids_seen.update(found)
        return found

    def all_gone(self) -> bool:
        """True when no process this handle ever saw is alive (the worker and every pool child)."""
        return not any(_alive(pid) for pid in self.pids_seen)

    def log(self, lines: int = 30) -> str:
        """The last `lines` lines the process wrote (its log file, kept after it stops)."""
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def log_contains(self, text: str) -> bool:
        return self.log_file.exists() and text in self.log_file.read_text(errors="replace")

    def __enter__(self):
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive else (f"exited {self.process.returncode}" if self.process else "not started")
        return f"<celery {self.command_name} {self.name} {state}>"


class WorkerHandle(CeleryProcess):
    """A `celery worker`: ready when it answers a control ping addressed to it."""

    def __init__(self, app_module: str, *, concurrency: int = 2, pool: str = "threads",
                 queues: list[str] | None = None, name: str | None = None, cwd: str | Path | None = None,
                 extra_args: list[str] | None = None, env: dict | None = None):
        self.nodename = f"{name or run_name('worker')}@{socket.gethostname()}"
        self.pool, self.concurrency = pool, concurrency
        self.queues = list(queues) if queues else None
        args = [f"--pool={pool}", f"--concurrency={concurrency}", "-n", self.nodename,
                "--without-gossip", "--without-mingle", "-E",
                *(["-Q", ",".join(self.queues)] if self.queues else []), *(extra_args or [])]
        super().__init__(app_module, name=self.nodename.split("@")[0], cwd=cwd, args=args, env=env)
        self.ready_after: float | None = None

    def wait_ready(self, timeout: float = 30.0) -> "WorkerHandle":
        deadline = time.monotonic() + timeout
        last_error = None
        while True:
            if self.process.poll() is not None:
                self.stop(warm=False)
                raise StackError(f"the Celery worker {self.nodename} exited with code "
                                 f"{self.process.returncode}:\n{self.log()}")
            try:
                if self.app.control.ping(destination=[self.nodename], timeout=0.5):
                    break
            except Exception as exc:  # the broker itself may be down: the worker's log will say
                last_error = exc
                time.sleep(0.2)
            if time.monotonic() > deadline:
                self.stop(warm=False)
                raise StackError(f"the Celery worker {self.nodename} did not answer a ping within {timeout:.0f} s"
                                 f"{f' ({last_error})' if last_error else ''}:\n{self.log()}")
        self.ready_after = time.monotonic() - self.started_at
        self.pids()
        return self

    def kill_child(self, pid: int | None = None) -> int:
        """SIGKILL one prefork pool child (by default the first; pass the pid a task reported);
        the worker itself lives on and replaces the child."""
        children = _children(self.process.pid) if self.alive else []
        if self.pool != "prefork" or not children or (pid is not None and pid not in children):
            raise StackError(f"{self.nodename} has no pool child {pid or ''} to kill (pool={self.pool}, "
                             f"children {children})")
        victim = pid or children[0]
        self.pids_seen.add(victim)
        os.kill(victim, signal.SIGKILL)
        return victim

    def inspect(self, timeout: float = 1.0):
        """`app.control.inspect()` addressed to this worker only (other runs' workers share the broker)."""
        return self.app.control.inspect(destination=[self.nodename], timeout=timeout)

    def __enter__(self) -> "WorkerHandle":
        if self.process is None:
            self.start().wait_ready()
        return self

    def __repr__(self) -> str:
        state = "running" if self.alive else (f"exited {self.process.returncode}" if self.process else "not started")
        return f"<celery worker {self.nodename} pool={self.pool} concurrency={self.concurrency} {state}>"


class BeatHandle(CeleryProcess):
    """`celery beat`: the scheduler that sends periodic tasks; its schedule file is its own."""

    command_name = "beat"

    def __init__(self, app_module: str, *, name: str | None = None, cwd: str | Path | None = None,
                 env: dict | None = None):
        name = name or run_name("beat")
        cwd = Path(cwd or os.getcwd())
        schedule = cwd / ".celery-logs" / f"{name}-schedule"
        super().__init__(app_module, name=name, cwd=cwd, args=["-s", str(schedule), "--max-interval", "1"],
                         env=env)
        self.schedule_file = schedule

    def stop(self, warm: bool = True, timeout: float = 5.0) -> int | None:
        code = super().stop(warm, timeout)
        for leftover in self.schedule_file.parent.glob(self.schedule_file.name + "*"):
            leftover.unlink(missing_ok=True)
        return code


def start_beat(app_module: str, **options) -> BeatHandle:
    """Start `celery -A app_module beat` (it sends the app's beat_schedule); stop it with `.stop()`.
    There is no ping for beat: wait on what it sends."""
    return BeatHandle(app_module, **options).start()


def start_worker(app_module: str, *, ready_timeout: float = 30.0, **options) -> WorkerHandle:
    """Start `celery -A app_module worker` and return once it answers a ping.  Stop it with `.stop()`."""
    return WorkerHandle(app_module, **options).start().wait_ready(ready_timeout)


def start_workers(app_module: str, *option_sets: dict, ready_timeout: float = 40.0) -> list[WorkerHandle]:
    """Start several workers at once (their start-ups overlap) and wait until each answers a ping."""
    handles = [WorkerHandle(app_module, **options).start() for options in option_sets]
    try:
        for handle in handles:
            handle.wait_ready(ready_timeout)
    except BaseException:
        for handle in handles:
            handle.stop(warm=False)
        raise
    return handles


def stop_all() -> None:
    """Stop every worker this process started and has not stopped (cleanup cells, interpreter exit)."""
    with _live_lock:
        handles = list(_live)
    for handle in handles:
        handle.stop(warm=False)


atexit.register(stop_all)


@contextmanager
def celery_worker(app_module: str, *, concurrency: int = 2, pool: str = "threads", queues: list[str] | None = None,
                  name: str | None = None, ready_timeout: float = 30.0, cwd: str | Path | None = None,
                  extra_args: list[str] | None = None, **options):
    """Run Celery's own worker (`celery -A app_module worker`) for the duration of a with-block.

    Ready means the worker answers a control ping; leaving the block shuts it down
    (warm shutdown, then SIGKILL after 10 s), so no worker outlives the cell.
    """
    handle = start_worker(app_module, concurrency=concurrency, pool=pool, queues=queues, name=name, cwd=cwd,
                          extra_args=extra_args, ready_timeout=ready_timeout, **options)
    try:
        yield handle
    finally:
        handle.stop()
