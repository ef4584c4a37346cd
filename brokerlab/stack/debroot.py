"""Redis and RabbitMQ from a private Debian 13 ("trixie") root, entered with bubblewrap.

Debian 12's own packages are Redis 7.0 and RabbitMQ 3.10 (end of life); the course
teaches Redis 8.0 and RabbitMQ 4.0, the versions docker-compose.yml pins.  So the
launcher builds a minimal trixie root once (debootstrap, signature-checked by
Debian's archive keyring), checks that it holds exactly the pinned package versions
(ROOT_PINS), and runs the brokers from it with `bwrap`:

- the root is bound at / in a private mount namespace that vanishes with its last
  process: nothing is ever mounted on the host, so a kill cannot leave a mount behind;
- no pid namespace: pid files hold host pids, so `stack down`, SIGKILL and SIGSTOP demos work;
- the network is shared: the brokers listen on the host's 127.0.0.1.

A root is complete only when its marker (written last, holding the pins) matches
ROOT_PINS.  It is built in a `.partial` folder that is renamed when done, inside
its own mount and pid namespaces that die with the launcher (so a killed build
leaves neither mounts nor processes), and a root built from other pins is replaced.

BROKERLAB_NATIVE_BROKERS=host is the documented way out where no root can be built
(not root, no apt): the host's own redis-server and rabbitmq-server, versions printed.
"""
from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import StackError
from .paths import home

SUITE = "trixie"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The packages the root is built for, at the exact Debian versions the course was tested
# with (the mirror's trixie at the time).  redis-server and rabbitmq-server are what the
# course runs; erlang-base is the VM RabbitMQ runs on.  docker-compose.yml pins the same
# upstream versions (tests/test_versions.py keeps them in step).
ROOT_PINS = {
    "redis-server": "5:8.0.2-3+deb13u2",
    "redis-tools": "5:8.0.2-3+deb13u2",
    "rabbitmq-server": "4.0.5-6+deb13u2",
    "erlang-base": "1:27.3.4.1+dfsg-1+deb13u3",
}
INCLUDE = ("redis-server", "rabbitmq-server")
# The recipe's own version: bump it when the way the root is built changes.
RECIPE = 1
MARKER = ".brokerlab-root-complete"
HOST_TOOLS = {"debootstrap": "debootstrap", "bwrap": "bubblewrap"}

UPSTREAM = {"redis": "redis-server", "rabbitmq": "rabbitmq-server"}


def upstream_version(debian_version: str) -> str:
    """'5:8.0.2-3+deb13u1' -> '8.0.2': what the broker itself reports."""
    return debian_version.split(":", 1)[-1].rsplit("-", 1)[0].split("+")[0]


def pinned_versions() -> dict[str, str]:
    """{'redis': '8.0.2', 'rabbitmq': '4.0.5'}: the versions the root provides."""
    return {broker: upstream_version(ROOT_PINS[package]) for broker, package in UPSTREAM.items()}


def source() -> str:
    """'root' (default): the private trixie root; 'host': the host's own packages (fallback)."""
    value = os.environ.get("BROKERLAB_NATIVE_BROKERS", "root").strip().lower() or "root"
    if value not in ("root", "host"):
        raise StackError(f"BROKERLAB_NATIVE_BROKERS must be root or host, not {value!r}")
    return value


def root_id() -> str:
    text = json.dumps({"suite": SUITE, "pins": ROOT_PINS, "recipe": RECIPE}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def roots_dir() -> Path:
    return home() / "roots"


def root_path() -> Path:
    return roots_dir() / f"{SUITE}-{root_id()}"


def marker_content() -> str:
    return json.dumps({"suite": SUITE, "pins": ROOT_PINS, "recipe": RECIPE}, sort_keys=True) + "\n"


def is_complete(root: Path) -> bool:
    try:
        return (root / MARKER).read_text() == marker_content()
    except OSError:
        return False


def installed_versions(root: Path) -> dict[str, str]:
    """Package -> version, read from the root's dpkg database (no need to enter it)."""
    versions, package, status = {}, None, ""
    try:
        text = (root / "var/lib/dpkg/status").read_text(errors="replace")
    except OSError:
        return {}
    for line in text.splitlines() + [""]:
        if line.startswith("Package: "):
            package = line.split(": ", 1)[1]
        elif line.startswith("Status: "):
            status = line
        elif line.startswith("Version: ") and package and status.endswith(" installed"):
            versions[package] = line.split(": ", 1)[1]
        elif not line:
            package, status = None, ""
    return versions


# --- building ----------------------------------------------------------------------------

def ensure_root(quiet: bool = False) -> Path:
    """The complete root for the current pins, built first if needed (once; about a minute)."""
    root = root_path()
    if is_complete(root):
        return root
    roots_dir().mkdir(parents=True, exist_ok=True)
    with _build_lock():
        if is_complete(root):  # another launcher built it while we waited
            return root
        check_can_build()
        remove_stale_roots(keep=root)
        build(root, quiet=quiet)
    return root


@contextmanager
def _build_lock():
    with open(roots_dir() / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel even if this process is killed
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def way_out() -> str:
    return ("  Ways out: install Docker and run `BROKERLAB_STACK=docker python -m brokerlab stack up`,\n"
            "  or run the host's own redis-server and rabbitmq-server (older versions; the lessons that need\n"
            "  Redis 8 / RabbitMQ 4 may fail): `BROKERLAB_NATIVE_BROKERS=host python -m brokerlab stack up`.")


def check_can_build() -> None:
    """Explain, before anything is downloaded, why a root cannot be built here."""
    if os.geteuid() != 0:
        raise StackError("building the course's Debian 13 root (Redis 8.0, RabbitMQ 4.0) needs root "
                         "(debootstrap unpacks packages as root), and this is not root.\n"
                         "  Run `sudo python3 -m brokerlab stack up` once, or:\n" + way_out())
    missing = [package for tool, package in HOST_TOOLS.items() if not shutil.which(tool)]
    if missing:
        if not shutil.which("apt-get"):
            raise StackError(f"building the course's Debian 13 root needs {' and '.join(missing)}, and this "
                             "machine has no apt-get (not Debian/Ubuntu).\n" + way_out())
        from .native import apt_install

        apt_install(*missing)


def remove_stale_roots(keep: Path) -> None:
    """Delete half-built roots and roots built from other pins (unless a broker still runs from one)."""
    for path in roots_dir().glob(f"{SUITE}-*"):
        if path == keep or not path.is_dir():
            continue
        if ".partial" not in path.name and root_in_use(path):
            print(f"  (keeping {path.name}, built from older pins: a broker still runs from it; "
                  "`stack down` then `stack up` replaces it)", flush=True)
            continue
        why = "a half-built root" if ".partial" in path.name else "a root built from older pins"
        print(f"  removing {path.name} ({why})", flush=True)
        shutil.rmtree(path, ignore_errors=True)


def root_in_use(root: Path) -> bool:
    """True when a process was started from this root (bwrap's command line names it)."""
    needle = str(root).encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "cmdline").read_bytes():
                    return True
            except OSError:
                continue
    return False


def mirror() -> str:
    return os.environ.get("BROKERLAB_DEBIAN_MIRROR", DEFAULT_MIRROR)


def build(root: Path, quiet: bool = False) -> None:
    staging = root.with_name(f"{root.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    log = roots_dir() / f"{root.name}.build.log"
    debs = roots_dir() / "debs"  # downloaded packages, so a rebuild does not download again
    debs.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"  building the private Debian 13 root for Redis {pinned_versions()['redis']} and RabbitMQ "
              f"{pinned_versions()['rabbitmq']} (once; about a minute, ~380 MB) in {root} ...", flush=True)
    started = time.monotonic()
    command = [
        # own mount namespace: debootstrap's /proc and /sys mounts in the target vanish with it;
        # own pid namespace: every process of the build dies with it (--kill-child)
        "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
        "debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", f"--cache-dir={debs}",
        SUITE, str(staging), mirror(),
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   preexec_fn=_die_with_parent)
        try:
            code = process.wait(timeout=1800)
        except BaseException:  # Ctrl-C or a timeout: the build's namespace goes with it
            process.kill()
            process.wait()
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if code != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-12:])
        raise StackError(f"building the Debian 13 root failed (debootstrap exit {code}; mirror {mirror()}).\n"
                         f"Last lines of {log}:\n{tail}\n"
                         "  The half-built root was deleted; fix the cause (network, disk space) and run "
                         "`python -m brokerlab stack up` again.\n" + way_out())
    installed = installed_versions(staging)
    wrong = {p: installed.get(p, "missing") for p, v in ROOT_PINS.items() if installed.get(p) != v}
    if wrong:
        shutil.rmtree(staging, ignore_errors=True)
        raise StackError(
            "the Debian mirror's trixie now has other versions than the course pins: "
            + ", ".join(f"{p} {v} (pinned {ROOT_PINS[p]})" for p, v in wrong.items())
            + ".\n  Update ROOT_PINS in brokerlab/stack/debroot.py and the image tags in docker-compose.yml "
              "together (tests/test_versions.py checks both), or:\n" + way_out())
    (staging / MARKER).write_text(marker_content())  # last: only now is the root complete
    staging.rename(root)
    if not quiet:
        size = disk_usage(root)
        print(f"  root ready in {time.monotonic() - started:.0f} s, {size / 2**20:.0f} MiB on disk", flush=True)


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the launcher dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def disk_usage(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


# --- running -----------------------------------------------------------------------------

class Runtime:
    """Turns a broker's command line into one that runs from the root (or unchanged on the host)."""

    def __init__(self, kind: str, root: Path | None):
        self.kind, self.root = kind, root

    def wrap(self, argv: list[str], die_with_parent: bool = False) -> list[str]:
        if self.kind == "host":
            return argv
        state = str(home())
        return ["bwrap", "--bind", str(self.root), "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                "--bind", state, state, "--unshare-ipc", "--unshare-uts", "--hostname", "localhost",
                *(["--die-with-parent"] if die_with_parent else []), "--", *argv]

    def describe(self) -> str:
        return f"Debian 13 root {self.root}" if self.kind == "root" else "the host's own packages"


_runtime: Runtime | None = None


def runtime(build: bool = True) -> Runtime:
    """The runtime the native brokers use; builds the root on first use (unless build=False)."""
    global _runtime
    kind = source()
    if kind == "root" and not build:
        return Runtime("root", root_path())
    if _runtime is not None and _runtime.kind == kind and (kind == "host" or is_complete(_runtime.root)):
        return _runtime
    if kind == "host":
        _runtime = Runtime("host", None)
        print("  BROKERLAB_NATIVE_BROKERS=host: running the host's own packages: "
              + ", ".join(f"{b} {v}" for b, v in host_versions().items()), flush=True)
    else:
        if not shutil.which("bwrap"):
            check_can_build()
        _runtime = Runtime("root", ensure_root())
    return _runtime


def host_versions() -> dict[str, str]:
    found = {}
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10).stdout
        match = re.search(r"v=(\S+)", out)
        found["redis"] = match.group(1) if match else "unknown"
    except OSError:
        found["redis"] = "not installed"
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"], capture_output=True,
                             text=True, timeout=10).stdout
        found["rabbitmq"] = upstream_version(out) if out else "not installed"
    except OSError:
        found["rabbitmq"] = "unknown (no dpkg)"
    return found
