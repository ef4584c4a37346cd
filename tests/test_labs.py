"""The lab pattern: solution is the single source, exercises are generated, fresh, and fail with hints."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from brokerlab.labs.build import build_exercise, exercise_path, solutions, strip_solution

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = solutions()


def test_strip_solution_keeps_hints_and_indentation():
    source = "def f(x):\n    # BEGIN SOLUTION\n    # HINT: double it\n    y = x * 2\n    return y\n    # END SOLUTION\n"
    assert strip_solution(source) == (
        "def f(x):\n    # HINT: double it\n    raise NotImplementedError(\"your code here\")")


def test_unclosed_solution_block_is_an_error():
    with pytest.raises(ValueError):
        strip_solution("# BEGIN SOLUTION\nx = 1\n")


def test_every_lab_has_a_solution_with_solution_blocks_and_checks():
    assert SOLUTIONS
    for solution in SOLUTIONS:
        nb = nbformat.read(solution, as_version=4)
        assert any("# BEGIN SOLUTION" in c.source for c in nb.cells), solution.name
        assert any("check" in c.metadata.get("tags", []) for c in nb.cells), solution.name


@pytest.mark.parametrize("solution", SOLUTIONS, ids=[s.name for s in SOLUTIONS])
def test_exercise_is_up_to_date(solution):
    exercise = exercise_path(solution)
    assert exercise.exists(), f"run `python -m brokerlab exercises` to create {exercise.name}"
    assert exercise.read_text() == build_exercise(solution), (
        f"{exercise.name} is stale: run `python -m brokerlab exercises`")


@pytest.mark.parametrize("solution", SOLUTIONS, ids=[s.name for s in SOLUTIONS])
def test_untouched_exercise_fails_every_check_with_a_hint(solution):
    nb = nbformat.read(exercise_path(solution), as_version=4)
    NotebookClient(nb, timeout=120, allow_errors=True, resources={"metadata": {"path": str(solution.parent)}}).execute()
    checks = [c for c in nb.cells if "check" in c.metadata.get("tags", [])]
    assert checks
    for cell in checks:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors, f"check cell passed on the untouched exercise:\n{cell.source}"
        assert errors[0].ename == "LabCheckFailed" and "Hint:" in errors[0].evalue, errors[0].evalue
    others = [c for c in nb.cells if c.cell_type == "code" and "check" not in c.metadata.get("tags", [])]
    failing = [c.source for c in others if any(o.output_type == "error" for o in c.outputs)]
    assert not failing, f"non-check cells must run in the exercise too: {failing}"
