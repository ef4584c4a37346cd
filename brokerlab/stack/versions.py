"""Which broker versions the course pins (native root, Kafka jars, compose images) and which ones run."""
from __future__ import annotations

import re
from pathlib import Path

from ..endpoints import Endpoints, current
from . import debroot, kafka_dist
from .compose import COMPOSE_FILE
from .procs import port_owner

IMAGES = {"redis": r"redis:(\d+\.\d+\.\d+)", "rabbitmq": r"rabbitmq:(\d+\.\d+\.\d+)-management",
          "kafka": r"apache/kafka:(\d+\.\d+\.\d+)"}


def compose_images(path: Path = COMPOSE_FILE) -> dict[str, str]:
    """{'redis': 'redis:8.0.2', ...}: the images docker-compose.yml runs (scratch containers use the same)."""
    text = path.read_text()
    images = {}
    for broker, pattern in IMAGES.items():
        match = re.search(r"^\s*image:\s*(" + pattern + r")\s", text, re.M)
        if match:
            images[broker] = match.group(1)
    return images


def native_pins() -> dict[str, str]:
    return {**debroot.pinned_versions(), "kafka": kafka_dist.KAFKA_VERSION}


def compose_pins(path: Path = COMPOSE_FILE) -> dict[str, str]:
    text = path.read_text()
    pins = {}
    for broker, pattern in IMAGES.items():
        match = re.search(r"^\s*image:\s*" + pattern + r"\s", text, re.M)
        pins[broker] = match.group(1) if match else "not pinned"
    return pins


def running_versions(ep: Endpoints | None = None) -> dict[str, str]:
    """Ask the running brokers: Redis INFO, RabbitMQ's management overview, the Kafka broker's own jar."""
    ep = ep or current()
    return {broker: running_version(broker, ep) for broker in ("redis", "rabbitmq", "kafka")}


def running_version(broker: str, ep: Endpoints) -> str:
    from ..clients import rabbit_api, redis_client

    if broker == "redis":
        client = redis_client(ep=ep)
        try:
            return client.info("server")["redis_version"]
        finally:
            client.close()
    if broker == "rabbitmq":
        return rabbit_api("overview", ep=ep)["rabbitmq_version"]
    return kafka_version(ep)


def kafka_version(ep: Endpoints) -> str:
    """The version of the kafka_2.13-X.jar the process listening on Kafka's port has open (or compose's)."""
    owner = port_owner(ep.ports["kafka"])
    if owner:
        jars = []
        try:
            for fd in Path(f"/proc/{owner[0]}/fd").iterdir():
                try:
                    jars.append(Path(fd.readlink()).name)
                except OSError:
                    continue
        except OSError:
            pass
        for name in jars:
            match = re.fullmatch(r"kafka_2\.13-(\d+\.\d+\.\d+)\.jar", name)
            if match:
                return match.group(1)
    from . import _recorded_mode, compose

    if _recorded_mode(ep) == "docker":
        result = compose.compose(ep, "exec", "-T", "kafka", "sh", "-c", "ls /opt/kafka/libs", timeout=60)
        match = re.search(r"kafka_2\.13-(\d+\.\d+\.\d+)\.jar", result.stdout)
        if match:
            return match.group(1)
    return "unknown"
