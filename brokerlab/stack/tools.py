"""`python -m brokerlab tool NAME ARGS...`: the brokers' own command-line tools, pointed at the course stack.

Documentation and answers online use these tools; the course runs them at the
stack's addresses in either mode:
- native: redis-cli and the RabbitMQ CLI from the Debian 13 root (with the node's
  name and cookie), Kafka's tools from the pinned Maven jars on the host JDK
  (the same classes as an unpacked distribution's bin/*.sh scripts call);
- docker: `docker compose exec` in the broker's container.
"""
from __future__ import annotations

import os
import subprocess
import sys

from ..endpoints import Endpoints, current
from ..errors import StackError
from .paths import stack_dir

# Kafka's scripts are thin wrappers around these classes (bin/kafka-run-class.sh).
KAFKA_TOOLS = {
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
    "kafka-consumer-perf-test": "org.apache.kafka.tools.ConsumerPerformance",
    "kafka-features": "org.apache.kafka.tools.FeatureCommand",
    "kafka-broker-api-versions": "org.apache.kafka.tools.BrokerApiVersionsCommand",
}
RABBITMQ_TOOLS = ("rabbitmqctl", "rabbitmq-diagnostics", "rabbitmq-plugins", "rabbitmq-queues", "rabbitmq-streams")
REDIS_TOOLS = ("redis-cli",)
TOOLS = (*REDIS_TOOLS, *RABBITMQ_TOOLS, *KAFKA_TOOLS)
# Quick start for short-lived tools: no JIT beyond C1, a small serial heap.
KAFKA_TOOL_JVM = ["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]


def broker_of(name: str) -> str:
    if name in REDIS_TOOLS:
        return "redis"
    if name in RABBITMQ_TOOLS:
        return "rabbitmq"
    if name in KAFKA_TOOLS:
        return "kafka"
    raise StackError(f"unknown tool {name!r}; the course provides: {', '.join(TOOLS)}")


def command(name: str, args: list[str], ep: Endpoints | None = None, tty: bool = False) -> tuple[list[str], dict]:
    """(argv, environment) that run tool `name` against the stack of `ep`."""
    from . import _recorded_mode

    ep = ep or current()
    broker = broker_of(name)
    if _recorded_mode(ep) == "docker":
        return _docker_command(name, broker, args, ep, tty)
    if broker == "redis":
        return _redis_command(args, ep)
    if broker == "rabbitmq":
        return _rabbitmq_command(name, args, ep)
    return _kafka_command(name, args, ep)


def _redis_command(args: list[str], ep: Endpoints) -> tuple[list[str], dict]:
    from .debroot import runtime

    argv = ["redis-cli", "-h", ep.host, "-p", str(ep.ports["redis"]), *args]
    return runtime(build=False).wrap(argv), dict(os.environ)


def _rabbitmq_command(name: str, args: list[str], ep: Endpoints) -> tuple[list[str], dict]:
    from .native import RabbitMQService

    service = RabbitMQService(ep, stack_dir(ep.offset))  # the node's name, cookie and ports
    return service.rt.wrap([str(service.sbin / name), *args]), service.env()


def _kafka_command(name: str, args: list[str], ep: Endpoints) -> tuple[list[str], dict]:
    from . import kafka_dist

    given = any(a == "--bootstrap-server" or a.startswith("--bootstrap-server=") for a in args)
    target = [] if given else ["--bootstrap-server", ep.kafka_bootstrap]
    argv = [kafka_dist.java_binary(), *KAFKA_TOOL_JVM,
            f"-Dlog4j2.configurationFile={kafka_dist.HERE / 'tools-log4j2.properties'}",
            "-cp", kafka_dist.classpath(), KAFKA_TOOLS[name], *target, *args]
    return argv, dict(os.environ)


def _docker_command(name: str, broker: str, args: list[str], ep: Endpoints, tty: bool) -> tuple[list[str], dict]:
    from .compose import COMPOSE_FILE, compose_env

    exec_ = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", f"brokerlab-p{ep.offset}", "exec",
             *([] if tty else ["-T"]), broker]
    if broker == "kafka":
        given = any(a.startswith("--bootstrap-server") for a in args)
        target = [] if given else ["--bootstrap-server", f"127.0.0.1:{ep.ports['kafka']}"]
        return [*exec_, f"/opt/kafka/bin/{name}.sh", *target, *args], compose_env(ep)
    return [*exec_, name, *args], compose_env(ep)  # redis-cli and the RabbitMQ CLI find their server


def run(name: str, args: list[str], ep: Endpoints | None = None) -> int:
    """Run the tool with this terminal's stdin/stdout; returns its exit code."""
    argv, env = command(name, args, ep, tty=sys.stdin.isatty())
    try:
        return subprocess.call(argv, env=env)
    except FileNotFoundError as exc:
        raise StackError(f"cannot run {name}: {exc}. Is the stack set up? Run: {current().start_command()}") from None
