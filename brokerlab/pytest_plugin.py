"""pytest plugin (enabled in pyproject.toml): the test suite runs against its own broker stack.

- The suite uses port set 100 (BROKERLAB_PORT_OFFSET), so a learner's stack on the
  default ports keeps running untouched.
- BROKERLAB_QUICK=1 shrinks message counts; BROKERLAB_HEADLESS=1 makes widgets print text.
- The stack is started once per session when it is not already up, and stopped at
  the end if this session started it: nothing is left running after the run.  Under
  pytest-xdist only the controlling process does this; its workers find the stack up.
- Tests and notebooks that start 3-node clusters are marked `cluster` (notebooks by their metadata
  {"brokerlab": {"starts_clusters": true}}): `python -m brokerlab test` runs them one after another in a
  lane of their own, beside the parallel run, so two clusters never start at once.
- Tests that stop or freeze a broker of the shared test stack are marked `disruptive`
  (tests using the `frozen` fixture are marked automatically): `python -m brokerlab test`
  runs them alone, before everything else runs in parallel.
Notebook kernels started by nbval inherit these variables.
"""
from __future__ import annotations

import functools
import os

import pytest

from .endpoints import TEST_PORT_OFFSET

_started_here = False


def _is_xdist_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_addoption(parser):
    parser.addoption("--notebooks-twice", action="store_true",
                     help="brokerlab: run every collected notebook twice in a row (with nbval), each in a fresh kernel")


@pytest.hookimpl(trylast=True)  # after nbval's own collector, so run 1 comes first
def pytest_collect_file(file_path, parent):
    """The second run of a notebook, as a node of its own (`notebooks/x.ipynb::run2::Cell 0`).

    pytest-xdist cannot tell apart items with the same id, so `--keep-duplicates` loses the
    second run under it; a distinct id keeps it.  The id still starts with the file's path,
    so `--dist loadfile` runs every run of one notebook on one worker, one after another."""
    opt = parent.config.option
    if not getattr(opt, "notebooks_twice", False) or not (opt.nbval or opt.nbval_lax) or file_path.suffix != ".ipynb":
        return None
    from nbval.plugin import IPyNbFile

    base = IPyNbFile.from_parent(parent, path=file_path).nodeid
    return IPyNbFile.from_parent(parent, path=file_path, nodeid=f"{base}::run2")


def pytest_configure(config):
    os.environ.setdefault("BROKERLAB_PORT_OFFSET", str(TEST_PORT_OFFSET))
    os.environ.setdefault("BROKERLAB_QUICK", "1")
    os.environ.setdefault("BROKERLAB_HEADLESS", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    config.addinivalue_line(
        "markers", "cluster: starts a 3-node scratch cluster; run in a lane of their own, one after another")
    config.addinivalue_line(
        "markers", "disruptive: stops or freezes a broker of the shared test stack; run alone, never in parallel")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "frozen" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.disruptive)
        if item.get_closest_marker("cluster") is None and starts_clusters(item.path):
            item.add_marker(pytest.mark.cluster)


@functools.lru_cache(maxsize=None)
def starts_clusters(path) -> bool:
    """A notebook that starts a 3-node cluster profile says so in its metadata:
    {"brokerlab": {"starts_clusters": true}} (the test command gives those a lane of their own)."""
    if path is None or path.suffix != ".ipynb":
        return False
    import json

    return bool(json.loads(path.read_text()).get("metadata", {}).get("brokerlab", {}).get("starts_clusters"))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist starts its workers
def pytest_sessionstart(session):
    global _started_here
    if _is_xdist_worker(session.config) or session.config.option.collectonly:
        return  # --collect-only runs nothing: starting (and leaving) a stack for it surprised us once
    from . import stack
    from .health import probe

    if all(r.ok for r in probe().values()):
        return
    stack.up()
    _started_here = True


def pytest_sessionfinish(session, exitstatus):
    if _started_here and not os.environ.get("BROKERLAB_KEEP_STACK"):
        from . import stack

        stack.down()
