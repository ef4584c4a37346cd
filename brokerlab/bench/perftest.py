"""RabbitMQ PerfTest (com.rabbitmq:perf-test): resolved from Maven Central at a pinned version,
each jar checked against the SHA-256 list committed beside perftest/pom.xml, cached, run on the JDK
that runs Kafka. The same recipe as Kafka's jars (brokerlab.stack.kafka_dist), for a tool the
stack does not need.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from ..errors import StackError
from ..stack import kafka_dist
from ..stack.paths import cache_dir

PERFTEST_VERSION = "2.22.1"   # the newest release on Maven Central (2025); AMQP 0-9-1, supports quorum and streams
HERE = Path(__file__).parent / "perftest"
MAIN_CLASS = "com.rabbitmq.perf.PerfTest"
JVM = ["-Xmx256m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]


def expected_digests() -> dict[str, str]:
    digests = {}
    for line in (HERE / f"perf-test-{PERFTEST_VERSION}.sha256").read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            digests[name] = digest
    return digests


def verify(libs: Path) -> None:
    expected = expected_digests()
    found = {p.name for p in libs.glob("*.jar")}
    if found != set(expected):
        raise StackError(f"PerfTest jars in {libs} do not match the pinned list: missing "
                         f"{sorted(set(expected) - found)}, unexpected {sorted(found - set(expected))}")
    for name, digest in expected.items():
        actual = hashlib.sha256((libs / name).read_bytes()).hexdigest()
        if actual != digest:
            raise StackError(f"{libs / name} has SHA-256 {actual}, expected {digest}: delete {libs.parent} and retry")


def classpath() -> str:
    libs = cache_dir() / f"perf-test-{PERFTEST_VERSION}" / "libs"
    if not (libs / ".verified").exists():
        resolve(libs)
    return f"{libs}/*"


def resolve(libs: Path) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError("RabbitMQ PerfTest is fetched from Maven Central with Maven, which is not installed.\n"
                         "  Debian/Ubuntu: apt-get install -y maven")
    staging = libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    print(f"  fetching RabbitMQ PerfTest {PERFTEST_VERSION} from Maven Central (once; ~9 MB) ...", flush=True)
    command = [mvn, "-B", "-q", "--strict-checksums", "-f", str(HERE / "pom.xml"), "dependency:copy-dependencies",
               f"-Dperftest.version={PERFTEST_VERSION}", f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise StackError("Maven did not finish fetching PerfTest within 10 minutes; check the network") from None
    if result.returncode != 0:
        raise StackError("Maven could not fetch PerfTest:\n" + (result.stdout + result.stderr)[-2000:])
    verify(staging)
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (libs / ".verified").write_text(PERFTEST_VERSION + "\n")


def command(args: list[str]) -> list[str]:
    """The argv that runs PerfTest with `args`."""
    return [kafka_dist.java_binary(), *JVM, "-cp", classpath(), MAIN_CLASS, *args]
