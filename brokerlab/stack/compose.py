"""The Docker path: the same three brokers from docker-compose.yml, on the same ports."""
from __future__ import annotations

import shutil
import subprocess

from ..endpoints import Endpoints
from ..errors import StackError
from .paths import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"


def engine_available() -> bool:
    """True when a Docker engine answers (the client alone is not enough)."""
    if not shutil.which("docker"):
        return False
    try:
        result = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                                capture_output=True, text=True, timeout=8)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def compose_env(ep: Endpoints) -> dict:
    """The port variables docker-compose.yml reads, so compose honours the port offset too."""
    import os

    return {
        **os.environ,
        "REDIS_PORT": str(ep.ports["redis"]),
        "AMQP_PORT": str(ep.ports["amqp"]),
        "RABBITMQ_MANAGEMENT_PORT": str(ep.ports["rabbitmq_management"]),
        "KAFKA_PORT": str(ep.ports["kafka"]),
    }


def compose(ep: Endpoints, *args: str, timeout: float = 600, capture: bool = True) -> subprocess.CompletedProcess:
    command = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", f"brokerlab-p{ep.offset}", *args]
    try:
        return subprocess.run(command, env=compose_env(ep), capture_output=capture, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise StackError(f"`{' '.join(command)}` did not finish within {timeout:.0f} s") from None


def up(ep: Endpoints) -> None:
    # --wait returns once every service's health check passes (or fails).
    result = compose(ep, "up", "--detach", "--wait", "--wait-timeout", "180")
    if result.returncode != 0:
        raise StackError("docker compose up failed:\n" + (result.stdout + result.stderr)[-2000:])


def down(ep: Endpoints) -> None:
    result = compose(ep, "down", "--volumes", "--timeout", "20")
    if result.returncode != 0:
        raise StackError("docker compose down failed:\n" + (result.stdout + result.stderr)[-2000:])


def logs(ep: Endpoints, service: str | None, lines: int) -> None:
    compose(ep, "logs", "--tail", str(lines), *([service] if service else []), capture=False)


def running(ep: Endpoints) -> bool:
    result = compose(ep, "ps", "--quiet", timeout=30)
    return result.returncode == 0 and bool(result.stdout.strip())
