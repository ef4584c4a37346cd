"""Apache Kafka's broker and tool jars: resolved from Maven Central at a pinned version, verified, cached.

Kafka has no Debian package.  Maven fetches the exact jars that kafka/pom.xml names and
each is checked against kafka-<version>.sha256, committed beside it (brokerlab.stack.pinned_jars).
A user with an unpacked Kafka distribution can set KAFKA_HOME instead.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from ..errors import StackError
from .pinned_jars import PinnedJars

# 4.3.1: the newest patch release of the newest minor line with a patch release
# (4.4.0 is a .0); KRaft only, Java 17+, matching the apache/kafka image in docker-compose.yml.
KAFKA_VERSION = "4.3.1"
MIN_JAVA = 17
HERE = Path(__file__).parent / "kafka"
JARS = PinnedJars(title=f"Apache Kafka {KAFKA_VERSION} jars", folder=HERE, digests_file=f"kafka-{KAFKA_VERSION}.sha256",
                  version_property="kafka.version", version=KAFKA_VERSION, cache_name=f"kafka-{KAFKA_VERSION}",
                  size_hint="~60 MB", timeout=900)


def java_binary() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    java = str(candidate) if candidate and candidate.exists() else shutil.which("java")
    if not java:
        raise StackError(
            "Kafka needs a Java runtime (JDK 17 or newer) and none was found.\n"
            "  Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless\n"
            "  or use Docker instead: BROKERLAB_STACK=docker python -m brokerlab stack up")
    result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr)
    major = int(match.group(1)) if match else 0
    if major == 1 and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise StackError(f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+, but {java} is Java {major or '?'}.\n"
                         "  Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless, or set JAVA_HOME")
    return java


def classpath() -> str:
    """The classpath to run the broker with, resolving and verifying the jars on first use."""
    kafka_home = os.environ.get("KAFKA_HOME")
    if kafka_home:
        libs = Path(kafka_home) / "libs"
        if not any(libs.glob("kafka_*.jar")):
            raise StackError(f"KAFKA_HOME={kafka_home} has no libs/kafka_*.jar: point it at an unpacked "
                             "Kafka distribution, or unset it to use the pinned jars from Maven Central.")
        return f"{libs}/*"
    if not (JARS.libs / ".verified").exists():
        JARS.resolve(extra_help="\n  or set KAFKA_HOME to an unpacked Apache Kafka 4.x distribution")
    return JARS.classpath()


def expected_digests() -> dict[str, str]:
    return JARS.expected_digests()


def verify(libs: Path) -> None:
    JARS.verify(libs)
