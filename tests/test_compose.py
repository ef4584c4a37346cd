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
from brokerlab.stack.scratch import SCRATCH_PORT_RANGES, RedisSentinelGroup, _ScratchKafkaService

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
STACK = {name: s for name, s in COMPOSE["services"].items() if not s.get("profiles")}      # `docker compose up`
CLUSTER = {name: s for name, s in COMPOSE["services"].items() if "cluster" in s.get("profiles", [])}


def test_three_brokers_with_pinned_images_and_health_checks():
    services = STACK
    assert set(services) == {"redis", "rabbitmq", "kafka"}
    for name, service in services.items():
        image = service["image"]
        assert re.search(r":\d+\.\d+\.\d+", image), f"{name}: pin an exact tag, not {image}"
        assert "healthcheck" in service, name
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_dist.KAFKA_VERSION}"
    assert "management" in services["rabbitmq"]["image"]


def test_ports_are_published_on_loopback_only_and_follow_the_offset():
    published = [p for s in STACK.values() for p in s["ports"]]
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


# --- the `cluster` profile (lesson 07b): nothing here can start it, so its description is checked ----------


def test_the_cluster_profile_is_apart_from_the_stack_and_runs_the_same_pinned_images():
    assert set(CLUSTER) == {"kafka-1", "kafka-2", "kafka-3", "rabbitmq-1", "rabbitmq-2", "rabbitmq-3",
                            "redis-primary", "redis-replica", "redis-sentinel"}
    assert set(COMPOSE["services"]) == set(STACK) | set(CLUSTER)   # a plain `up` starts the stack only
    for name, service in CLUSTER.items():
        assert service["profiles"] == ["cluster"], name
        assert service["image"] == STACK[name.split("-")[0]]["image"], name
        assert "healthcheck" in service, name


def test_cluster_ports_are_loopback_only_and_clear_of_every_course_port_set_and_scratch_range():
    published = [p for s in CLUSTER.values() for p in s["ports"]]
    assert published and all(p.startswith("127.0.0.1:${CLUSTER_") for p in published)
    host_ports = [int(re.match(r"127\.0\.0\.1:\$\{\w+:-(\d+)\}:", p).group(1)) for p in published]
    assert len(set(host_ports)) == len(host_ports) == 3 + 6 + 3
    course = {base + offset for base in BASE_PORTS.values() for offset in range(3001)}
    scratch = {port for r in SCRATCH_PORT_RANGES for port in r}
    assert not set(host_ports) & (course | scratch)


def test_cluster_kafka_nodes_form_one_kraft_quorum_with_the_native_cluster_settings():
    settings = _ScratchKafkaService.course_settings(object.__new__(_ScratchKafkaService))
    nodes = [CLUSTER[f"kafka-{i}"]["environment"] for i in (1, 2, 3)]
    assert len({env["CLUSTER_ID"] for env in nodes}) == 1
    for node_id, env in enumerate(nodes, start=1):
        assert env["KAFKA_NODE_ID"] == node_id and env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
        assert f"INTERNAL://kafka-{node_id}:29092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert "EXTERNAL://127.0.0.1:${CLUSTER_KAFKA_" in env["KAFKA_ADVERTISED_LISTENERS"]
        for setting in settings:
            key, value = setting.split("=")
            variable = "KAFKA_" + key.upper().replace(".", "_")
            assert str(env.get(variable)) == value, f"kafka-{node_id}: {variable} should be {value}"


def test_cluster_rabbitmq_nodes_share_a_cookie_and_list_each_other():
    conf = COMPOSE["configs"]["rabbitmq-cluster"]["content"]
    assert "cluster_formation.peer_discovery_backend = classic_config" in conf
    cookies = set()
    for i in (1, 2, 3):
        node = CLUSTER[f"rabbitmq-{i}"]
        assert node["hostname"] == f"rabbitmq-{i}" and f"= rabbit@rabbitmq-{i}" in conf
        assert node["configs"][0]["source"] == "rabbitmq-cluster"
        env = node["environment"]
        cookies |= {re.search(r"-setcookie (\S+)", env[k]).group(1)
                    for k in ("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "RABBITMQ_CTL_ERL_ARGS")}
    assert len(cookies) == 1


def test_cluster_redis_replica_follows_the_primary_and_sentinel_watches_it_as_natively():
    assert CLUSTER["redis-replica"]["command"][-3:] == ["--replicaof", "redis-primary", "6379"]
    sentinel = CLUSTER["redis-sentinel"]["command"][-1]
    name = RedisSentinelGroup.MASTER_NAME
    for line in (f"sentinel monitor {name} redis-primary 6379 1", f"sentinel down-after-milliseconds {name} 1000",
                 f"sentinel failover-timeout {name} 5000", f"sentinel parallel-syncs {name} 1"):
        assert f"'{line}'" in sentinel
