"""Apache Kafka's broker jars: resolved from Maven Central at a pinned version, verified, cached.

Kafka has no Debian package.  Rather than a home-made download, Maven (the JDK
ecosystem's own resolver, with --strict-checksums) fetches the exact jars that
kafka/pom.xml names; every jar is then checked against kafka-<version>.sha256,
committed beside it, so a changed or missing jar stops the launch.
A user with an unpacked Kafka distribution can set KAFKA_HOME instead.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from ..errors import StackError
from .paths import cache_dir

# 4.3.1: the newest patch release of the newest minor line with a patch release
# (4.4.0 is a .0); KRaft only, Java 17+, matching the apache/kafka image in docker-compose.yml.
KAFKA_VERSION = "4.3.1"
MIN_JAVA = 17
HERE = Path(__file__).parent / "kafka"


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
    libs = cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"
    if not (libs / ".verified").exists():
        resolve(libs)
    return f"{libs}/*"


def expected_digests() -> dict[str, str]:
    manifest = HERE / f"kafka-{KAFKA_VERSION}.sha256"
    digests = {}
    for line in manifest.read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            digests[name] = digest
    return digests


def verify(libs: Path) -> None:
    expected = expected_digests()
    found = {p.name for p in libs.glob("*.jar")}
    missing, extra = sorted(set(expected) - found), sorted(found - set(expected))
    if missing or extra:
        raise StackError(f"Kafka jars in {libs} do not match the pinned list: missing {missing}, unexpected {extra}")
    for name, digest in expected.items():
        actual = hashlib.sha256((libs / name).read_bytes()).hexdigest()
        if actual != digest:
            raise StackError(f"{libs / name} has SHA-256 {actual}, expected {digest}: delete {libs.parent} and retry")


def resolve(libs: Path) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError(
            "Kafka's jars are fetched from Maven Central with Maven, which is not installed.\n"
            "  Debian/Ubuntu: apt-get install -y maven\n"
            "  or set KAFKA_HOME to an unpacked Apache Kafka 4.x distribution")
    staging = libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    print(f"  fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central (once; ~60 MB) ...", flush=True)
    command = [mvn, "-B", "-q", "--strict-checksums", "-f", str(HERE / "pom.xml"),
               "dependency:copy-dependencies", f"-Dkafka.version={KAFKA_VERSION}",
               f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise StackError("Maven did not finish fetching Kafka's jars within 15 minutes; check the network") from None
    if result.returncode != 0:
        raise StackError("Maven could not fetch Kafka's jars:\n" + (result.stdout + result.stderr)[-2000:])
    verify(staging)
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (libs / ".verified").write_text(KAFKA_VERSION + "\n")
