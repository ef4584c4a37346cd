"""docker-compose.yml describes the same stack as the native launcher (no engine here to run it)."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from brokerlab.endpoints import BASE_PORTS
from brokerlab.stack import kafka_dist
from brokerlab.stack.compose import compose_env
from brokerlab.endpoints import Endpoints
from brokerlab.stack.native import KAFKA_COURSE_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_three_brokers_with_pinned_images_and_health_checks():
    services = COMPOSE["services"]
    assert set(services) == {"redis", "rabbitmq", "kafka"}
    for name, service in services.items():
        image = service["image"]
        assert re.search(r":\d+\.\d+\.\d+", image), f"{name}: pin an exact tag, not {image}"
        assert "healthcheck" in service, name
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_dist.KAFKA_VERSION}"
    assert "management" in services["rabbitmq"]["image"]


def test_ports_are_published_on_loopback_only_and_follow_the_offset():
    published = [p for s in COMPOSE["services"].values() for p in s["ports"]]
    assert published and all(p.startswith("127.0.0.1:") for p in published)
    env = compose_env(Endpoints.from_env(offset=100))
    text = (ROOT / "docker-compose.yml").read_text()
    for variable, port_name in (("REDIS_PORT", "redis"), ("AMQP_PORT", "amqp"),
                                ("RABBITMQ_MANAGEMENT_PORT", "rabbitmq_management"), ("KAFKA_PORT", "kafka")):
        assert f"${{{variable}:-{BASE_PORTS[port_name]}}}" in text
        assert env[variable] == str(BASE_PORTS[port_name] + 100)


def test_kafka_runs_with_the_same_course_settings_as_natively():
    environment = COMPOSE["services"]["kafka"]["environment"]
    for setting in KAFKA_COURSE_SETTINGS:
        key, value = setting.split("=")
        variable = "KAFKA_" + key.upper().replace(".", "_")
        assert str(environment.get(variable)) == value, f"{variable} should be {value}"
