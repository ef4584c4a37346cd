"""`python -m brokerlab test`: the whole suite in one pytest session.

Unit tests first, then every lesson notebook and every lab solution, each run
twice in a row by nbval (a second run catches notebooks that do not clean up).
Afterwards it checks that the test stack left nothing listening.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

from .endpoints import TEST_PORT_OFFSET, Endpoints
from .stack.paths import REPO_ROOT
from .stack.procs import port_owner


def notebook_targets() -> list[str]:
    notebooks = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
    solutions = sorted((REPO_ROOT / "labs").glob("*_solution.ipynb"))
    return [str(p.relative_to(REPO_ROOT)) for p in notebooks + solutions for _ in range(2)]


def leftovers(ep: Endpoints) -> list[str]:
    """Processes still listening on the test stack's ports."""
    found = []
    for name, port in ep.ports.items():
        owner = port_owner(port)
        if owner:
            found.append(f"port {port} ({name}): pid {owner[0]} {owner[1][:80]}")
    return found


def run_test_suite(extra: list[str]) -> int:
    offset = int(os.environ.get("BROKERLAB_PORT_OFFSET", TEST_PORT_OFFSET))
    ep = Endpoints.from_env(offset=offset)
    running_before = bool(leftovers(ep))
    command = [sys.executable, "-m", "pytest", "tests", *notebook_targets(),
               "--nbval-lax", "--keep-duplicates", "-rfE", "--durations=15", *extra]
    env = {**os.environ, "BROKERLAB_PORT_OFFSET": str(offset)}
    started = time.monotonic()
    code = subprocess.call(command, cwd=REPO_ROOT, env=env)
    print(f"brokerlab: test suite took {time.monotonic() - started:.0f} s (stack start and stop included)")
    if not running_before and not os.environ.get("BROKERLAB_KEEP_STACK"):
        left = leftovers(ep)
        if left:
            print("brokerlab: the test run left processes behind:\n  " + "\n  ".join(left), file=sys.stderr)
            return code or 1
    return code
