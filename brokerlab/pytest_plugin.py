"""pytest plugin (enabled in pyproject.toml): the test suite runs against its own broker stack.

- The suite uses port set 100 (BROKERLAB_PORT_OFFSET), so a learner's stack on the
  default ports keeps running untouched.
- BROKERLAB_QUICK=1 shrinks message counts; BROKERLAB_HEADLESS=1 makes widgets print text.
- The stack is started once per session when it is not already up, and stopped at
  the end if this session started it: nothing is left running after the run.
Notebook kernels started by nbval inherit these variables.
"""
from __future__ import annotations

import os

from .endpoints import TEST_PORT_OFFSET

_started_here = False


def pytest_configure(config):
    os.environ.setdefault("BROKERLAB_PORT_OFFSET", str(TEST_PORT_OFFSET))
    os.environ.setdefault("BROKERLAB_QUICK", "1")
    os.environ.setdefault("BROKERLAB_HEADLESS", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_sessionstart(session):
    global _started_here
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
