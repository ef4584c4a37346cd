"""Where the brokers listen, from environment variables with localhost defaults.

Every port derives from one offset (BROKERLAB_PORT_OFFSET), so a learner's stack
(offset 0) and the test suite's stack (offset 100) run side by side.  A single
port can still be overridden, e.g. BROKERLAB_REDIS_PORT=6380.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

HOST = "127.0.0.1"
TEST_PORT_OFFSET = 100

# Default ports of each service at offset 0 (the brokers' own well-known ports).
BASE_PORTS = {
    "redis": 6379,
    "amqp": 5672,
    "rabbitmq_management": 15672,
    "kafka": 9092,
    "kafka_controller": 9093,
    "epmd": 4369,
    "erlang_dist": 25672,
}

# What a learner calls each broker in messages.
BROKER_NAMES = {"redis": "Redis", "rabbitmq": "RabbitMQ", "kafka": "Kafka"}


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


@dataclass(frozen=True)
class Endpoints:
    host: str
    offset: int
    ports: dict

    @classmethod
    def from_env(cls, offset: int | None = None) -> "Endpoints":
        if offset is None:
            offset = _int_env("BROKERLAB_PORT_OFFSET", 0)
        host = os.environ.get("BROKERLAB_HOST", HOST)
        ports = {
            name: _int_env(f"BROKERLAB_{name.upper()}_PORT", base + offset)
            for name, base in BASE_PORTS.items()
        }
        return cls(host=host, offset=offset, ports=ports)

    # --- addresses the clients use -------------------------------------------------
    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.ports['redis']}/0"

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.ports['amqp']}//"

    @property
    def rabbitmq_api(self) -> str:
        return f"http://{self.host}:{self.ports['rabbitmq_management']}/api"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.ports['kafka']}"

    def address(self, broker: str) -> str:
        """The address a learner should look at when `broker` does not answer."""
        port = {"redis": "redis", "rabbitmq": "amqp", "kafka": "kafka"}[broker]
        return f"{self.host}:{self.ports[port]}"

    def start_command(self) -> str:
        """The command that starts this stack (the test stack needs its offset)."""
        prefix = f"BROKERLAB_PORT_OFFSET={self.offset} " if self.offset else ""
        return f"{prefix}python -m brokerlab stack up   (or: make up)"

    def describe(self) -> dict:
        return {
            "Redis": self.redis_url,
            "RabbitMQ (AMQP)": f"{self.host}:{self.ports['amqp']}",
            "RabbitMQ management": f"http://{self.host}:{self.ports['rabbitmq_management']}/ (guest/guest)",
            "Kafka": self.kafka_bootstrap,
        }


def current() -> Endpoints:
    return Endpoints.from_env()
