"""Small process utilities for the native launcher (Linux /proc based, stdlib only)."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie has exited; only its parent has not collected it yet
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return True


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def stop_pid(pid: int | None, grace: float = 20.0) -> bool:
    """SIGTERM (after SIGCONT, in case it was frozen), then SIGKILL at the deadline. True if it is gone."""
    if not pid_alive(pid):
        return True
    for sig in (signal.SIGCONT, signal.SIGTERM):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
    if wait_gone(pid, grace):
        return True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    return wait_gone(pid, 5.0)


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            _reap(pid)
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        if sock.connect_ex((host, port)) != 0:
            return False
        # Connecting to a free port of the ephemeral range can pick that same port as the
        # source port and connect to itself (TCP simultaneous open): that is not a listener.
        try:
            return sock.getsockname() != sock.getpeername()
        except OSError:  # reset as soon as accepted: a server going away (killed) listens no more
            return False


def port_owner(port: int) -> tuple[int, str] | None:
    """(pid, command line) of the process listening on a TCP port, if /proc can tell."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(fields[9])
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    return int(proc.name), cmdline.strip()
        except OSError:
            continue
    return None


def pids_naming(text: str) -> list[int]:
    """Live processes whose command line contains `text` (e.g. a stack folder: launchers, servers, wrappers)."""
    needle, found = text.encode(), []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if needle in (proc / "cmdline").read_bytes() and pid_alive(int(proc.name)):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory of one process."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tail(path: Path, lines: int = 20, errors: int = 5) -> str:
    """The last `lines` of a log, after its first `errors` ERROR/FATAL lines when those are further up: a server
    that failed usually logs why first and then many lines of orderly shutdown."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    last = text[-lines:]
    first_errors = [line for line in text[:-lines] if re.search(r"\b(ERROR|FATAL|CRITICAL)\b|Exception\b", line)]
    if not first_errors:
        return "\n".join(last)
    return "\n".join(["(first errors)", *first_errors[:errors], "(last lines)", *last])


def spawn_detached(argv: list[str], log: Path, env: dict | None = None, cwd: Path | None = None,
                   preexec_fn=None) -> subprocess.Popen:
    """Start a server in its own session so it outlives this command and a Ctrl-C here
    (`preexec_fn` runs in the child before exec: e.g. to die with its parent)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True, preexec_fn=preexec_fn)
