"""Is the stack up?  One probe per broker, run concurrently, each bounded in time.

Every notebook's first cell calls `require(...)`; the launcher's `up` and
`status` use the same probes, so "ready" means the same thing everywhere.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from . import timeouts
from .endpoints import BROKER_NAMES, Endpoints, current
from .errors import BrokerUnavailable

BROKERS = ("redis", "rabbitmq", "kafka")


@dataclass
class ProbeResult:
    broker: str
    address: str
    ok: bool
    detail: str
    seconds: float
    error: BrokerUnavailable | None = None


def probe_redis(ep: Endpoints) -> str:
    from .clients import redis_client

    client = redis_client(ep=ep)
    try:
        info = client.info("server")
        return f"Redis {info['redis_version']}"
    finally:
        client.close()


def probe_rabbitmq(ep: Endpoints) -> str:
    from .clients import rabbit_api, rabbit_connection

    connection = rabbit_connection(ep)
    try:
        version = connection._impl.server_properties.get("version", b"?")
    finally:
        connection.close()
    overview = rabbit_api("overview", ep=ep)  # the management plugin answers too
    version = version.decode() if isinstance(version, bytes) else version
    return f"RabbitMQ {version}, management API {overview['management_version']}"


def probe_kafka(ep: Endpoints) -> str:
    from .clients import kafka_check

    metadata = kafka_check(ep)
    return f"Kafka cluster {metadata.cluster_id}, {len(metadata.brokers)} broker(s)"


PROBES = {"redis": probe_redis, "rabbitmq": probe_rabbitmq, "kafka": probe_kafka}


def probe(brokers=BROKERS, ep: Endpoints | None = None) -> dict[str, ProbeResult]:
    """Probe the brokers concurrently; never takes much longer than PROBE_BUDGET seconds."""
    from .clients import unavailable

    ep = ep or current()
    results: dict[str, ProbeResult] = {}

    def run(broker: str) -> None:
        started = time.monotonic()
        try:
            detail = PROBES[broker](ep)
            results[broker] = ProbeResult(broker, ep.address(broker), True, detail, time.monotonic() - started)
        except BrokerUnavailable as exc:
            results[broker] = ProbeResult(broker, exc.address, False, exc.reason, time.monotonic() - started, exc)
        except Exception as exc:  # an unexpected answer is still "not healthy", with the reason kept
            error = unavailable(broker, f"{type(exc).__name__}: {exc}", ep)
            results[broker] = ProbeResult(broker, ep.address(broker), False, error.reason,
                                          time.monotonic() - started, error)

    threads = [threading.Thread(target=run, args=(b,), name=f"probe-{b}", daemon=True) for b in brokers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeouts.PROBE_BUDGET
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for broker in brokers:
        if broker not in results:  # the probe's own timeouts did not fire in time
            error = unavailable(broker, f"no answer within {timeouts.PROBE_BUDGET:.0f} s", ep)
            results[broker] = ProbeResult(broker, ep.address(broker), False, error.reason,
                                          timeouts.PROBE_BUDGET, error)
    return {b: results[b] for b in brokers}


def require(*brokers: str, ep: Endpoints | None = None, quiet: bool = False) -> dict[str, ProbeResult]:
    """Check that the named brokers answer; raise a clear error naming the first that does not.

    The first cell of every notebook calls this, e.g. ``require("redis", "kafka")``.
    """
    brokers = brokers or BROKERS
    unknown = set(brokers) - set(BROKERS)
    if unknown:
        raise ValueError(f"unknown broker(s) {sorted(unknown)}; choose from {BROKERS}")
    results = probe(brokers, ep)
    failed = [r for r in results.values() if not r.ok]
    if failed:
        raise failed[0].error
    if not quiet:
        for r in results.values():
            print(f"✔ {BROKER_NAMES[r.broker]:<9} {r.address:<16} {r.detail}")
    return results
