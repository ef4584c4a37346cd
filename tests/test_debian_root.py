"""The private Debian 13 root: pinned versions, never a half-built or stale root, faults leave nothing behind."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brokerlab.errors import StackError
from brokerlab.stack import debroot
from brokerlab.stack.procs import pid_alive


@pytest.fixture
def private_home(tmp_path, monkeypatch):
    """A BROKERLAB_HOME of its own: nothing here touches the real root."""
    monkeypatch.setenv("BROKERLAB_HOME", str(tmp_path))
    (tmp_path / "roots").mkdir()
    return tmp_path


def mounts_under(path: Path) -> list[str]:
    """Mount points under `path` in this (the host's) mount namespace."""
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(path) in line]


def processes_naming(path: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(path).encode() in (proc / "cmdline").read_bytes() and pid_alive(int(proc.name)):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def test_the_stack_runs_from_a_complete_root_with_the_pinned_versions():
    root = debroot.root_path()
    assert debroot.is_complete(root), f"{root} has no completion marker for the current pins"
    installed = debroot.installed_versions(root)
    assert {p: installed.get(p) for p in debroot.ROOT_PINS} == debroot.ROOT_PINS
    assert debroot.pinned_versions() == {"redis": "8.0.2", "rabbitmq": "4.0.5"}
    print(f"root {root.name}: {debroot.disk_usage(root) / 2**20:.0f} MiB on disk")


def test_a_root_without_its_marker_or_from_other_pins_is_not_used(private_home, monkeypatch):
    root = debroot.root_path()
    root.mkdir()
    assert not debroot.is_complete(root)  # half-built: the marker is written last
    (root / debroot.MARKER).write_text(debroot.marker_content())
    assert debroot.is_complete(root)
    monkeypatch.setitem(debroot.ROOT_PINS, "redis-server", "5:8.0.3-1")  # the repo's pins move on
    assert debroot.root_path() != root and not debroot.is_complete(debroot.root_path())
    assert not debroot.is_complete(root)  # its marker names the old pins


def test_half_built_and_stale_roots_are_removed_unless_a_broker_runs_from_them(private_home, capsys):
    roots = private_home / "roots"
    keep = debroot.root_path()
    partial = roots / f"{keep.name}.partial"
    stale = roots / "trixie-000000000000"
    in_use = roots / "trixie-111111111111"
    for path in (keep, partial, stale, in_use):
        path.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(in_use)])
    try:
        debroot.remove_stale_roots(keep=keep)
    finally:
        holder.kill()
        holder.wait()
    assert keep.exists() and in_use.exists()
    assert not partial.exists() and not stale.exists()
    out = capsys.readouterr().out
    assert "half-built" in out and "older pins" in out and "still runs" in out


def test_debootstrap_failing_half_way_leaves_no_root_and_says_what_to_do(private_home, monkeypatch):
    with socket.socket() as sock:  # a mirror address nothing answers on: the download fails
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("BROKERLAB_DEBIAN_MIRROR", f"http://127.0.0.1:{port}/debian")
    started = time.monotonic()
    with pytest.raises(StackError) as info:
        debroot.build(debroot.root_path(), quiet=True)
    message = str(info.value)
    assert "debootstrap exit" in message and "stack up" in message
    assert "BROKERLAB_STACK=docker" in message and "BROKERLAB_NATIVE_BROKERS=host" in message
    assert not debroot.root_path().exists()
    assert not list((private_home / "roots").glob("*.partial"))
    assert not mounts_under(private_home)
    assert time.monotonic() - started < 60


def test_a_killed_build_leaves_nothing_mounted_or_running_and_is_rebuilt(private_home):
    """Kill the launcher while debootstrap has /proc mounted in the half-built root."""
    real_debs = Path(__file__).resolve().parents[1] / ".brokerlab" / "roots" / "debs"
    if any(real_debs.glob("*.deb")):  # reuse the packages the real root was built from: no download
        (private_home / "roots" / "debs").symlink_to(real_debs)
    launcher = subprocess.Popen(
        [sys.executable, "-c", "from brokerlab.stack import debroot; debroot.build(debroot.root_path(), quiet=True)"],
        env={**os.environ, "BROKERLAB_HOME": str(private_home)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    staging = debroot.root_path().with_name(debroot.root_path().name + ".partial")
    try:
        deadline = time.monotonic() + 240
        while not _mounted_inside_build(staging):  # debootstrap's second stage mounts proc in the target
            assert launcher.poll() is None, "the build ended before it mounted anything"
            assert time.monotonic() < deadline, "debootstrap never mounted /proc in the target"
            time.sleep(0.2)
        assert not mounts_under(private_home)  # the mount is in the build's own namespace only
    finally:
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
    deadline = time.monotonic() + 15
    while processes_naming(private_home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_naming(private_home) == []  # debootstrap, dpkg, ... died with the launcher
    assert not mounts_under(private_home)
    assert staging.exists() and not debroot.is_complete(debroot.root_path())
    debroot.remove_stale_roots(keep=debroot.root_path())  # what the next `stack up` does first
    assert not staging.exists()


def _mounted_inside_build(staging: Path) -> bool:
    target = f" {staging}/proc "
    for pid in processes_naming(staging):
        try:
            if target in Path(f"/proc/{pid}/mountinfo").read_text():
                return True
        except OSError:
            pass
    return False


def test_no_root_user_is_told_why_and_pointed_to_docker(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(StackError) as info:
        debroot.check_can_build()
    message = str(info.value)
    assert "needs root" in message and "BROKERLAB_STACK=docker" in message
    assert "BROKERLAB_NATIVE_BROKERS=host" in message


def test_no_apt_and_no_debootstrap_is_told_why(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match="no apt-get"):
        debroot.check_can_build()


def test_the_host_fallback_prints_the_versions_it_found(monkeypatch, capsys):
    monkeypatch.setenv("BROKERLAB_NATIVE_BROKERS", "host")
    monkeypatch.setattr(debroot, "_runtime", None)
    runtime = debroot.runtime()
    assert runtime.kind == "host" and runtime.wrap(["redis-server"]) == ["redis-server"]
    out = capsys.readouterr().out
    assert "BROKERLAB_NATIVE_BROKERS=host" in out and "redis" in out and "rabbitmq" in out
    monkeypatch.setenv("BROKERLAB_NATIVE_BROKERS", "sideways")
    with pytest.raises(StackError, match="root or host"):
        debroot.source()
