"""The lab pattern: solution is the single source, exercises are generated, fresh, and fail with hints."""
from __future__ import annotations

from pathlib import Path

import importlib.util
import inspect
import signal
import time

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from brokerlab.labs import catalogue, faults
from brokerlab.labs.build import build_exercise, exercise_path, solutions, strip_solution
from brokerlab.labs.checking import REVEAL_AFTER, Lab, LabCheckFailed, call, decided, expect

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = solutions()


def test_strip_solution_keeps_hints_and_indentation():
    source = "def f(x):\n    # BEGIN SOLUTION\n    # HINT: double it\n    y = x * 2\n    return y\n    # END SOLUTION\n"
    assert strip_solution(source) == (
        "def f(x):\n    # HINT: double it\n    raise NotImplementedError(\"your code here\")")


def test_a_design_decision_is_left_to_the_learner():
    source = 'RESCUED_GO_TO = "front"  # DECISION: "front" or "back"\nx = 1'
    assert strip_solution(source) == 'RESCUED_GO_TO = None  # DECISION: "front" or "back"\nx = 1'
    with pytest.raises(LabCheckFailed) as failed:
        decided(None, "RESCUED_GO_TO", ("front", "back"), "why it matters")
    assert failed.value.function == "RESCUED_GO_TO" and "front" in failed.value.what
    assert decided("back", "RESCUED_GO_TO", ("front", "back"), "") == "back"


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


# --- the check API: blame, the learner's line, progressive hints -------------------------

demo = Lab("demo")


@demo.check("double", idea="IDEA: twice the input", code="CODE: return x * 2")
def check_double(double):
    got = call(double, 21)
    expect(got == 42, f"double(21) returned {got!r}", "twice 21 is 42", blame="double")


def helper_not_written(x):
    raise NotImplementedError("your code here")


def double_via_unwritten_helper(x):
    return helper_not_written(x) * 2


def double_that_crashes(x):
    values = {}
    return values[x]


def test_a_crash_names_the_learners_function_and_line():
    demo.reset()
    with pytest.raises(LabCheckFailed) as failed:
        check_double(double_that_crashes)
    assert failed.value.function == "double_that_crashes"
    assert failed.value.where.endswith("return values[x]") and "KeyError" in failed.value.what
    assert "IDEA" in failed.value.hint and failed.value.more is None


def test_a_function_that_never_returns_is_stopped_and_named():
    def consume_forever():
        while True:                      # the learner forgot the bound
            pass

    def sleeps():
        time.sleep(30)                   # a blocking wait is interrupted too

    for function in (consume_forever, sleeps):
        started = time.monotonic()
        with pytest.raises(LabCheckFailed) as failure:
            call(function, seconds=0.5)
        assert time.monotonic() - started < 5
        assert f"{function.__name__} had not returned after 0 s" in str(failure.value)
        assert failure.value.function == function.__name__


def test_the_time_limit_keeps_an_alarm_set_before_it():
    signal.setitimer(signal.ITIMER_REAL, 50)      # as pytest-timeout's signal method does
    try:
        assert call(lambda: 42, seconds=5) == 42
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 40 < left <= 50                     # re-armed with what was left, not cancelled
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def test_not_written_blames_the_function_that_is_not_written():
    demo.reset()
    with pytest.raises(LabCheckFailed, match="helper_not_written is not written yet") as failed:
        check_double(double_via_unwritten_helper)
    assert failed.value.function == "helper_not_written"


def test_code_level_help_comes_on_request_or_after_repeated_failures(capsys):
    demo.reset()
    for attempt in range(1, REVEAL_AFTER + 1):
        with pytest.raises(LabCheckFailed) as failed:
            check_double(lambda x: x + 2)
        assert failed.value.what == "double(21) returned 23" and failed.value.function == "double"
        assert (failed.value.more == "CODE: return x * 2") == (attempt == REVEAL_AFTER)
        assert ("More help" in str(failed.value)) == (attempt == REVEAL_AFTER)
    demo.hint(2)
    assert "CODE: return x * 2" in capsys.readouterr().out
    check_double(lambda x: x * 2)
    assert demo.parts["double"].failures == 0


def test_a_stopped_broker_is_reported_as_such_not_as_the_learners_bug():
    from brokerlab.endpoints import Endpoints
    from brokerlab.errors import BrokerUnavailable
    from brokerlab.clients import redis_client

    stopped = Endpoints.from_env(offset=9)  # a port set nothing listens on

    def fetch(x):
        return redis_client(ep=stopped).ping()

    with pytest.raises(BrokerUnavailable):
        call(fetch, 1)


def test_an_injected_crash_passes_through():
    def handler(x):
        raise faults.SimulatedCrash("boom")

    with pytest.raises(faults.SimulatedCrash):
        call(handler, 1, passthrough=(faults.SimulatedCrash,))


def test_a_crashing_redis_client_dies_between_two_commands(r):
    from brokerlab import run_name

    key = run_name("lab-crash")
    try:
        _, commands = faults.count_commands(lambda c: (c.rpush(key, "a"), c.rpush(key, "b")))
        assert commands == ["RPUSH", "RPUSH"]
        doomed = faults.crashing_redis(1)
        doomed.rpush(key, "c")
        with pytest.raises(faults.SimulatedCrash):
            doomed.rpush(key, "d")
        with pytest.raises(faults.SimulatedCrash):  # dead stays dead
            doomed.get(key)
        pipe = faults.crashing_redis(1)
        with pipe.pipeline() as p:  # one MULTI/EXEC is one step: it all happens or none of it
            p.rpush(key, "e").rpush(key, "f").execute()
        assert r.lrange(key, 0, -1) == ["a", "b", "c", "e", "f"]
        batched = faults.crashing_redis(1)
        with batched.pipeline(transaction=False) as p:  # a plain pipeline is not atomic: it dies half-sent
            with pytest.raises(faults.SimulatedCrash):
                p.rpush(key, "g").rpush(key, "h").execute()
        assert r.lrange(key, 0, -1) == ["a", "b", "c", "e", "f", "g"]
    finally:
        r.delete(key)


def test_an_interrupting_redis_client_lets_a_peer_run_between_two_commands(r):
    from brokerlab import run_name

    key = run_name("lab-race")
    try:
        racing = faults.interrupting_redis(1, lambda: r.rpush(key, "peer"))
        racing.rpush(key, "mine-1")
        racing.rpush(key, "mine-2")  # the peer runs just before this one, once
        racing.rpush(key, "mine-3")
        racing.close()
        assert r.lrange(key, 0, -1) == ["mine-1", "peer", "mine-2", "mine-3"]
    finally:
        r.delete(key)


def test_in_a_notebook_a_crash_shows_the_learners_own_line():
    nb = new_notebook(cells=[
        new_code_cell("from brokerlab.labs import redis_lab"),
        new_code_cell("def ack(r, queue, worker, task):\n    ratio = 1 / 0\n    return ratio"),
        new_code_cell("redis_lab.check_ack(ack)"),
    ])
    NotebookClient(nb, timeout=60, allow_errors=True).execute()
    error = next(o for o in nb.cells[2].outputs if o.output_type == "error")
    shown = "\n".join(error.traceback)
    assert error.ename == "LabCheckFailed"
    assert "✘ ack:" in shown and "at" in shown and "ack, line 2: ratio = 1 / 0" in shown, shown


# --- every lab meets issue 13: a design decision, a stretch goal, a catalogue of wrong implementations ------

def _lab_modules():
    import pkgutil

    import brokerlab.labs as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name.endswith("_lab"):
            yield importlib.import_module(f"brokerlab.labs.{info.name}")


def _catalogues() -> list:
    wrongs = []
    for path in sorted((ROOT / "tests").glob("test_*lab*.py")):
        spec = importlib.util.spec_from_file_location(f"_catalogue_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        wrongs += [w for w in getattr(module, "CATALOGUE", []) if isinstance(w, catalogue.Wrong)]
    return wrongs


LAB_MODULES = list(_lab_modules())


def test_every_solution_leaves_a_decision_and_has_a_stretch_goal():
    for solution in SOLUTIONS:
        nb = nbformat.read(solution, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "# DECISION" in code, f"{solution.name}: no `NAME = ...  # DECISION` line"
        stretch = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                        and c.source.lstrip().startswith("#") and "stretch" in c.source.splitlines()[0].lower()), None)
        assert stretch is not None, f"{solution.name}: no markdown heading naming the stretch goal"
        assert any("check" in c.metadata.get("tags", []) for c in nb.cells[stretch:]), (
            f"{solution.name}: the stretch goal has no check cell of its own")
        assert "# HINT:" not in code, f"{solution.name}: code-level hints belong in the check's `code`, not the cell"


@pytest.mark.parametrize("module", LAB_MODULES, ids=[m.__name__.rsplit(".", 1)[1] for m in LAB_MODULES])
def test_every_lab_check_has_a_catalogue_of_wrong_implementations(module):
    assert isinstance(getattr(module, "lab", None), Lab), f"{module.__name__}: no `lab = Lab(...)` (see /work/coord/labs.md)"
    checks = [f for _, f in inspect.getmembers(module, callable) if getattr(f, "lab", None) is module.lab]
    wrongs = [w for w in _catalogues() if getattr(w.check, "lab", None) is module.lab]
    assert len(wrongs) >= 10, f"{module.__name__}: {len(wrongs)} wrong implementations in tests/, at least 10 needed"
    untested = [f.__name__ for f in checks if not any(w.check is f for w in wrongs)]
    assert not untested, f"{module.__name__}: checks with no wrong implementation in a CATALOGUE: {untested}"
