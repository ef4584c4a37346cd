"""`python -m brokerlab tool ...`: each kind of broker CLI runs against the test stack, for real."""
from __future__ import annotations

import subprocess
import sys

import pytest

from brokerlab import run_name
from brokerlab.clients import kafka_admin
from brokerlab.endpoints import Endpoints
from brokerlab.errors import StackError
from brokerlab.kafka_tools import delete_topics
from brokerlab.stack import tools
from brokerlab.stack.paths import stack_dir


def tool(*argv: str, stdin: str | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    """The command a learner types: python -m brokerlab tool NAME ARGS..."""
    result = subprocess.run([sys.executable, "-m", "brokerlab", "tool", *argv], input=stdin, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, f"{argv}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def test_redis_cli_talks_to_the_stacks_redis(r):
    key = run_name("tool-key")
    try:
        assert tool("redis-cli", "ping").stdout.strip() == "PONG"
        tool("redis-cli", "set", key, "from-redis-cli")
        assert r.get(key) == "from-redis-cli"  # the same server the clients use
        assert tool("redis-cli", "info", "server").stdout.count("redis_version:8.0.") == 1
    finally:
        r.delete(key)


def test_rabbitmq_cli_finds_the_stacks_node():
    assert tool("rabbitmq-diagnostics", "-q", "server_version").stdout.strip() == "4.0.5"
    queues = tool("rabbitmqctl", "-q", "list_queues", "name").stdout
    assert "Error" not in queues


@pytest.fixture
def topic():
    name = run_name("tool-topic")
    yield name
    admin = kafka_admin()
    delete_topics(admin, [name])


def test_kafka_topics_console_producer_consumer_and_groups(topic):
    tool("kafka-topics", "--create", "--topic", topic, "--partitions", "2", "--replication-factor", "1")
    assert topic in tool("kafka-topics", "--list").stdout.split()
    assert "PartitionCount: 2" in tool("kafka-topics", "--describe", "--topic", topic).stdout
    tool("kafka-console-producer", "--topic", topic, stdin="one\ntwo\nthree\n")
    group = run_name("tool-group")
    consumed = tool("kafka-console-consumer", "--topic", topic, "--from-beginning", "--group", group,
                    "--max-messages", "3", "--timeout-ms", "20000").stdout.split()
    assert sorted(consumed) == ["one", "three", "two"]
    described = tool("kafka-consumer-groups", "--describe", "--group", group).stdout
    assert topic in described and group in described
    # the broker's finalized metadata.version is its release line: 4.3
    assert "FinalizedVersionLevel: 4.3-" in tool("kafka-features", "describe").stdout


def test_kafka_perf_tests_run_from_the_pinned_jars(topic):
    produced = tool("kafka-producer-perf-test", "--topic", topic, "--num-records", "2000", "--record-size", "100",
                    "--throughput", "-1").stdout
    assert "2000 records sent" in produced
    consumed = tool("kafka-consumer-perf-test", "--topic", topic, "--messages", "2000", "--timeout", "20000").stdout
    assert "data.consumed.in.MB" in consumed or "start.time" in consumed


def test_an_unknown_tool_is_named_with_the_list():
    result = subprocess.run([sys.executable, "-m", "brokerlab", "tool", "kafka-topcis"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "unknown tool 'kafka-topcis'" in result.stderr and "kafka-topics" in result.stderr


def test_in_docker_mode_every_tool_is_a_compose_exec(tmp_path):
    """No Docker engine here: check the commands the docker mode would run."""
    side = Endpoints.from_env(offset=2117)
    folder = stack_dir(side.offset)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mode").write_text("docker\n")
    try:
        argv, env = tools.command("redis-cli", ["ping"], side)
        assert argv[-5:] == ["exec", "-T", "redis", "redis-cli", "ping"] and "brokerlab-p2117" in argv
        argv, _ = tools.command("rabbitmqctl", ["list_queues"], side)
        assert argv[-3:] == ["rabbitmq", "rabbitmqctl", "list_queues"]
        argv, env = tools.command("kafka-topics", ["--list"], side)
        assert argv[-4:] == ["/opt/kafka/bin/kafka-topics.sh", "--bootstrap-server",
                             f"127.0.0.1:{side.ports['kafka']}", "--list"]
        assert env["KAFKA_PORT"] == str(side.ports["kafka"])
    finally:
        import shutil

        shutil.rmtree(folder)
    with pytest.raises(StackError, match="unknown tool"):
        tools.command("kafkacat", [], side)
