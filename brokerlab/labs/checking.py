"""What every lab check uses: a failure that carries a hint, and a success line."""
from __future__ import annotations


class LabCheckFailed(AssertionError):
    """A lab check failed; the message says what was observed on the broker and gives a hint."""

    def __init__(self, what: str, hint: str):
        self.what = what
        self.hint = hint
        super().__init__(f"{what}\nHint: {hint}")

    def _render_traceback_(self):
        return [f"\x1b[31m✘ Not yet:\x1b[0m {self.what}", f"\x1b[33mHint:\x1b[0m {self.hint}"]


def check(condition: bool, what: str, hint: str) -> None:
    if not condition:
        raise LabCheckFailed(what, hint)


def passed(message: str) -> None:
    print(f"✔ {message}")


def call_learner(function, *args, hint: str, **kwargs):
    """Call the learner's function; turn 'not written yet' and crashes into a hinted failure."""
    try:
        return function(*args, **kwargs)
    except NotImplementedError:
        raise LabCheckFailed(f"{function.__name__} is not written yet", hint) from None
    except LabCheckFailed:
        raise
    except Exception as exc:
        raise LabCheckFailed(f"{function.__name__} raised {type(exc).__name__}: {exc}", hint) from exc
