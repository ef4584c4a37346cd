"""Private, throw-away brokers for fault-injection demos: `with scratch_redis(...) as r:`.

Notebooks must never kill, freeze or reconfigure the shared stack (other notebooks
run against it in parallel).  A demo that needs to SIGKILL a Redis, fill RabbitMQ's
memory or restart a server starts its own process here instead: the same binaries
as the stack (the Debian 13 root), on free 127.0.0.1 ports, with its own data folder
under .brokerlab/scratch/.  Leaving the `with` block always stops the process (also
after an exception or a kill inside the block) and deletes the data folder.

    with scratch_redis(appendonly="yes", appendfsync="always") as server:
        client = server.client()
        client.set("k", "v")
        server.kill()          # SIGKILL: what a crash looks like
        server.restart()       # same port, same data folder
        assert server.client().get("k") == "v"

In docker mode the same calls start a container from docker-compose.yml's image instead
(DockerScratchRedis / DockerScratchRabbitMQ, same API).

A cluster is several nodes built the same way (`ScratchRabbitMQ(..., shared=...)`
takes the epmd port and cookie home of the first node): `scratch_rabbitmq_cluster(3)`.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from ..endpoints import BASE_PORTS, HOST, Endpoints
from ..errors import StackError
from .native import RabbitMQService, RedisService
from .paths import home
from .procs import pid_alive, port_in_use, wait_gone

__all__ = ["scratch_redis", "scratch_rabbitmq", "scratch_rabbitmq_cluster", "ScratchRedis", "ScratchRabbitMQ", "DockerScratchRedis",
           "DockerScratchRabbitMQ", "free_ports"]


def scratch_root() -> Path:
    return home() / "scratch"


# Scratch ports come from below the kernel's ephemeral range (32768+), where no outgoing connection
# can take one between choosing it and the server binding it, and outside every course port set
# (base ports + offsets up to ~3000).
SCRATCH_PORT_RANGES = (range(20000, 25000), range(29000, 32000))


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1, picked at random from SCRATCH_PORT_RANGES."""
    import random

    candidates = [port for r in SCRATCH_PORT_RANGES for port in r]
    chosen: list[int] = []
    for port in random.sample(candidates, 200):
        if len(chosen) == count:
            break
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
        if not port_in_use(HOST, port):
            chosen.append(port)
    if len(chosen) < count:
        raise StackError(f"no {count} free ports found on {HOST} for a scratch server")
    return chosen


def _endpoints(ports: dict[str, int]) -> Endpoints:
    # The ports this scratch server does not use are 0, so nothing else is mistaken for it.
    all_ports = {name: ports.get(name, 0) for name in BASE_PORTS}
    return Endpoints(host=HOST, offset=ports.get("redis") or ports.get("amqp"), ports=all_ports)


class _Scratch:
    """What every scratch server shares: a service object, its folder, and kill/restart/stop."""

    service: RedisService | RabbitMQService

    def __init__(self, label: str):
        self.dir = scratch_root() / f"{label}-{uuid.uuid4().hex[:8]}"

    @property
    def pid(self) -> int | None:
        """The server's process id (a host pid: `os.kill(server.pid, signal.SIGKILL)` works)."""
        pids = self.service.pids()
        return pids[0] if pids else None

    @property
    def ep(self) -> Endpoints:
        return self.service.ep

    def start(self) -> float:
        """Start (or restart) on the same ports and data folder; returns the seconds it took."""
        if self.pid:
            raise StackError(f"scratch {self.service.name} is already running (pid {self.pid})")
        self.service.check_ports_free()
        self.service.ensure_installed()
        return self.service.start_and_wait()

    restart = start

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> int:
        """Send `sig` (default SIGKILL: no shutdown, no final save) and wait until the process is gone."""
        pid = self.pid
        if not pid:
            raise StackError(f"scratch {self.service.name} is not running")
        os.kill(pid, sig)
        if not wait_gone(pid, timeout):
            raise StackError(f"scratch {self.service.name} (pid {pid}) still runs {timeout:.0f} s after signal {sig}")
        self._wait_ports_closed(timeout)
        return pid

    def _wait_ports_closed(self, timeout: float) -> None:
        """The kernel closes a killed server's listening socket a few ms after the process is gone."""
        deadline = time.monotonic() + timeout
        port = self.ep.ports[self.service.ports[0]]
        while port_in_use(self.ep.host, port):
            if time.monotonic() > deadline:
                raise StackError(f"port {port} still answers {timeout:.0f} s after scratch {self.service.name} died")
            time.sleep(0.01)

    def stop(self) -> None:
        """A clean shutdown (the server saves what its configuration says it saves)."""
        self.service.stop()
        self._wait_ports_closed(10.0)

    def close(self) -> None:
        """Stop whatever runs and delete the data folder."""
        try:
            self.service.stop()
            self._wait_ports_closed(10.0)
        finally:
            launch = getattr(self.service, "launch", None)
            if launch is not None and launch.poll() is None:  # the bwrap launcher, if still there
                launch.kill()
                launch.wait(10)
            shutil.rmtree(self.dir, ignore_errors=True)


class ScratchRedis(_Scratch):
    """A private redis-server.  `config` holds redis.conf settings: {"maxmemory": "2mb", ...}."""

    def __init__(self, config: dict[str, object] | None = None, persistent: bool | None = None):
        super().__init__("redis")
        self.config = {str(k).replace("_", "-"): v for k, v in (config or {}).items()}
        (port,) = free_ports(1)
        self.service = RedisService(_endpoints({"redis": port}), self.dir)
        self.service.die_with_launcher = True  # a killed notebook kernel takes its scratch server along
        self.service.dir = self.dir
        self.service.pid_file = self.dir / "redis.pid"
        # persistence is off unless asked for (explicitly, or by an appendonly/save setting)
        wants_disk = any(k in self.config for k in ("appendonly", "save"))
        self.service.persistent = wants_disk if persistent is None else persistent
        self.service.extra_args = [a for k, v in self.config.items() for a in (f"--{k}", str(v))]

    @property
    def port(self) -> int:
        return self.ep.ports["redis"]

    @property
    def url(self) -> str:
        return self.ep.redis_url

    @property
    def data_dir(self) -> Path:
        return self.dir

    def client(self, **options):
        """A redis-py client with the course's timeouts; errors name this scratch server's address."""
        from ..clients import redis_client

        return redis_client(ep=self.ep, **options)


class ScratchRabbitMQ(_Scratch):
    """A private RabbitMQ node.  `config` holds rabbitmq.conf lines: {"vm_memory_high_watermark.absolute": "60MiB"}.

    `shared` (another ScratchRabbitMQ) makes this node use the same epmd and Erlang cookie: the
    groundwork for a scratch cluster (join it with `node.ctl("rabbitmqctl", "join_cluster", ...)`).
    """

    def __init__(self, config: dict[str, object] | None = None, shared: "ScratchRabbitMQ | None" = None):
        super().__init__("rabbitmq")
        self.config = dict(config or {})
        amqp, management, dist, epmd = free_ports(4)
        if shared is not None:
            epmd = shared.ep.ports["epmd"]
        ep = _endpoints({"amqp": amqp, "rabbitmq_management": management, "erlang_dist": dist, "epmd": epmd})
        self.service = RabbitMQService(ep, self.dir)
        self.service.die_with_launcher = True
        self.service.dir = self.dir
        self.service.pid_file = self.dir / "rabbitmq.pid"
        self.service.node_name = f"scratch{amqp}@localhost"
        if shared is not None:
            self.service.home_dir = shared.service.home_dir  # same cookie
        self.service.extra_config = "".join(f"{k} = {v}\n" for k, v in self.config.items())

    @property
    def nodename(self) -> str:
        return self.service.nodename

    @property
    def amqp_url(self) -> str:
        return self.ep.amqp_url

    @property
    def api(self) -> str:
        return self.ep.rabbitmq_api

    def connection(self, **options):
        """A pika BlockingConnection with the course's timeouts."""
        from ..clients import rabbit_connection

        return rabbit_connection(self.ep, **options)

    def api_get(self, path: str):
        from ..clients import rabbit_api

        return rabbit_api(path, ep=self.ep)

    def ctl(self, tool: str, *args: str, timeout: float = 60):
        """Run rabbitmqctl / rabbitmq-diagnostics / rabbitmq-plugins against this node."""
        return self.service.ctl(tool, *args, timeout=timeout)


class _DockerScratch:
    """The same API in docker mode: a container from docker-compose.yml's image, on a free 127.0.0.1 port.

    `pid` is the container's main process as Docker reports it (a host pid on Linux; inside Docker
    Desktop's VM on macOS/Windows, so use kill() there).  restart() starts the same container again:
    its data (Redis's /data, RabbitMQ's mnesia) is still there.
    """

    broker = ""
    port_names: tuple[str, ...] = ()
    START_DEADLINE = 90.0

    def __init__(self, label: str):
        from .versions import compose_images

        self.dir = scratch_root() / f"{label}-{uuid.uuid4().hex[:8]}"
        self.name = f"brokerlab-scratch-{self.dir.name}"
        self.image = compose_images()[self.broker]
        self._created = False

    @property
    def ep(self) -> Endpoints:
        return self._ep

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StackError(f"`docker {' '.join(args[:2])}` did not answer within {timeout:.0f} s") from None

    def run_argv(self) -> list[str]:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        result = self.docker("inspect", "-f", "{{.State.Pid}}", self.name, timeout=30)
        pid = int(result.stdout.strip() or 0) if result.returncode == 0 else 0
        return pid or None

    def start(self) -> float:
        from ..errors import BrokerUnavailable
        from ..health import PROBES

        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        result = self.docker("start", self.name) if self._created else self.docker(*self.run_argv()[1:])
        if result.returncode != 0:
            raise StackError(f"could not start scratch {self.broker} container: {result.stderr.strip()[-800:]}")
        self._created = True
        last = "no answer yet"
        while time.monotonic() - started < self.START_DEADLINE:
            try:
                PROBES[self.broker](self.ep)
                return time.monotonic() - started
            except BrokerUnavailable as exc:
                last = exc.reason
            time.sleep(0.25)
        raise StackError(f"scratch {self.broker} container {self.name} not healthy within "
                         f"{self.START_DEADLINE:.0f} s ({last}); `docker logs {self.name}` says why")

    restart = start

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> int | None:
        pid = self.pid
        result = self.docker("kill", f"--signal={signal.Signals(sig).name}", self.name, timeout=30)
        if result.returncode != 0:
            raise StackError(f"scratch {self.broker} is not running: {result.stderr.strip()}")
        deadline = time.monotonic() + timeout
        while self.pid:
            if time.monotonic() > deadline:
                raise StackError(f"scratch {self.broker} still runs {timeout:.0f} s after signal {sig}")
            time.sleep(0.1)
        return pid

    def stop(self) -> None:
        self.docker("stop", "--time", "20", self.name, timeout=60)

    def close(self) -> None:
        try:
            self.docker("rm", "--force", "--volumes", self.name, timeout=60)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class DockerScratchRedis(_DockerScratch):
    broker = "redis"

    def __init__(self, config: dict[str, object] | None = None, persistent: bool | None = None):
        super().__init__("redis")
        self.config = {str(k).replace("_", "-"): v for k, v in (config or {}).items()}
        (port,) = free_ports(1)
        self._ep = _endpoints({"redis": port})
        wants_disk = any(k in self.config for k in ("appendonly", "save"))
        self.persistent = wants_disk if persistent is None else persistent

    def run_argv(self) -> list[str]:
        persistence = [] if self.persistent else ["--save", "", "--appendonly", "no"]
        settings = [a for k, v in self.config.items() for a in (f"--{k}", str(v))]
        return ["docker", "run", "--detach", "--name", self.name, "--label", "brokerlab.scratch=1",
                "--publish", f"127.0.0.1:{self.port}:6379", self.image, "redis-server", *persistence, *settings]

    port = ScratchRedis.port
    url = ScratchRedis.url
    client = ScratchRedis.client
    data_dir = None  # inside the container (/data)


class DockerScratchRabbitMQ(_DockerScratch):
    broker = "rabbitmq"

    def __init__(self, config: dict[str, object] | None = None):
        super().__init__("rabbitmq")
        self.config = dict(config or {})
        amqp, management = free_ports(2)
        self._ep = _endpoints({"amqp": amqp, "rabbitmq_management": management})
        self.conf_file = self.dir / "90-scratch.conf"

    def run_argv(self) -> list[str]:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf_file.write_text("collect_statistics_interval = 1000\n"
                                  + "".join(f"{k} = {v}\n" for k, v in self.config.items()))
        return ["docker", "run", "--detach", "--name", self.name, "--label", "brokerlab.scratch=1",
                "--hostname", "scratch", "--publish", f"127.0.0.1:{self.ep.ports['amqp']}:5672",
                "--publish", f"127.0.0.1:{self.ep.ports['rabbitmq_management']}:15672",
                "--volume", f"{self.conf_file}:/etc/rabbitmq/conf.d/90-scratch.conf:ro", self.image]

    nodename = "rabbit@scratch"
    amqp_url = ScratchRabbitMQ.amqp_url
    api = ScratchRabbitMQ.api
    connection = ScratchRabbitMQ.connection
    api_get = ScratchRabbitMQ.api_get

    def ctl(self, tool: str, *args: str, timeout: float = 60):
        return self.docker("exec", self.name, tool, *args, timeout=timeout)


def scratch_mode() -> str:
    """'docker' when the course stack runs in docker compose (or BROKERLAB_STACK=docker), else 'native'."""
    from . import choose_mode
    from ..endpoints import current

    return choose_mode(current())[0]


@contextmanager
def scratch_redis(config: dict[str, object] | None = None, *, persistent: bool | None = None,
                  **redis_config) -> Iterator[ScratchRedis]:
    """Start a private Redis (settings as keyword arguments, `_` for `-`); always stopped and deleted on exit."""
    kind = DockerScratchRedis if scratch_mode() == "docker" else ScratchRedis
    server = kind({**(config or {}), **redis_config}, persistent=persistent)
    try:
        server.start()
        yield server
    finally:
        server.close()


@contextmanager
def scratch_rabbitmq(config: dict[str, object] | None = None) -> Iterator[ScratchRabbitMQ]:
    """Start a private RabbitMQ node (about 5-10 s); always stopped (epmd included) and deleted on exit."""
    with ExitStack() as stack:
        node = (DockerScratchRabbitMQ if scratch_mode() == "docker" else ScratchRabbitMQ)(config)
        stack.callback(node.close)
        node.start()
        yield node


@contextmanager
def scratch_rabbitmq_cluster(nodes: int = 3, config: dict[str, object] | None = None) -> Iterator[list[ScratchRabbitMQ]]:
    """Start `nodes` private RabbitMQ nodes clustered together (native only); all stopped on exit.

    The nodes share one epmd and one Erlang cookie; each after the first joins the first
    (`rabbitmqctl stop_app; join_cluster; start_app`).  About 5-10 s per node.
    """
    if scratch_mode() == "docker":
        raise StackError("scratch_rabbitmq_cluster runs natively only (no compose cluster yet)")
    with ExitStack() as stack:
        first = ScratchRabbitMQ(config)
        stack.callback(first.close)  # closed last: it owns the shared epmd
        first.start()
        members = [first]
        for _ in range(nodes - 1):
            node = ScratchRabbitMQ(config, shared=first)
            stack.callback(node.close)
            node.start()
            for args in (["stop_app"], ["join_cluster", first.nodename], ["start_app"]):
                result = node.ctl("rabbitmqctl", *args, timeout=120)
                if result.returncode != 0:
                    raise StackError(f"{node.nodename}: rabbitmqctl {' '.join(args)} failed:\n"
                                     f"{result.stdout}{result.stderr}")
            members.append(node)
        yield members


def leftovers() -> list[str]:
    """Scratch folders whose server still runs (a test asserts there are none)."""
    found = []
    for folder in scratch_root().glob("*"):
        for pid_file in folder.glob("*.pid"):
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
            if pid_alive(pid):
                found.append(f"{folder.name}: pid {pid}")
    return found
