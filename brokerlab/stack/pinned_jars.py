"""Java artifacts at a pinned version: resolved from Maven Central by Maven, verified, cached.

Rather than a home-made download, Maven (the JDK ecosystem's own resolver, with
--strict-checksums) fetches the exact jars a committed pom.xml names; every jar is then
checked against a SHA-256 list committed beside it, so a changed or missing jar stops the
launch.  Used for Kafka's broker and tools (brokerlab.stack.kafka_dist) and for RabbitMQ
PerfTest (brokerlab.bench.perftest).
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import StackError
from .paths import cache_dir


@dataclass(frozen=True)
class PinnedJars:
    title: str              # what a learner reads in messages, e.g. "Apache Kafka 4.3.1 jars"
    folder: Path            # holds pom.xml and the digests file
    digests_file: str       # e.g. "kafka-4.3.1.sha256": "<sha256> <jar name>" per line
    version_property: str   # the pom property that carries the version, e.g. "kafka.version"
    version: str
    cache_name: str         # folder under .brokerlab/cache
    size_hint: str          # e.g. "~60 MB"
    timeout: float = 900.0

    @property
    def libs(self) -> Path:
        return cache_dir() / self.cache_name / "libs"

    def classpath(self) -> str:
        """The jars' classpath, resolving and verifying them on first use."""
        if not (self.libs / ".verified").exists():
            self.resolve()
        return f"{self.libs}/*"

    def expected_digests(self) -> dict[str, str]:
        digests = {}
        for line in (self.folder / self.digests_file).read_text().splitlines():
            if line.strip():
                digest, name = line.split()
                digests[name] = digest
        return digests

    def verify(self, libs: Path) -> None:
        expected = self.expected_digests()
        found = {p.name for p in libs.glob("*.jar")}
        missing, extra = sorted(set(expected) - found), sorted(found - set(expected))
        if missing or extra:
            raise StackError(f"{self.title} in {libs} do not match the pinned list: missing {missing}, "
                             f"unexpected {extra}")
        for name, digest in expected.items():
            actual = hashlib.sha256((libs / name).read_bytes()).hexdigest()
            if actual != digest:
                raise StackError(f"{libs / name} has SHA-256 {actual}, expected {digest}: "
                                 f"delete {libs.parent} and retry")

    def resolve(self, extra_help: str = "") -> None:
        mvn = shutil.which("mvn")
        if not mvn:
            raise StackError(f"The {self.title} are fetched from Maven Central with Maven, which is not installed.\n"
                             f"  Debian/Ubuntu: apt-get install -y maven{extra_help}")
        staging = self.libs.with_name("libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        print(f"  fetching {self.title} from Maven Central (once; {self.size_hint}) ...", flush=True)
        command = [mvn, "-B", "-q", "--strict-checksums", "-f", str(self.folder / "pom.xml"),
                   "dependency:copy-dependencies", f"-D{self.version_property}={self.version}",
                   f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise StackError(f"Maven did not finish fetching the {self.title} within {self.timeout / 60:.0f} "
                             "minutes; check the network") from None
        if result.returncode != 0:
            raise StackError(f"Maven could not fetch the {self.title}:\n" + (result.stdout + result.stderr)[-2000:])
        self.verify(staging)
        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)
        (self.libs / ".verified").write_text(self.version + "\n")
