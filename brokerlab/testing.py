"""`python -m brokerlab test`: the whole suite in one pytest session.

Unit tests first, then every lesson notebook and every lab solution, each run
twice in a row by nbval (a second run catches notebooks that do not clean up).
"""
from __future__ import annotations

import subprocess
import sys

from .stack.paths import REPO_ROOT


def notebook_targets() -> list[str]:
    notebooks = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    solutions = sorted((REPO_ROOT / "labs").glob("*_solution.ipynb"))
    return [str(p.relative_to(REPO_ROOT)) for p in notebooks + solutions for _ in range(2)]


def run_test_suite(extra: list[str]) -> int:
    command = [sys.executable, "-m", "pytest", "tests", *notebook_targets(),
               "--nbval-lax", "--keep-duplicates", "-v", "-rfE", *extra]
    return subprocess.call(command, cwd=REPO_ROOT)
