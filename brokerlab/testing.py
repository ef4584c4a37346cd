"""`python -m brokerlab test`: the whole suite, on its own stack, in two phases.

1. Disruptive tests (marked `disruptive`, or using the `frozen` fixture: they stop or
   SIGSTOP a broker of the test stack) run alone, one after another.
2. Everything else runs in parallel with pytest-xdist (and, beside it, a "cluster lane" runs one
   after another whatever starts a 3-node cluster: tests marked `cluster`, notebook 07): unit tests, then every lesson
   notebook and every lab solution, run twice in a row by nbval (`--notebooks-twice`,
   see pytest_plugin; a second run catches notebooks that do not clean up). `--dist
   loadgroup` with one group per file keeps both runs of a notebook on one worker, in order
   (and puts everything that starts a 3-node cluster in one group); notebooks use per-run names, so
   different notebooks can share the stack at the same time.

The stack is started once before phase 1 and stopped after phase 2 (when this command
started it); afterwards the command fails if anything still listens on its ports.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

from .endpoints import TEST_PORT_OFFSET, Endpoints
from .stack.paths import REPO_ROOT
from .stack.procs import port_owner

# Parallel pytest workers for phase 2.  Notebook cells mostly wait on brokers and
# workers, so three share two cores well; BROKERLAB_TEST_WORKERS overrides it.
DEFAULT_WORKERS = 3


def notebook_targets() -> list[str]:
    notebooks = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
    solutions = sorted((REPO_ROOT / "labs").glob("*_solution.ipynb"))
    return [str(p.relative_to(REPO_ROOT)) for p in notebooks + solutions]


def cluster_notebooks() -> list[str]:
    from .pytest_plugin import starts_clusters

    return [t for t in notebook_targets() if starts_clusters(REPO_ROOT / t)]


def parallel_phase_args(workers: str) -> list[str]:
    """Phase 2: unit tests and every notebook twice in a row, spread over `workers` processes
    (all but what starts 3-node clusters: that is the cluster lane's)."""
    clusters = set(cluster_notebooks())
    return ["tests", *[t for t in notebook_targets() if t not in clusters], "-m", "not disruptive and not cluster",
            "--nbval-lax", "--notebooks-twice", "-n", workers, "--dist", "loadfile", "-rfE", "--durations=20"]


def cluster_lane_args() -> list[str]:
    """Beside phase 2, one process runs, one after another, every test and notebook that starts a 3-node
    cluster (marked `cluster`): two clusters never start at once, nor meet each other's leftovers."""
    return ["tests", *cluster_notebooks(), "-m", "cluster and not disruptive", "--nbval-lax", "--notebooks-twice",
            "-p", "no:xdist", "-rfE", "--durations=10"]


def listening(ep: Endpoints) -> list[str]:
    """Processes listening on the test stack's ports."""
    found = []
    for name, port in ep.ports.items():
        owner = port_owner(port)
        if owner:
            found.append(f"port {port} ({name}): pid {owner[0]} {owner[1][:80]}")
    return found


def leftovers(ep: Endpoints) -> list[str]:
    """What a finished run must not leave: the test stack's processes and running scratch servers."""
    from .stack.scratch import leftovers as scratch_leftovers

    return listening(ep) + [f"scratch server {s}" for s in scratch_leftovers()]


def _pytest(args: list[str], env: dict) -> int:
    command = [sys.executable, "-m", "pytest", *args]
    print("brokerlab: " + " ".join(command[2:]), flush=True)
    return subprocess.call(command, cwd=REPO_ROOT, env=env)


def run_test_suite(extra: list[str]) -> int:
    from . import stack

    offset = int(os.environ.get("BROKERLAB_PORT_OFFSET", TEST_PORT_OFFSET))
    ep = Endpoints.from_env(offset=offset)
    running_before = bool(listening(ep))
    workers = os.environ.get("BROKERLAB_TEST_WORKERS", str(DEFAULT_WORKERS))
    env = {**os.environ, "BROKERLAB_PORT_OFFSET": str(offset)}
    started = time.monotonic()
    os.environ["BROKERLAB_PORT_OFFSET"] = str(offset)
    stack.up(ep)
    print(f"brokerlab: test stack up after {time.monotonic() - started:.0f} s", flush=True)
    try:
        phase1 = time.monotonic()
        serial = _pytest(["tests", "-m", "disruptive", "-rfE", *extra], env)
        print(f"brokerlab: phase 1 (disruptive tests, serial) took {time.monotonic() - phase1:.0f} s", flush=True)
        phase2 = time.monotonic()
        lane_log = REPO_ROOT / "build" / "test-logs" / "cluster-lane.log"
        lane_log.parent.mkdir(parents=True, exist_ok=True)
        with open(lane_log, "w") as log:
            print("brokerlab: cluster lane (beside phase 2; its output follows phase 2's): pytest "
                  + " ".join(cluster_lane_args()), flush=True)
            lane = subprocess.Popen([sys.executable, "-m", "pytest", *cluster_lane_args(), *extra], cwd=REPO_ROOT,
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                parallel = _pytest([*parallel_phase_args(workers), *extra], env)
                print(f"brokerlab: phase 2 (everything else, {workers} workers) took {time.monotonic() - phase2:.0f} s",
                      flush=True)
                lane_code = lane.wait()
            finally:
                if lane.poll() is None:
                    lane.kill()
                    lane.wait()
        print(lane_log.read_text(), flush=True)
        print(f"brokerlab: phase 2 with the cluster lane took {time.monotonic() - phase2:.0f} s", flush=True)
    finally:
        if not running_before and not os.environ.get("BROKERLAB_KEEP_STACK"):
            stack.down(ep)
    if serial == 5:  # no disruptive test selected (e.g. `-- -k notebook`): nothing failed there
        serial = 0
    if lane_code == 5:  # likewise for the cluster lane
        lane_code = 0
    code = serial or parallel or lane_code
    print(f"brokerlab: test suite took {time.monotonic() - started:.0f} s (stack start and stop included)")
    if not running_before and not os.environ.get("BROKERLAB_KEEP_STACK"):
        left = leftovers(ep)
        if left:
            print("brokerlab: the test run left processes behind:\n  " + "\n  ".join(left), file=sys.stderr)
            return code or 1
    return code
