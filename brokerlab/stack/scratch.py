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
import re
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
from .debroot import _die_with_parent
from .native import KAFKA_COURSE_SETTINGS, KafkaService, RabbitMQService, RedisService, kafka_cluster_id
from .paths import home
from .procs import pid_alive, pids_naming, port_in_use, read_pid, rss_bytes, stop_pid, wait_gone

__all__ = ["scratch_redis", "scratch_rabbitmq", "scratch_rabbitmq_cluster", "ScratchRedis", "ScratchRabbitMQ", "DockerScratchRedis",
           "DockerScratchRabbitMQ", "free_ports", "scratch_kafka_cluster", "ScratchKafkaCluster", "scratch_redis_sentinel",
           "RedisSentinelGroup", "scratch_cluster", "partition_leader", "ClusterProfile", "stop_cluster_leftovers", "stop_scratch_leftovers"]


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
        self.dir = scratch_root() / folder_name(label)

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
        # the bwrap launcher (and rabbitmq-server's shell script) end a moment after the server: until they
        # have, `pid` still names the launcher and an immediate restart() would refuse ("already running")
        launch = getattr(self.service, "launch", None)
        if launch is not None:
            try:
                launch.wait(timeout)
            except subprocess.TimeoutExpired:
                raise StackError(f"the launcher of scratch {self.service.name} still runs {timeout:.0f} s "
                                 f"after its server died") from None
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

    def __init__(self, config: dict[str, object] | None = None, persistent: bool | None = None, label: str = "redis",
                 port: int | None = None):
        super().__init__(label)
        self.config = {str(k).replace("_", "-"): v for k, v in (config or {}).items()}
        port = port or free_ports(1)[0]
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

    def __init__(self, config: dict[str, object] | None = None, shared: "ScratchRabbitMQ | None" = None,
                 label: str = "rabbitmq"):
        super().__init__(label)
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

        self.dir = scratch_root() / folder_name(label)
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
def scratch_rabbitmq_cluster(nodes: int = 3, config: dict[str, object] | None = None,
                             label: str = "rabbitmq") -> Iterator[list[ScratchRabbitMQ]]:
    """Start `nodes` private RabbitMQ nodes clustered together (native only); all stopped on exit.

    The nodes share one epmd and one Erlang cookie; each after the first joins the first
    (`rabbitmqctl stop_app; join_cluster; start_app`).  About 5-10 s per node.
    """
    if scratch_mode() == "docker":
        raise StackError("scratch_rabbitmq_cluster runs natively only (no compose cluster yet)")
    with ExitStack() as stack:
        first = ScratchRabbitMQ(config, label=label)
        stack.callback(first.close)  # closed last: it owns the shared epmd
        first.start()
        members = [first]
        for _ in range(nodes - 1):
            node = ScratchRabbitMQ(config, shared=first, label=label)
            stack.callback(node.close)
            node.start()
            for args in (["stop_app"], ["join_cluster", first.nodename], ["start_app"]):
                result = node.ctl("rabbitmqctl", *args, timeout=120)
                if result.returncode != 0:
                    raise StackError(f"{node.nodename}: rabbitmqctl {' '.join(args)} failed:\n"
                                     f"{result.stdout}{result.stderr}")
            members.append(node)
        yield members


def folder_name(label: str) -> str:
    """`redis-p1234-3fa2c0de`: the label, the pid of the process that started it (so one test process can
    ask for its own leftovers while others run scratch servers in parallel), and a random part."""
    return f"{label}-p{os.getpid()}-{uuid.uuid4().hex[:8]}"


# --- the cluster profile: replicated brokers for the durability lesson (07) -----------------------
#
# Separate from the everyday stack and started only by code that needs it.  Every member is a
# scratch server: random free ports, its own folder (named "cluster-..." so `stack down` can find
# leftovers), killed with the process that started it, stopped and deleted when the block ends.

CLUSTER_LABEL = "cluster"


class _ScratchKafkaService(KafkaService):
    """One combined controller+broker KRaft node of a scratch Kafka cluster (the pinned jars, host JDK)."""

    HEAP = ["-Xms128m", "-Xmx384m"]  # three of them on a laptop: the lesson's topics are tiny

    def __init__(self, ep: Endpoints, root: Path, node_id: int, voters: str, cluster_id: str):
        super().__init__(ep, root)
        self.dir = root
        self.pid_file = root / "kafka.pid"
        self.node_id, self.voters, self.cluster_id = node_id, voters, cluster_id
        self.die_with_launcher = True  # the JVM dies with the process (thread) that launched it

    def quorum_voters(self) -> str:
        return self.voters

    def course_settings(self) -> list[str]:
        return [
            *[line for line in KAFKA_COURSE_SETTINGS if "replication.factor" not in line and "min.isr" not in line],
            # internal topics replicated like the lesson's own, so a dead node does not stop groups
            "offsets.topic.replication.factor=3", "transaction.state.log.replication.factor=3",
            "transaction.state.log.min.isr=2", "share.coordinator.state.topic.replication.factor=3",
            "share.coordinator.state.topic.min.isr=2",
            # a killed node is fenced, and its partitions get new leaders, within ~2 s instead of 9 s
            "broker.heartbeat.interval.ms=500", "broker.session.timeout.ms=2000",
            "replica.lag.time.max.ms=5000",
        ]

    def format_storage(self) -> None:
        result = subprocess.run(
            [self.java, "-Xmx128m", f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
             "-cp", self.classpath, "kafka.tools.StorageTool", "format", "-t", self.cluster_id,
             "-c", str(self.dir / "server.properties")],
            capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise StackError(f"formatting scratch Kafka node {self.node_id} failed:\n{result.stdout}{result.stderr}")


class ScratchKafkaNode(_Scratch):
    def __init__(self, node_id: int, ports: tuple[int, int], voters: str, cluster_id: str, folder: Path):
        self.dir = folder
        self.node_id = node_id
        ep = _endpoints({"kafka": ports[0], "kafka_controller": ports[1]})
        self.service = _ScratchKafkaService(ep, folder, node_id, voters, cluster_id)

    @property
    def port(self) -> int:
        return self.ep.ports["kafka"]

    @property
    def address(self) -> str:
        return self.ep.kafka_bootstrap

    def launch(self) -> None:
        """Start the JVM without waiting (a KRaft node is ready only once a quorum of voters runs)."""
        if self.pid:
            raise StackError(f"scratch Kafka node {self.node_id} is already running (pid {self.pid})")
        self.service.check_ports_free()
        self.service.dir.mkdir(parents=True, exist_ok=True)
        self.service.ensure_installed()
        self.service.start()

    def start(self) -> float:
        started = time.monotonic()
        self.launch()
        self.service.wait_ready(started + 90)
        return time.monotonic() - started

    restart = start


class ScratchKafkaCluster:
    """Three (or `nodes`) combined controller+broker KRaft nodes on free ports: `cluster.bootstrap`,
    `cluster.nodes[i].pid` / `.kill()` / `.restart()`, `cluster.node(broker_id)`."""

    def __init__(self, nodes: int = 3, label: str = CLUSTER_LABEL):
        self.dir = scratch_root() / folder_name(f"{label}-kafka")
        ports = free_ports(2 * nodes)
        pairs = [(ports[2 * i], ports[2 * i + 1]) for i in range(nodes)]
        voters = ",".join(f"{i + 1}@{HOST}:{controller}" for i, (_, controller) in enumerate(pairs))
        cluster_id = kafka_cluster_id()
        self.nodes = [ScratchKafkaNode(i + 1, pair, voters, cluster_id, self.dir / f"node{i + 1}")
                      for i, pair in enumerate(pairs)]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.address for node in self.nodes)

    def node(self, broker_id: int) -> ScratchKafkaNode:
        return self.nodes[broker_id - 1]

    def live_ep(self) -> Endpoints:
        """Endpoints of a running node (brokerlab.clients' health check asks that one)."""
        for node in self.nodes:
            if node.pid and port_in_use(HOST, node.port):
                return node.ep
        raise StackError(f"no node of scratch Kafka cluster {self.dir.name} is running")

    def client_config(self) -> dict:
        return {"bootstrap.servers": self.bootstrap}

    def admin(self, **config):
        from ..clients import kafka_admin

        return kafka_admin(self.live_ep(), **self.client_config(), **config)

    def producer(self, **config):
        from ..clients import kafka_producer

        return kafka_producer(self.live_ep(), **self.client_config(), **config)

    def consumer(self, group_id: str, **config):
        from ..clients import kafka_consumer

        return kafka_consumer(group_id, self.live_ep(), **self.client_config(), **config)

    def launch(self) -> None:
        """Format every node's storage (in parallel: each is a JVM start), then start every JVM without
        waiting: none is ready before a quorum of controllers runs."""
        formats = []
        for node in self.nodes:
            service = node.service
            service.check_ports_free()
            service.dir.mkdir(parents=True, exist_ok=True)
            service.ensure_installed()
            (service.dir / "server.properties").write_text(service.server_properties())
            formats.append(subprocess.Popen(
                [service.java, "-Xmx128m", "-cp", service.classpath, "kafka.tools.StorageTool", "format",
                 "-t", service.cluster_id, "-c", str(service.dir / "server.properties")],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_die_with_parent))
        for node, process in zip(self.nodes, formats):
            try:
                output, _ = process.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise StackError(f"formatting scratch Kafka node {node.node_id} took over 120 s") from None
            if process.returncode != 0:
                raise StackError(f"formatting scratch Kafka node {node.node_id} failed:\n{output}")
        for node in self.nodes:
            node.launch()

    def wait_ready(self, seconds: float = 90) -> None:
        """Every node answers, and the cluster's metadata lists all of them as brokers."""
        from ..waiting import wait_for

        deadline = time.monotonic() + seconds
        for node in self.nodes:
            node.service.wait_ready(deadline)
        wait_for(lambda: len(_kafka_brokers(self.nodes[0].ep)) == len(self.nodes), max(1.0, deadline - time.monotonic()),
                 f"all {len(self.nodes)} nodes registered in scratch Kafka cluster {self.dir.name}")

    def start(self) -> float:
        started = time.monotonic()
        self.launch()
        self.wait_ready()
        self.start_seconds = time.monotonic() - started
        return self.start_seconds

    start_seconds = 0.0

    def restart_dead(self, seconds: float = 60) -> list[int]:
        """Restart every node that is not running (same ports, same data) and wait until all are registered."""
        dead = [node for node in self.nodes if not node.pid]
        for node in dead:
            node.launch()
        self.wait_ready(seconds)
        return [node.node_id for node in dead]

    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes if node.pid]

    def close(self) -> None:
        try:
            for node in self.nodes:
                pid = node.pid
                if pid:  # no clean shutdown: the data is deleted anyway, and a controlled one waits for quorum
                    stop_pid(pid, grace=0.5)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def partition_leader(admin, topic: str, partition: int = 0) -> int:
    """The broker id leading topic-partition as the cluster's metadata says now; -1 while there is none."""
    try:
        meta = admin.list_topics(topic, timeout=5).topics.get(topic)
    except Exception:  # no broker answered within the timeout: no leader known
        return -1
    part = meta.partitions.get(partition) if meta is not None and meta.error is None else None
    return part.leader if part is not None and part.error is None else -1


def _kafka_brokers(ep: Endpoints) -> list[int]:
    from ..clients import kafka_check

    try:
        return sorted(kafka_check(ep).brokers)
    except Exception:
        return []


@contextmanager
def scratch_kafka_cluster(nodes: int = 3) -> Iterator[ScratchKafkaCluster]:
    """Start a private Kafka cluster of `nodes` KRaft nodes (native only); always stopped and deleted on exit."""
    if scratch_mode() == "docker":
        raise StackError("scratch_kafka_cluster runs natively only (the compose `cluster` profile is separate)")
    cluster = ScratchKafkaCluster(nodes)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


class _SentinelService(RedisService):
    """redis-server in Sentinel mode (`redis-server sentinel.conf --sentinel`, what the redis-sentinel
    package's binary does: it is the same executable)."""

    def __init__(self, ep: Endpoints, root: Path, primary_port: int, master_name: str):
        super().__init__(ep, root)
        self.dir = root
        self.pid_file = root / "sentinel.pid"
        self.primary_port, self.master_name = primary_port, master_name
        self.die_with_launcher = True

    def argv(self) -> list[str]:
        conf = self.dir / "sentinel.conf"
        if not conf.exists():  # Sentinel rewrites its own file (it records the failovers it made)
            conf.write_text("\n".join([
                f"bind {self.ep.host}", f"port {self.ep.ports['redis']}", f"dir {self.dir}",
                f"pidfile {self.pid_file}", f"logfile {self.log_file}", "daemonize no",
                f"sentinel monitor {self.master_name} {self.ep.host} {self.primary_port} 1",
                # noticed down after 1 s and failed over at once: the lesson waits seconds, not 30 s
                f"sentinel down-after-milliseconds {self.master_name} 1000",
                f"sentinel failover-timeout {self.master_name} 5000",
                f"sentinel parallel-syncs {self.master_name} 1", "",
            ]))
        return ["redis-server", str(conf), "--sentinel"]


class RedisSentinelGroup:
    """A Redis primary, a replica of it, and one Sentinel (quorum 1) watching them.

    `group.primary` / `group.replica` are ScratchRedis; `group.sentinel` answers SENTINEL commands;
    `group.current_primary()` asks Sentinel which address is the primary now."""

    MASTER_NAME = "brokerlab"

    def __init__(self, label: str = CLUSTER_LABEL):
        # three distinct ports in one pick: none of them listens yet, so separate picks could coincide
        primary_port, replica_port, port = free_ports(3)
        self.primary = ScratchRedis(label=f"{label}-redis-primary", port=primary_port)
        self.replica = ScratchRedis(label=f"{label}-redis-replica", port=replica_port)
        self.sentinel = ScratchRedis(label=f"{label}-redis-sentinel", port=port)
        self.sentinel.service = _SentinelService(_endpoints({"redis": port}), self.sentinel.dir,
                                                 self.primary.port, self.MASTER_NAME)
        self.members = [self.primary, self.replica, self.sentinel]

    def start(self) -> float:
        from ..waiting import wait_for

        started = time.monotonic()
        self.primary.start()
        self.replica.start()
        self.replica.client().replicaof(HOST, self.primary.port)
        wait_for(lambda: self.replica.client().info("replication").get("master_link_status") == "up", 15,
                 "the replica's link to the primary")
        self.sentinel.start()
        wait_for(lambda: int(self.sentinel_client().sentinel_master(self.MASTER_NAME).get("num-slaves", 0)) >= 1, 15,
                 "Sentinel to discover the replica")
        return time.monotonic() - started

    def sentinel_client(self):
        return self.sentinel.client()

    def current_primary(self) -> tuple[str, int]:
        host, port = self.sentinel_client().sentinel_get_master_addr_by_name(self.MASTER_NAME)
        return host, int(port)

    def pids(self) -> list[int]:
        return [m.pid for m in self.members if m.pid]

    def close(self) -> None:
        for member in reversed(self.members):  # Sentinel first: it must not fail over while we stop the rest
            member.close()


@contextmanager
def scratch_redis_sentinel() -> Iterator[RedisSentinelGroup]:
    """Start a private primary + replica + Sentinel (native only); always stopped and deleted on exit."""
    if scratch_mode() == "docker":
        raise StackError("scratch_redis_sentinel runs natively only (the compose `cluster` profile is separate)")
    group = RedisSentinelGroup()
    try:
        group.start()
        yield group
    finally:
        group.close()


class ClusterProfile:
    """The whole cluster profile: `.kafka` (ScratchKafkaCluster), `.rabbitmq` (list of 3 clustered
    ScratchRabbitMQ), `.redis` (RedisSentinelGroup); None for a part not asked for."""

    def __init__(self):
        self.kafka: ScratchKafkaCluster | None = None
        self.rabbitmq: list[ScratchRabbitMQ] | None = None
        self.redis: RedisSentinelGroup | None = None
        self.start_seconds: dict[str, float] = {}

    def pids(self) -> list[int]:
        pids = []
        if self.kafka:
            pids += self.kafka.pids()
        for node in self.rabbitmq or []:
            pids += [node.pid] if node.pid else []
            pids += node.service.epmd_pids()
        if self.redis:
            pids += self.redis.pids()
        return sorted(set(pids))

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory per broker (sum over its processes; RabbitMQ includes the shared epmd once)."""
        out = {}
        if self.kafka:
            out["kafka"] = sum(rss_bytes(p) for p in self.kafka.pids())
        if self.rabbitmq:
            beams = [n.pid for n in self.rabbitmq if n.pid] + self.rabbitmq[0].service.epmd_pids()
            out["rabbitmq"] = sum(rss_bytes(p) for p in set(beams))
        if self.redis:
            out["redis"] = sum(rss_bytes(p) for p in self.redis.pids())
        return out


@contextmanager
def scratch_cluster(kafka: bool = True, rabbitmq: bool = True, redis: bool = True) -> Iterator[ClusterProfile]:
    """Start the cluster profile (native only): 3 Kafka KRaft nodes, 3 clustered RabbitMQ nodes, and a Redis
    primary + replica + Sentinel.  The Kafka JVMs boot while RabbitMQ's nodes start and join; everything is
    stopped and deleted on exit (also after an exception or a kill inside the block)."""
    if scratch_mode() == "docker":
        raise StackError("the cluster profile runs natively only here; with Docker use "
                         "`docker compose --profile cluster up` (docker-compose.yml)")
    profile = ClusterProfile()
    with ExitStack() as stack:
        started = time.monotonic()
        if kafka:
            profile.kafka = ScratchKafkaCluster()
            stack.callback(profile.kafka.close)
            profile.kafka.launch()
        if rabbitmq:
            t = time.monotonic()
            profile.rabbitmq = stack.enter_context(scratch_rabbitmq_cluster(3, label=f"{CLUSTER_LABEL}-rabbitmq"))
            profile.start_seconds["rabbitmq"] = time.monotonic() - t
        if redis:
            t = time.monotonic()
            profile.redis = RedisSentinelGroup()
            stack.callback(profile.redis.close)
            profile.redis.start()
            profile.start_seconds["redis"] = time.monotonic() - t
        if kafka:
            profile.kafka.wait_ready()
            profile.start_seconds["kafka"] = time.monotonic() - started
        profile.start_seconds["total"] = time.monotonic() - started
        yield profile


def stop_scratch_leftovers() -> list[int]:
    """Stop every process of a scratch folder (a single scratch server or a cluster profile) whose starting
    process is gone (a notebook whose kernel was killed or stopped before its cleanup cell) or is this one:
    `stack down` calls it.  A server a running notebook or test still uses is left to it."""
    stopped = []
    for folder in sorted(p for p in scratch_root().glob("*") if p.is_dir()):
        owner = folder_owner(folder.name)
        if owner and owner != os.getpid() and pid_alive(owner):
            continue  # a running notebook's (or test's) cluster: it stops its own
        pids = {p for f in folder.rglob("*.pid") if (p := read_pid(f)) and pid_alive(p)}
        pids |= set(pids_naming(f"{folder}/"))
        for pid in sorted(pids):
            if stop_pid(pid, grace=5):
                stopped.append(pid)
        shutil.rmtree(folder, ignore_errors=True)
    return stopped


stop_cluster_leftovers = stop_scratch_leftovers  # its first name, when only clusters were swept


def folder_owner(name: str) -> int | None:
    """The pid of the process that started the scratch server of folder `name` (see folder_name)."""
    match = re.search(r"-p(\d+)-[0-9a-f]{8}$", name)
    return int(match.group(1)) if match else None


def leftovers(owner: int | None = None) -> list[str]:
    """Scratch folders whose server still runs: all of them, or those started by process `owner`
    (a test asserts its own process left none: `leftovers(owner=os.getpid())`)."""
    found = []
    for folder in scratch_root().glob("*" if owner is None else f"*-p{owner}-*"):
        for pid_file in folder.rglob("*.pid"):
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
            if pid_alive(pid):
                found.append(f"{folder.name}: pid {pid}")
    return found
