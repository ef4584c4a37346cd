"""The lab API every lab module uses: progressive hints, failures that blame the learner's
function and show the learner's own line, scratch names that checks must clean up.

    lab = Lab("01 · reliable queue")

    @lab.check("fetch", idea="...the idea, no code...", code="...code-level help, not the answer...")
    def check_fetch(fetch):
        queue = lab.scratch("lab01-fetch")                 # per-run name, recorded for the cleanup test
        task = call(fetch, r, queue, "w1", 0.5)           # crashes -> failure naming fetch and its line
        expect(task == "t0", f"fetch returned {task!r}, expected 't0'",
               "the oldest task is at the right end", blame="fetch")

Hints come in levels.  Level 0, the goal and the rules, is the exercise's own text.  A failure
shows what was observed and the idea for that failure (level 1).  Code-level help (level 2) only
when the learner asks, `hint(2)`, or after REVEAL_AFTER failures of the same check.  No level is
the answer.
"""
from __future__ import annotations

import functools
import linecache
import signal
import sys
import threading
import time
from contextlib import contextmanager
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BrokerUnavailable
from ..runs import run_name

REVEAL_AFTER = 3  # failures of one check before its code-level help is shown unasked
LEARNER_SECONDS = 60.0  # a learner's function that has not returned by then is stopped (a cell has no timeout)

_PACKAGE = str(Path(__file__).resolve().parents[1])
_LIBRARY_DIRS = tuple({p for p in (sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib",
                                                                          "platlib")) if p})


class LabCheckFailed(AssertionError):
    """A lab check failed.

    what      what the check observed on the broker (or in the learner's return value)
    hint      the idea for this failure (level 1): what to think about, not the code
    function  the learner's function the failure is about (or None)
    where     the learner's own line, 'apply_event, line 3: kind, amount = event.split()', when it raised
    more      code-level help, attached once the learner asked for it or failed REVEAL_AFTER times
    """

    def __init__(self, what: str, hint: str, function: str | None = None, where: str | None = None,
                 more: str | None = None):
        self.what, self.hint, self.function, self.where, self.more = what, hint, function, where, more
        super().__init__(self._text())

    def _lines(self) -> list[tuple[str, str]]:
        lines = [(f"✘ {self.function}:" if self.function else "✘ Not yet:", self.what)]
        if self.where:
            lines.append(("  at", self.where))
        lines.append(("Hint:", self.hint))
        if self.more:
            lines.append(("More help:", self.more))
        return lines

    def _text(self) -> str:
        return "\n".join(f"{label} {text}" for label, text in self._lines())

    def __str__(self) -> str:  # `more` may be attached after construction
        return self._text()

    def _render_traceback_(self):  # IPython: no Python traceback, just the message
        colours = {"Hint:": "33", "More help:": "36", "  at": "35"}
        return [f"\x1b[{colours.get(label, '31')}m{label}\x1b[0m {text}" for label, text in self._lines()]


def expect(condition, what: str, hint: str, blame: str | None = None) -> None:
    """Fail the running check with what was observed, the idea, and the learner's function to blame."""
    if not condition:
        raise LabCheckFailed(what, hint, function=blame)


def check(condition, what: str, hint: str, blame: str | None = None) -> None:
    """The older name of `expect`."""
    expect(condition, what, hint, blame)


def decided(value, name: str, choices, why: str):
    """The learner's design decision (a `NAME = ...  # DECISION` line): fail until it is one of `choices`."""
    expect(value in choices, f"{name} is {value!r}: the decision is yours, choose one of {list(choices)}",
           why, blame=name)
    return value


def passed(message: str) -> None:
    print(f"✔ {message}")


# --- the learner's own line ------------------------------------------------------------

def _is_learner_file(filename: str) -> bool:
    if filename.startswith("<frozen"):
        return False
    try:
        resolved = str(Path(filename).resolve())
    except (OSError, ValueError):
        return True
    return not (resolved.startswith(_PACKAGE) or resolved.startswith(_LIBRARY_DIRS))


def learner_frame(tb):
    """The deepest traceback entry in the learner's code (a notebook cell or a test module), or None."""
    found = None
    while tb is not None:
        if _is_learner_file(tb.tb_frame.f_code.co_filename):
            found = tb
        tb = tb.tb_next
    return found


def learner_line(exc: BaseException) -> tuple[str | None, str | None]:
    """(function name, 'name, line N: source') of the learner's deepest frame in exc's traceback."""
    entry = learner_frame(exc.__traceback__)
    if entry is None:
        return None, None
    code = entry.tb_frame.f_code
    source = linecache.getline(code.co_filename, entry.tb_lineno, entry.tb_frame.f_globals).strip()
    return code.co_name, f"{code.co_name}, line {entry.tb_lineno}: {source}" if source else \
        f"{code.co_name}, line {entry.tb_lineno}"


class _NoReturn(BaseException):
    """Raised inside a learner's function that ran past its time (a BaseException: `except Exception`
    in the learner's code cannot swallow it)."""


@contextmanager
def _time_limit(seconds: float):
    """Interrupt the main thread after `seconds` (SIGALRM): an endless loop or a blocking read without a
    timeout in the learner's code ends with a message instead of hanging the cell.  Elsewhere (another
    thread, no SIGALRM) it does nothing.  An alarm already set (pytest-timeout) is kept and re-armed."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def stop(signum, frame):
        raise _NoReturn()

    previous_handler = signal.signal(signal.SIGALRM, stop)
    previous_left, _ = signal.setitimer(signal.ITIMER_REAL, 0)
    if previous_left and previous_left < seconds:  # the earlier alarm comes first: let it fire as it would
        signal.setitimer(signal.ITIMER_REAL, previous_left)
        signal.signal(signal.SIGALRM, previous_handler)
        yield
        return
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_left:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, previous_left - (time.monotonic() - started)))


def call(function, *args, passthrough: tuple = (), seconds: float | None = None, **kwargs):
    """Call the learner's function.  'Not written yet' and crashes become a failure that names the
    function where it happened (not necessarily `function`: rebuild() calling an unwritten apply())
    and shows the learner's line.  Exceptions in `passthrough` (a crash the check injected) propagate.
    A function still running after `seconds` (default LEARNER_SECONDS) is stopped and named."""
    limit = LEARNER_SECONDS if seconds is None else seconds
    try:
        with _time_limit(limit):
            return function(*args, **kwargs)
    except _NoReturn as exc:
        name, where = learner_line(exc)
        name = name or getattr(function, "__name__", "your function")
        raise LabCheckFailed(f"{name} had not returned after {limit:.0f} s, so the check stopped it",
                             "A loop that never ends, or a blocking read without a timeout? Every wait needs a "
                             "bound (a count or a deadline). " + _current_idea(name),
                             function=name, where=where) from None
    except (LabCheckFailed, BrokerUnavailable):  # a stopped broker is not the learner's bug: its own message
        raise
    except passthrough:
        raise
    except NotImplementedError as exc:
        name, _ = learner_line(exc)
        name = name or getattr(function, "__name__", "your function")
        raise LabCheckFailed(f"{name} is not written yet", _current_idea(name), function=name) from None
    except Exception as exc:
        name, where = learner_line(exc)
        name = name or getattr(function, "__name__", "your function")
        raise LabCheckFailed(f"{name} raised {type(exc).__name__}: {_short(exc)}",
                             "Read the line above: that is where your code stopped. " + _current_idea(name),
                             function=name, where=where) from exc


def call_learner(function, *args, hint: str | None = None, **kwargs):
    """The older form of `call` (the hint is now the check's idea)."""
    return call(function, *args, **kwargs)


def _short(exc) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text[:300]


# --- labs, checks and hints ------------------------------------------------------------

@dataclass
class Part:
    """One check of a lab: its idea (level 1) and code-level help (level 2)."""
    name: str
    idea: str
    code: str
    failures: int = 0
    last: LabCheckFailed | None = None


_running: list[tuple["Lab", Part]] = []


def _current_idea(function_name: str) -> str:
    if not _running:
        return f"Write {function_name} as the exercise describes."
    lab, part = _running[-1]
    return part.idea


@dataclass
class Lab:
    """A lab's checks and its hint state (one per lab module; a notebook kernel runs one lab)."""
    title: str
    parts: dict[str, Part] = field(default_factory=dict)
    scratch_names: list[tuple[str, str]] = field(default_factory=list)
    last_part: str | None = None

    def check(self, name: str, idea: str, code: str):
        """Decorate a check function: failures are counted, the code-level help is attached after
        REVEAL_AFTER failures of this check, and `hint()` knows which check failed last."""
        part = self.parts.setdefault(name, Part(name, idea, code))

        def decorate(check_function):
            @functools.wraps(check_function)
            def run(*args, **kwargs):
                self.last_part = name
                _running.append((self, part))
                try:
                    result = check_function(*args, **kwargs)
                except LabCheckFailed as failure:
                    part.failures += 1
                    part.last = failure
                    if part.failures >= REVEAL_AFTER and failure.more is None:
                        failure.more = part.code
                    raise
                finally:
                    _running.pop()
                part.failures, part.last = 0, None
                return result

            run.part, run.lab = part, self
            return run
        return decorate

    def scratch(self, topic: str, kind: str = "name") -> str:
        """A per-run name for something a check creates; recorded so a test can prove it was removed.
        kind: "redis" (keys starting with it), "queue" (RabbitMQ), "topic", "group" (Kafka)."""
        name = run_name(topic)
        self.scratch_names.append((kind, name))
        return name

    def record(self, kind: str, name: str) -> None:
        """Record a name the check did not choose (a consumer group the learner's code created)."""
        self.scratch_names.append((kind, name))

    def hint(self, level: int = 1, check: str | None = None) -> None:
        """Show help for the check that failed last (or the named check): level 1 the idea,
        level 2 code-level help.  Neither is the answer."""
        name = check or self._last_failed() or self.last_part
        if name is None or name not in self.parts:
            print(f"Run a check first; then hint(2) helps with the one that failed. Checks: {', '.join(self.parts)}")
            return
        part = self.parts[name]
        if part.last is not None:
            print(f"Last failure of '{name}': {part.last.what}")
        if level <= 1:
            print(f"Hint ({name}): {part.idea}\nFor code-level help: hint(2)")
        else:
            print(f"More help ({name}):\n{part.code}")

    def _last_failed(self) -> str | None:
        if self.last_part and self.parts[self.last_part].last is not None:
            return self.last_part
        failed = [p.name for p in self.parts.values() if p.last is not None]
        return failed[-1] if failed else None

    def reset(self) -> None:
        """Forget failures and recorded names (tests call it between cases)."""
        for part in self.parts.values():
            part.failures, part.last = 0, None
        self.scratch_names.clear()
        self.last_part = None


__all__ = ["LabCheckFailed", "Lab", "Part", "REVEAL_AFTER", "call", "call_learner", "check", "decided", "expect",
           "learner_line", "passed"]
