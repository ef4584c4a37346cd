"""RabbitMQ PerfTest (com.rabbitmq:perf-test): resolved from Maven Central at a pinned version,
each jar checked against the SHA-256 list committed beside perftest/pom.xml, cached, run on the JDK
that runs Kafka. The same recipe as Kafka's jars (brokerlab.stack.pinned_jars), for a tool the
stack does not need.
"""
from __future__ import annotations

from pathlib import Path

from ..stack import kafka_dist
from ..stack.pinned_jars import PinnedJars

PERFTEST_VERSION = "2.22.1"   # the newest release on Maven Central (2025); AMQP 0-9-1, supports quorum and streams
HERE = Path(__file__).parent / "perftest"
JARS = PinnedJars(title=f"RabbitMQ PerfTest {PERFTEST_VERSION} jars", folder=HERE,
                  digests_file=f"perf-test-{PERFTEST_VERSION}.sha256", version_property="perftest.version",
                  version=PERFTEST_VERSION, cache_name=f"perf-test-{PERFTEST_VERSION}", size_hint="~9 MB", timeout=600)
MAIN_CLASS = "com.rabbitmq.perf.PerfTest"
JVM = ["-Xmx256m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]


def classpath() -> str:
    return JARS.classpath()


def command(args: list[str]) -> list[str]:
    """The argv that runs PerfTest with `args`."""
    return [kafka_dist.java_binary(), *JVM, "-cp", classpath(), MAIN_CLASS, *args]
