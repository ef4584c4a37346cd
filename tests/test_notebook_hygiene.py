"""House rules every stored notebook keeps."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from brokerlab.endpoints import BASE_PORTS
from brokerlab.testing import cluster_lane_args, notebook_targets, parallel_phase_args

ROOT = REPO_ROOT = Path(__file__).resolve().parents[1]
ALL_NOTEBOOKS = sorted(ROOT.glob("notebooks/*.ipynb")) + sorted(ROOT.glob("labs/*.ipynb"))
LESSONS_AND_SOLUTIONS = [p for p in ALL_NOTEBOOKS if not p.name.endswith("_exercise.ipynb")]


def ids(paths):
    return [p.relative_to(ROOT).as_posix() for p in paths]


def code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_there_are_notebooks():
    assert any(p.parent.name == "notebooks" for p in ALL_NOTEBOOKS)
    assert any(p.parent.name == "labs" for p in ALL_NOTEBOOKS)


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=ids(ALL_NOTEBOOKS))
def test_stored_without_outputs(path):
    dirty = [i for i, c in enumerate(code_cells(path)) if c.outputs or c.execution_count]
    assert not dirty, f"code cells {dirty} have stored outputs: clear them before committing"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=ids(ALL_NOTEBOOKS))
def test_first_cell_checks_the_stack(path):
    first = code_cells(path)[0].source
    assert "import brokerlab" in first and "require(" in first


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=ids(ALL_NOTEBOOKS))
def test_no_hard_coded_ports_or_nbval_comments(path):
    for cell in code_cells(path):
        for port in BASE_PORTS.values():
            assert not re.search(rf"(?<!\d){port}(?!\d)", cell.source), f"port {port} hard-coded in {path.name}"
        assert "NBVAL_" not in cell.source, "use cell tags (nbval-ignore-output, raises-exception), not comments"
        assert "while True" not in cell.source, "unbounded loop: bound it by count and deadline"


def test_the_suite_runs_every_lesson_and_solution_twice():
    targets = notebook_targets()
    assert sorted(targets) == sorted(ids(LESSONS_AND_SOLUTIONS))
    assert not [t for t in targets if t.endswith("_exercise.ipynb")]  # exercises are meant to fail
    args, lane = parallel_phase_args("2"), cluster_lane_args()
    assert "--notebooks-twice" in args and args[args.index("--dist") + 1] == "loadfile" and "--notebooks-twice" in lane
    assert sorted(t for t in args + lane if t in targets) == sorted(targets)  # each notebook in one of the two
    # What pytest really collects with those options: every notebook, then its second run.
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "--nbval-lax",
                                "--notebooks-twice", *targets], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=120).stdout.splitlines()
    for path in targets:
        first, second = f"{path}::Cell 0", f"{path}::run2::Cell 0"
        assert first in collected and second in collected, path
        assert collected.index(first) < collected.index(second), path
