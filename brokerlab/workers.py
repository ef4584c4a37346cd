"""Bounded background workers: threads or processes that share one deadline and are always joined.

    with bl.BoundedWorkers(seconds=10) as workers:
        for name in ("alice", "bob"):
            workers.thread(consume, queue, name, until=workers.running)
    # here every worker has finished: the with-block joined them all

A worker that is still alive at the deadline is stopped (the `running` flag
turns false; a process is terminated) and WorkerTimeout is raised, so a cell
can never hang.  An exception inside a thread is re-raised in the cell.
Processes are started with the 'spawn' method, so their target must be
importable (defined in a module, not in a notebook cell).
"""
from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any, Callable

from .errors import WorkerTimeout

GRACE = 3.0  # seconds a worker gets to notice `running()` turned false before it counts as hung


class BoundedWorkers:
    def __init__(self, seconds: float, name: str = "workers"):
        self.seconds = seconds
        self.name = name
        self.deadline = time.monotonic() + seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._processes: list[multiprocessing.Process] = []
        self.results: dict[str, Any] = {}
        self.errors: dict[str, BaseException] = {}

    # --- what workers look at -------------------------------------------------------------
    def running(self) -> bool:
        """True until the deadline passes or stop() is called: the condition of every worker loop."""
        return not self._stop.is_set() and time.monotonic() < self.deadline

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def stop(self) -> None:
        self._stop.set()

    # --- starting ------------------------------------------------------------------------
    def thread(self, target: Callable, *args, name: str | None = None, **kwargs) -> threading.Thread:
        name = name or f"{self.name}-{len(self._threads) + 1}"

        def run() -> None:
            try:
                self.results[name] = target(*args, **kwargs)
            except BaseException as exc:  # kept and re-raised by join()
                self.errors[name] = exc

        thread = threading.Thread(target=run, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def process(self, target: Callable, *args, name: str | None = None) -> multiprocessing.Process:
        """Start `target(*args)` in a separate process, e.g. a worker you will kill to simulate a crash."""
        name = name or f"{self.name}-p{len(self._processes) + 1}"
        process = multiprocessing.get_context("spawn").Process(target=target, args=args, name=name, daemon=True)
        self._processes.append(process)
        process.start()
        return process

    # --- ending ---------------------------------------------------------------------------
    def alive(self) -> list[str]:
        return [t.name for t in self._threads if t.is_alive()] + [p.name for p in self._processes if p.is_alive()]

    def wait(self, until: Callable[[], bool] | None = None, poll: float = 0.05) -> bool:
        """Wait until `until()` is true or every worker has ended, at most until the deadline."""
        while self.running():
            if until is not None and until():
                return True
            if not self.alive():
                return until() if until is not None else True
            time.sleep(poll)
        return bool(until()) if until is not None else not self.alive()

    def join(self) -> None:
        """Join every worker by the deadline; then stop the rest; raise if any hung or failed.

        At the deadline `running()` turns false and threads get GRACE seconds to notice it;
        a process still alive at the deadline is killed.  Either counts as hung."""
        for worker in [*self._threads, *self._processes]:
            worker.join(self.remaining())
        self.stop()
        for thread in self._threads:
            thread.join(GRACE)
        hung = self.alive()
        for process in self._processes:
            if process.is_alive():
                process.kill()
                process.join(GRACE)
        if hung:
            raise WorkerTimeout(f"{', '.join(hung)} still running {GRACE:.0f} s after the {self.seconds:g} s "
                                "deadline; processes were killed. Bound every loop with `while workers.running()`.")
        if self.errors:
            raise next(iter(self.errors.values()))

    def __enter__(self) -> "BoundedWorkers":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.stop()  # the cell failed: end the workers quickly, keep the original error
            try:
                self.join()
            except Exception:
                pass
            return
        self.join()
