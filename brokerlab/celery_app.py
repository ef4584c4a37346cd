"""A Celery app factory with timeouts, and a real `celery worker` run as a bounded subprocess.

Celery's defaults suit production (retry the broker forever, 120 s socket
timeouts, 20 result-backend retries); in a course they turn a stopped broker
into a hang.  These settings make every call fail within seconds instead.
"""
from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from . import timeouts
from .endpoints import Endpoints, current
from .errors import StackError
from .runs import run_name

BROKER_DB, RESULT_DB = 1, 2  # Celery's keys stay out of the lessons' database 0


def make_app(main: str, broker: str = "redis", results: bool = True, ep: Endpoints | None = None, **config):
    """Celery(main) on Redis (broker='redis') or RabbitMQ (broker='amqp'), results in Redis."""
    from celery import Celery

    ep = ep or current()
    redis_base = f"redis://{ep.host}:{ep.ports['redis']}"
    broker_url = {"redis": f"{redis_base}/{BROKER_DB}", "amqp": ep.amqp_url}[broker]
    app = Celery(main, broker=broker_url, backend=f"{redis_base}/{RESULT_DB}" if results else None)
    app.conf.update(
        # the worker exits instead of retrying a dead broker forever
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=3,
        broker_connection_timeout=timeouts.REPLY,
        broker_transport_options={
            "socket_timeout": timeouts.REPLY, "socket_connect_timeout": timeouts.CONNECT,
            "max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5,
        },
        # delay() tries once more, then raises
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5},
        # the Redis result backend: short socket timeouts, no 20-fold retry
        redis_socket_timeout=timeouts.REPLY,
        redis_socket_connect_timeout=timeouts.CONNECT,
        redis_retry_on_timeout=False,
        result_backend_transport_options={"retry_policy": {"timeout": timeouts.REPLY}},
        result_expires=3600,
        # what the lessons observe: STARTED states and task events (Celery's own monitoring feed)
        task_track_started=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        worker_hijack_root_logger=False,
    )
    app.conf.update(config)
    return app


class WorkerHandle:
    def __init__(self, process: subprocess.Popen, nodename: str, log_file: Path):
        self.process = process
        self.nodename = nodename
        self.log_file = log_file

    def log(self, lines: int = 30) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-task, as in a crash or an OOM kill."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextmanager
def celery_worker(app_module: str, *, concurrency: int = 2, pool: str = "threads", queues: list[str] | None = None,
                  name: str | None = None, ready_timeout: float = 30.0, cwd: str | Path | None = None,
                  extra_args: list[str] | None = None):
    """Run Celery's own worker (`celery -A app_module worker`) for the duration of a with-block.

    Ready means the worker answers a control ping; leaving the block shuts it down
    (warm shutdown, then SIGKILL after 10 s), so no worker outlives the cell.
    """
    cwd = Path(cwd or os.getcwd())
    if str(cwd) not in sys.path:
        sys.path.insert(0, str(cwd))
    app = importlib.import_module(app_module).app
    nodename = f"{name or run_name('worker')}@{socket.gethostname()}"
    log_dir = cwd / ".celery-logs"
    log_dir.mkdir(exist_ok=True)
    log_file = log_dir / f"{nodename.split('@')[0]}.log"
    command = [sys.executable, "-m", "celery", "-A", app_module, "worker", "--loglevel=INFO",
               f"--pool={pool}", f"--concurrency={concurrency}", "-n", nodename,
               "--without-gossip", "--without-mingle", *(["-Q", ",".join(queues)] if queues else []),
               *(extra_args or [])]
    with open(log_file, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=cwd, start_new_session=True)
    handle = WorkerHandle(process, nodename, log_file)
    try:
        deadline = time.monotonic() + ready_timeout
        last_error = None
        while True:
            if process.poll() is not None:
                raise StackError(f"the Celery worker exited with code {process.returncode}:\n{handle.log()}")
            try:
                if app.control.ping(destination=[nodename], timeout=0.5):
                    break
            except Exception as exc:  # the broker itself may be down: the worker's log will say
                last_error = exc
            if time.monotonic() > deadline:
                raise StackError(f"the Celery worker did not answer a ping within {ready_timeout:.0f} s"
                                 f"{f' ({last_error})' if last_error else ''}:\n{handle.log()}")
        yield handle
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # warm shutdown: finish running tasks
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
