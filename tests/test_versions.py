"""Native and Docker modes run the same broker versions: the running brokers are asked, not the config."""
from __future__ import annotations

from brokerlab import stack
from brokerlab.stack import debroot, kafka_dist
from brokerlab.stack.versions import compose_pins, native_pins, running_versions


def test_the_running_brokers_report_the_pinned_versions():
    running = running_versions()
    assert running == native_pins(), f"running {running}, pinned {native_pins()}"
    assert running["redis"].startswith("8.0.") and running["rabbitmq"].startswith("4.0.")
    assert running["kafka"] == "4.3.1"


def test_compose_pins_the_same_versions_as_the_native_stack():
    assert compose_pins() == native_pins()
    assert native_pins() == {"redis": debroot.upstream_version(debroot.ROOT_PINS["redis-server"]),
                             "rabbitmq": debroot.upstream_version(debroot.ROOT_PINS["rabbitmq-server"]),
                             "kafka": kafka_dist.KAFKA_VERSION}


def test_debian_versions_map_to_what_the_broker_reports():
    assert debroot.upstream_version("5:8.0.2-3+deb13u2") == "8.0.2"
    assert debroot.upstream_version("4.0.5-6+deb13u2") == "4.0.5"
    assert debroot.upstream_version("7.0.15-1~deb12u1") == "7.0.15"


def test_status_prints_each_brokers_version(capsys):
    assert stack.print_status()
    out = capsys.readouterr().out
    for broker, version in native_pins().items():
        line = next(line for line in out.splitlines() if stack.BROKER_NAMES[broker] + " " in line)
        assert version in line and "pins" not in line, line
