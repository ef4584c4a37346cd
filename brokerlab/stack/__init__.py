"""`brokerlab stack up|down|status|logs|reset`: one broker stack per port set, native or docker compose."""
from __future__ import annotations

import os
import shutil
import threading
import time

from ..endpoints import BROKER_NAMES, Endpoints, current
from ..errors import StackError
from . import compose
from .native import SERVICES, NativeService, apt_install
from .paths import stack_dir
from .procs import tail


def choose_mode(ep: Endpoints) -> tuple[str, str]:
    """(mode, why): BROKERLAB_STACK=native|docker forces one; otherwise docker when an engine answers."""
    forced = os.environ.get("BROKERLAB_STACK", "auto").strip().lower()
    if forced in ("native", "docker"):
        return forced, f"BROKERLAB_STACK={forced}"
    if forced != "auto":
        raise StackError(f"BROKERLAB_STACK must be native, docker or auto, not {forced!r}")
    recorded = _recorded_mode(ep)
    if recorded:
        return recorded, "the mode this stack was started in"
    if compose.engine_available():
        return "docker", "a Docker engine answers"
    return "native", "no Docker engine answers"


def _mode_file(ep: Endpoints):
    return stack_dir(ep.offset) / "mode"


def _recorded_mode(ep: Endpoints) -> str | None:
    try:
        return _mode_file(ep).read_text().strip() or None
    except OSError:
        return None


def services(ep: Endpoints) -> list[NativeService]:
    root = stack_dir(ep.offset)
    return [cls(ep, root) for cls in SERVICES]


def up(ep: Endpoints | None = None) -> dict[str, str]:
    """Start every broker that is not already healthy and wait for its health check. Idempotent."""
    ep = ep or current()
    mode, why = choose_mode(ep)
    print(f"Broker stack on port set {ep.offset} ({mode}: {why})", flush=True)
    started = time.monotonic()
    if mode == "docker":
        compose.up(ep)
        outcome = {b: "healthy (docker compose)" for b in BROKER_NAMES}
    else:
        outcome = _native_up(ep)
    stack_dir(ep.offset).mkdir(parents=True, exist_ok=True)
    _mode_file(ep).write_text(mode + "\n")
    print(f"Stack ready in {time.monotonic() - started:.1f} s:")
    _print_addresses(ep, outcome)
    return outcome


def _native_up(ep: Endpoints) -> dict[str, str]:
    todo = []
    outcome = {}
    for service in services(ep):
        if service.needs_start():
            todo.append(service)
        else:
            outcome[service.name] = "already running"
    packages = [p for s in todo for p in s.missing_packages()]
    if packages:
        apt_install(*packages)
    for service in todo:
        service.ensure_installed()
    if any(s.name in ("redis", "rabbitmq") for s in todo):
        from .debroot import runtime

        print(f"  Redis and RabbitMQ from {runtime(build=False).describe()}", flush=True)

    errors: dict[str, Exception] = {}

    def start(service: NativeService) -> None:
        try:
            outcome[service.name] = f"started in {service.start_and_wait():.1f} s"
        except Exception as exc:  # reported below, with every other service's outcome
            errors[service.name] = exc

    # The three start concurrently: the stack is ready when the slowest (RabbitMQ) is.
    threads = [threading.Thread(target=start, args=(s,), name=f"start-{s.name}") for s in todo]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # bounded: each start_and_wait has its own deadline
    if errors:
        details = "\n\n".join(f"{BROKER_NAMES[name]}: {exc}" for name, exc in errors.items())
        raise StackError(f"{details}\n\nSee `python -m brokerlab stack logs`; `python -m brokerlab stack down` "
                         "stops what did start.")
    return {b: outcome[b] for b in BROKER_NAMES}


def down(ep: Endpoints | None = None) -> None:
    """Stop every broker of this port set; nothing is left running (epmd included)."""
    ep = ep or current()
    mode = _recorded_mode(ep) or "native"
    if mode == "docker" and compose.engine_available():
        compose.down(ep)
    errors = []
    threads = []
    for service in services(ep):  # also clears native leftovers after a mode switch
        def stop(service=service):
            try:
                service.stop()
            except Exception as exc:
                errors.append(f"{BROKER_NAMES[service.name]}: {exc}")
        threads.append(threading.Thread(target=stop, name=f"stop-{service.name}"))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    from .scratch import stop_scratch_leftovers

    orphans = stop_scratch_leftovers()  # scratch servers or clusters whose notebook kernel died before its cleanup
    if orphans:
        print(f"  stopped {len(orphans)} leftover scratch server process(es): pids {orphans}")
    left = [(s.name, pid) for s in services(ep) for pid in s.pids() + s.strays()]
    if errors or left:
        raise StackError("could not stop everything: " + "; ".join(errors + [f"{n} pid {p}" for n, p in left]))
    _mode_file(ep).unlink(missing_ok=True)
    print(f"Broker stack on port set {ep.offset} stopped; no broker process left.")


def reset(ep: Endpoints | None = None) -> None:
    """down, then delete the stack's data and logs (the Kafka jar cache stays)."""
    ep = ep or current()
    from .scratch import leftovers, scratch_root

    down(ep)
    shutil.rmtree(stack_dir(ep.offset), ignore_errors=True)
    print(f"Deleted {stack_dir(ep.offset)}")
    if not leftovers():  # folders of scratch servers whose notebook was killed (none is running)
        shutil.rmtree(scratch_root(), ignore_errors=True)


def status(ep: Endpoints | None = None) -> dict:
    """Health, address, processes and resident memory of each broker."""
    from ..health import probe

    from .versions import compose_pins, native_pins, running_versions

    ep = ep or current()
    results = probe(ep=ep)
    mode = _recorded_mode(ep) or "not started by brokerlab"
    try:
        running = running_versions(ep) if all(r.ok for r in results.values()) else {}
    except Exception:  # a broker went away between the probe and the question: no versions then
        running = {}
    pins = compose_pins() if mode == "docker" else native_pins()
    rows = {}
    for service in services(ep):
        r = results[service.name]
        rows[service.name] = {
            "healthy": r.ok, "address": r.address, "detail": r.detail,
            "version": running.get(service.name), "pinned": pins[service.name],
            "pids": service.pids(), "rss_bytes": service.rss(),
        }
    return {"mode": mode, "offset": ep.offset, "brokers": rows}


def print_status(ep: Endpoints | None = None) -> bool:
    ep = ep or current()
    report = status(ep)
    print(f"Port set {report['offset']} ({report['mode']})")
    total = 0
    for name, row in report["brokers"].items():
        mark = "up  " if row["healthy"] else "DOWN"
        memory = f"{row['rss_bytes'] / 2**20:7.0f} MiB" if row["rss_bytes"] else "           "
        total += row["rss_bytes"]
        version = row["version"] or "?"
        drift = "" if row["version"] in (None, row["pinned"]) else f" (the course pins {row['pinned']}!)"
        print(f"  {mark} {BROKER_NAMES[name]:<9} {version:<7}{drift} {row['address']:<16} {memory}  {row['detail']}")
    if total:
        print(f"  resident memory of the native brokers: {total / 2**20:.0f} MiB")
    healthy = all(row["healthy"] for row in report["brokers"].values())
    if not healthy:
        print(f"Start the stack with: {ep.start_command()}")
    return healthy


def logs(ep: Endpoints | None = None, broker: str | None = None, lines: int = 40) -> None:
    ep = ep or current()
    if _recorded_mode(ep) == "docker":
        compose.logs(ep, broker, lines)
        return
    for service in services(ep):
        if broker in (None, service.name):
            print(f"==> {BROKER_NAMES[service.name]}: {service.log_file}")
            print(tail(service.log_file, lines))


def _print_addresses(ep: Endpoints, outcome: dict[str, str]) -> None:
    described = ep.describe()
    notes = {"Redis": "redis", "RabbitMQ (AMQP)": "rabbitmq", "Kafka": "kafka"}
    for label, address in described.items():
        note = outcome.get(notes.get(label, ""), "")
        print(f"  {label:<20} {address:<45} {note}")
    print(f"Stop it with: {'BROKERLAB_PORT_OFFSET=%d ' % ep.offset if ep.offset else ''}python -m brokerlab stack down")
