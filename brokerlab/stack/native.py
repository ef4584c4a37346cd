"""The native launcher: Redis, RabbitMQ and Kafka as plain processes on 127.0.0.1.

For machines without a Docker engine (CI, a Debian laptop).  Redis and RabbitMQ
run from the private Debian 13 root of debroot.py (Redis 8.0, RabbitMQ 4.0, the
versions docker-compose.yml pins); Kafka runs its pinned jars on the host's JDK.
Each service keeps its data, log and pid file under the stack folder of its port
set, is "up" only when its own health check answers, and is stopped without
leaving a process behind (epmd included).
"""
from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from ..endpoints import BROKER_NAMES, Endpoints
from ..errors import BrokerUnavailable, StackError
from . import debroot, kafka_dist
from .procs import pid_alive, pids_naming, port_in_use, port_owner, read_pid, rss_bytes, spawn_detached, stop_pid, tail

START_DEADLINE = {"redis": 15.0, "rabbitmq": 90.0, "kafka": 90.0}


class NativeService:
    name = ""
    ports: tuple[str, ...] = ()
    die_with_launcher = False  # scratch servers: SIGKILLed when the process that started them dies

    def __init__(self, ep: Endpoints, root: Path):
        self.ep = ep
        self.dir = root / self.name
        self.pid_file = self.dir / f"{self.name}.pid"

    # --- health -----------------------------------------------------------------------
    def probe(self) -> str:
        from ..health import PROBES

        return PROBES[self.name](self.ep)

    def healthy(self) -> bool:
        if not port_in_use(self.ep.host, self.ep.ports[self.ports[0]]):
            return False  # nothing listens: no need to wait for a client's timeout
        try:
            self.probe()
            return True
        except BrokerUnavailable:
            return False

    def pids(self) -> list[int]:
        pid = read_pid(self.pid_file)
        return [pid] if pid_alive(pid) else []

    def rss(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids())

    # --- lifecycle ----------------------------------------------------------------------
    def needs_start(self) -> bool:
        """False when already healthy.  Clears what a killed or frozen earlier run left behind."""
        if self.healthy():
            stale = self.stale_version()
            if not stale:
                return False
            print(f"  {BROKER_NAMES[self.name]} {stale} is running, the course pins "
                  f"{self.pinned_version()}: restarting it", flush=True)
            self.stop()
        elif self.pids():  # ours, but not answering: left over from a killed run, or frozen
            self.stop()
        self.check_ports_free()
        return True

    def pinned_version(self) -> str:
        from .versions import native_pins

        return native_pins()[self.name]

    def stale_version(self) -> str | None:
        """The running version when this stack's own server runs another version than the pins (e.g. a stack
        started before the pins changed); None when it matches, or is not ours, or runs from the host on purpose."""
        if not self.pids() or (self.name != "kafka" and debroot.source() == "host"):
            return None
        from .versions import running_version

        try:
            running = running_version(self.name, self.ep)
        except Exception:  # it stopped answering meanwhile: the normal path handles it
            return None
        return running if running not in ("unknown", self.pinned_version()) else None

    def start_and_wait(self) -> float:
        """Start the server and wait until its health check answers; returns the seconds it took."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.installed:
            self.ensure_installed()
        started = time.monotonic()
        self.start()
        self.wait_ready(started + START_DEADLINE[self.name])
        return time.monotonic() - started

    def wait_ready(self, deadline: float) -> None:
        last = "no answer yet"
        gone_since = None
        while time.monotonic() < deadline:
            try:
                self.probe()
                return
            except BrokerUnavailable as exc:
                last = exc.reason
            if self.pids() or self.starting():
                gone_since = None
            elif gone_since is None:
                gone_since = time.monotonic()  # pid files are written a moment after the fork
            elif time.monotonic() - gone_since > 1.0:
                raise StackError(f"{BROKER_NAMES[self.name]} exited while starting. Last lines of "
                                 f"{self.log_file}:\n{tail(self.log_file)}")
            time.sleep(0.25)
        raise StackError(f"{BROKER_NAMES[self.name]} did not become healthy within "
                         f"{START_DEADLINE[self.name]:.0f} s ({last}). Last lines of {self.log_file}:\n"
                         f"{tail(self.log_file)}")

    def starting(self) -> bool:
        """True while a start script is still launching the server (before its pid file exists)."""
        return False

    def check_ports_free(self) -> None:
        for port_name in self.ports:
            port = self.ep.ports[port_name]
            if port_in_use(self.ep.host, port):
                owner = port_owner(port)
                who = f"pid {owner[0]}: {owner[1][:120]}" if owner else "another program"
                raise StackError(
                    f"Port {port} ({port_name}) on {self.ep.host} is taken by {who}, and it is not a healthy "
                    f"{BROKER_NAMES[self.name]} of this stack.\n"
                    f"  Stop that program, or run this stack on other ports, e.g.\n"
                    f"  BROKERLAB_PORT_OFFSET=200 python -m brokerlab stack up   (then start JupyterLab with the same variable)")

    @property
    def log_file(self) -> Path:
        return self.dir / f"{self.name}.log"

    def missing_packages(self) -> list[str]:
        """Debian packages to install before this service can start."""
        return []

    def ensure_installed(self) -> None:
        """Anything else to fetch or check before starting (runs after the packages are installed)."""
        self.installed = True

    installed = False

    @property
    def rt(self) -> "debroot.Runtime":
        """Where the binaries come from; stop, status and tools never build a root for it."""
        return getattr(self, "runtime", None) or debroot.runtime(build=False)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        # The pid file's server, then anything else started for this service's folder: a launcher
        # (bwrap, the start script) or a server whose `stack up` was killed before its pid file existed.
        for pid in self.pids() + self.strays():
            if not stop_pid(pid):
                raise StackError(f"could not stop {BROKER_NAMES[self.name]} (pid {pid})")
        self.pid_file.unlink(missing_ok=True)

    def strays(self) -> list[int]:
        return [pid for pid in pids_naming(f"{self.dir}/") if pid not in self.pids()]


def apt_install(*packages: str) -> None:
    """Install Debian packages, and keep their system services from holding the course's ports."""
    if not shutil.which("apt-get"):
        raise StackError(
            f"{' and '.join(packages)} are not installed and this machine has no apt-get.\n"
            "  Install Redis 7+ and RabbitMQ 3.10+ with your package manager (e.g. brew install redis rabbitmq),\n"
            "  or install Docker and run: BROKERLAB_STACK=docker python -m brokerlab stack up")
    if os.geteuid() != 0:
        raise StackError(f"{' and '.join(packages)} are not installed. Install them with:\n"
                         f"  sudo apt-get update && sudo apt-get install -y {' '.join(packages)}")
    print(f"  installing {' '.join(packages)} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *packages]):
        deadline = time.monotonic() + 300
        while True:
            result = subprocess.run([*command[:1], "-o", "DPkg::Lock::Timeout=120", *command[1:]],
                                    capture_output=True, text=True, env=env, timeout=900)
            busy = "Could not get lock" in result.stderr  # another apt-get runs: wait for it, within bounds
            if result.returncode == 0 or not busy or time.monotonic() > deadline:
                break
            time.sleep(2)
        if result.returncode != 0:
            raise StackError(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-1500:]}"
                             + ("\n  Another apt-get held the lock for 5 minutes; run the command again when it is done."
                                if busy else ""))
    # On a machine with systemd the packages start system-wide services on the default ports;
    # the course runs its own, so stop and disable those we just installed.
    if shutil.which("systemctl") and Path("/run/systemd/system").exists():
        units = [p for p in packages if p in ("redis-server", "rabbitmq-server")]
        subprocess.run(["systemctl", "disable", "--now", *units], capture_output=True, timeout=120)
        print(f"  (stopped and disabled the system services {', '.join(units)}: the course runs its own)")


class RedisService(NativeService):
    name = "redis"
    ports = ("redis",)

    def __init__(self, ep: Endpoints, root: Path):
        super().__init__(ep, root)
        self.launch: subprocess.Popen | None = None
        self.extra_args: list[str] = []  # more `--name value` settings (scratch servers)
        self.persistent = False  # the shared stack keeps nothing on disk; scratch servers may

    def missing_packages(self) -> list[str]:
        if debroot.source() == "root":
            return []
        return [] if shutil.which("redis-server") else ["redis-server"]

    def ensure_installed(self) -> None:
        self.runtime = debroot.runtime()
        self.installed = True

    def argv(self) -> list[str]:
        persistence = [] if self.persistent else ["--save", "", "--appendonly", "no"]
        return ["redis-server", "--bind", self.ep.host, "--port", str(self.ep.ports["redis"]),
                "--dir", str(self.dir), *persistence,
                # in the foreground under its launcher; the pid file holds the server's own (host) pid
                "--daemonize", "no", "--pidfile", str(self.pid_file), "--logfile", str(self.log_file),
                *self.extra_args]

    def start(self) -> None:
        self.log_file.unlink(missing_ok=True)
        self.pid_file.unlink(missing_ok=True)
        self.launch = spawn_detached(self.rt.wrap(self.argv(), self.die_with_launcher), self.dir / "redis.stdout")

    def starting(self) -> bool:
        # the pid file is written a moment after the launch
        return self.launch is not None and self.launch.poll() is None and not self.pid_file.exists()


class RabbitMQService(NativeService):
    name = "rabbitmq"
    ports = ("amqp", "rabbitmq_management", "erlang_dist")

    def __init__(self, ep: Endpoints, root: Path):
        super().__init__(ep, root)
        self.sbin = Path(os.environ.get("BROKERLAB_RABBITMQ_SBIN", "/usr/lib/rabbitmq/bin"))
        self.launch: subprocess.Popen | None = None
        self.extra_config = ""  # more rabbitmq.conf lines (scratch servers)
        self.node_name = f"brokerlab{ep.offset}@localhost"  # "localhost": the machine's hostname does not matter
        self.home_dir = self.dir / "home"  # the Erlang cookie lives here; cluster nodes share it

    def missing_packages(self) -> list[str]:
        if debroot.source() == "root":
            return []
        return [] if (self.sbin / "rabbitmq-server").exists() else ["rabbitmq-server"]

    def ensure_installed(self) -> None:
        self.runtime = debroot.runtime()
        self.installed = True


    @property
    def log_file(self) -> Path:
        return self.dir / "log" / f"{self.nodename}.log"

    @property
    def nodename(self) -> str:
        return self.node_name

    def env(self) -> dict:
        """Server and CLI share one environment (cookie, node name, ports), so the CLI finds the node."""
        d = self.dir
        return {
            **os.environ,
            "HOME": str(self.home_dir),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": self.ep.host,
            "RABBITMQ_NODE_PORT": str(self.ep.ports["amqp"]),
            "RABBITMQ_DIST_PORT": str(self.ep.ports["erlang_dist"]),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),  # the server appends .conf
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "ERL_EPMD_ADDRESS": self.ep.host,
            "ERL_EPMD_PORT": str(self.ep.ports["epmd"]),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            **self.plugins_dir(),
        }

    def plugins_dir(self) -> dict:
        """The root's plugins folder (the management plugin lives there), as seen inside the root."""
        if self.rt.kind != "root":
            return {}
        found = sorted(self.rt.root.glob("usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins"))
        return {"RABBITMQ_PLUGINS_DIR": "/" + str(found[-1].relative_to(self.rt.root))} if found else {}

    def ctl(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.rt.wrap([str(self.sbin / tool), *args]), env=self.env(), capture_output=True,
                              text=True, timeout=timeout)

    def start(self) -> None:
        d = self.dir
        self.reset_data_of_another_version()
        for sub in ("mnesia", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.home_dir.mkdir(parents=True, exist_ok=True)
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.ep.host}:{self.ep.ports['amqp']}\n"
            f"management.tcp.ip = {self.ep.host}\n"
            f"management.tcp.port = {self.ep.ports['rabbitmq_management']}\n"
            # the management UI's charts and the widgets poll every second
            "collect_statistics_interval = 1000\n"
            + self.extra_config
        )
        if not (d / "enabled_plugins").exists():
            result = self.ctl("rabbitmq-plugins", "--offline", "enable", "rabbitmq_management")
            if result.returncode != 0:
                raise StackError(f"could not enable the management plugin:\n{result.stdout}{result.stderr}")
        self.launch = spawn_detached(self.rt.wrap([str(self.sbin / "rabbitmq-server")], self.die_with_launcher),
                                     d / "log" / "server.stdout", env=self.env())

    def reset_data_of_another_version(self) -> None:
        """RabbitMQ cannot start on a data folder of another release line (3.10's schema under 4.0 fails
        with schema_integrity_check_failed, and the reverse too).  The course's queues are throw-away, so a
        data folder written by another RabbitMQ is deleted; the version that wrote it is kept beside it."""
        stamp = self.dir / "data-version"
        if self.rt.kind == "root":
            wanted = f"rabbitmq-server {debroot.ROOT_PINS['rabbitmq-server']} (Debian 13 root)"
        else:
            wanted = f"rabbitmq-server {debroot.host_versions().get('rabbitmq')} (host)"
        mnesia = self.dir / "mnesia"
        try:
            found = stamp.read_text().strip()
        except OSError:
            found = "an unrecorded version"
        if found != wanted and mnesia.exists():
            print(f"  RabbitMQ: deleting {mnesia} (written by {found}; now {wanted})", flush=True)
            shutil.rmtree(mnesia)
            # the plugins file of another version may name plugins this one lacks
            (self.dir / "enabled_plugins").unlink(missing_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(wanted + "\n")

    def starting(self) -> bool:
        return self.launch is not None and self.launch.poll() is None

    def pids(self) -> list[int]:
        pids = super().pids()
        if self.launch is not None and self.launch.poll() is None and self.launch.pid not in pids:
            pids.append(self.launch.pid)
        return pids

    def stop(self) -> None:
        if self.pid_file.exists() and self.pids():
            # `stop <pidfile>` returns only once the Erlang VM has exited (plain `stop` does not)
            for pid in self.pids():
                os.kill(pid, signal.SIGCONT)  # a frozen node cannot shut down
            try:
                self.ctl("rabbitmqctl", "stop", str(self.pid_file), timeout=30)
            except subprocess.TimeoutExpired:
                pass
        super().stop()  # whatever is left gets SIGTERM, then SIGKILL
        self.stop_epmd()

    def stop_epmd(self) -> None:
        """epmd outlives the node; stop it when no other Erlang node is registered with it."""
        names = ""
        if not port_in_use(self.ep.host, self.ep.ports["epmd"]):
            return
        if self.rt.kind == "root":
            epmd = "/usr/lib/erlang/bin/epmd"
        else:
            epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
            if not Path(epmd).exists():
                return
        env = self.env()
        try:
            names = subprocess.run(self.rt.wrap([epmd, "-names"]), env=env, capture_output=True, text=True,
                                   timeout=10).stdout
            if "name " not in names:
                subprocess.run(self.rt.wrap([epmd, "-kill"]), env=env, capture_output=True, timeout=10)
        except subprocess.TimeoutExpired:
            pass
        owner = port_owner(self.ep.ports["epmd"])
        if owner and "epmd" in owner[1] and "name " not in names:
            stop_pid(owner[0], grace=5)

    def epmd_pids(self) -> list[int]:
        owner = port_owner(self.ep.ports["epmd"])
        return [owner[0]] if owner and "epmd" in owner[1] else []

    def rss(self) -> int:
        return super().rss() + sum(rss_bytes(pid) for pid in self.epmd_pids())


class KafkaService(NativeService):
    name = "kafka"
    ports = ("kafka", "kafka_controller")
    HEAP = ["-Xms256m", "-Xmx512m"]  # capped: the course's topics are tiny

    def ensure_installed(self) -> None:
        self.java = kafka_dist.java_binary()
        self.classpath = kafka_dist.classpath()
        self.installed = True

    node_id = 1

    def quorum_voters(self) -> str:
        """The KRaft controller quorum: here this one process (scratch clusters list every node)."""
        return f"{self.node_id}@{self.ep.host}:{self.ep.ports['kafka_controller']}"

    def course_settings(self) -> list[str]:
        return list(KAFKA_COURSE_SETTINGS)

    def server_properties(self) -> str:
        host, ports = self.ep.host, self.ep.ports
        return "\n".join([
            "process.roles=broker,controller",  # each process is a KRaft controller and a broker
            f"node.id={self.node_id}",
            f"controller.quorum.voters={self.quorum_voters()}",
            f"listeners=PLAINTEXT://{host}:{ports['kafka']},CONTROLLER://{host}:{ports['kafka_controller']}",
            f"advertised.listeners=PLAINTEXT://{host}:{ports['kafka']}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.dir / 'data'}",
            *self.course_settings(),
            "",
        ])

    def start(self) -> None:
        d = self.dir
        (d / "server.properties").write_text(self.server_properties())
        (d / "log4j2.properties").write_text(
            "status = warn\n"
            "appender.file.type = File\n"
            "appender.file.name = file\n"
            f"appender.file.fileName = {self.log_file}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = info\n"
            "rootLogger.appenderRef.file.ref = file\n"
            "logger.state.name = state.change.logger\n"
            "logger.state.level = warn\n"
        )
        if not (d / "data" / "meta.properties").exists():
            self.format_storage()
        process = spawn_detached(
            [self.java, *self.HEAP, "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={d / 'log4j2.properties'}", "-cp", self.classpath,
             "kafka.Kafka", str(d / "server.properties")],
            d / "kafka.stdout", cwd=d,
            # scratch nodes: SIGKILLed when the process that started them dies (PR_SET_PDEATHSIG)
            preexec_fn=debroot._die_with_parent if self.die_with_launcher else None)
        self.pid_file.write_text(f"{process.pid}\n")

    def format_storage(self) -> None:
        """KRaft storage is formatted once per data folder with a new cluster id."""
        cluster_id = kafka_cluster_id()
        result = subprocess.run(
            [self.java, "-Xmx256m", f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
             "-cp", self.classpath, "kafka.tools.StorageTool", "format", "-t", cluster_id,
             "-c", str(self.dir / "server.properties")],
            capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise StackError(f"formatting Kafka's storage failed:\n{result.stdout}{result.stderr}")


# Settings that make the demos run in seconds; docker-compose.yml sets the same ones.
KAFKA_COURSE_SETTINGS = [
    "offsets.topic.replication.factor=1",
    "offsets.topic.num.partitions=10",          # fewer than 50: the first consumer group starts faster
    "transaction.state.log.replication.factor=1",
    "transaction.state.log.min.isr=1",
    "transaction.state.log.num.partitions=5",
    "share.coordinator.state.topic.replication.factor=1",
    "share.coordinator.state.topic.min.isr=1",
    "group.initial.rebalance.delay.ms=0",        # a group forms at once, not after 3 s
    "group.share.min.heartbeat.interval.ms=1000",  # a share consumer gets its partitions after ~1 s, not 5 s
    "group.share.heartbeat.interval.ms=1000",
    "log.retention.check.interval.ms=2000",     # retention lessons see segments go within seconds
    "log.cleaner.backoff.ms=1000",              # and compaction run within seconds
    "log.segment.delete.delay.ms=1000",
]


def kafka_cluster_id() -> str:
    """A Kafka Uuid: 16 random bytes, URL-safe base64 without padding, not starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


SERVICES = (RedisService, RabbitMQService, KafkaService)
