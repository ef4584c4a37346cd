"""A small, bounded Jepsen-style checker: what did the broker acknowledge, what came back, what was lost.

One job: keep the history of a run and judge it.  The broker-specific parts (how to publish, how
to read back, which process to kill) stay with the caller; the checker records

- every message id the broker *acknowledged* (a Kafka delivery report without error, a RabbitMQ
  publisher confirm, a Redis reply), and every id whose publish failed or was never answered;
- every fault it injected (signal, target, pid, time since the run started, how many acks came before);
- and, from the ids read back by consumers, reports acknowledged / received / lost / duplicated.

    history = History("kafka acks=all")
    for i in range(n):                      # bounded by count (and the caller's deadline)
        ...publish message i...; history.acked(i)   # only when the broker confirmed it
        if i == n // 2:
            history.inject(leader_pid, signal.SIGKILL, "kafka node 2 (leader of p0)")
    report = history.check(ids_read_back)
    report.lost       # acknowledged but never read back: the number the lesson is about

A report with `lost == 0` says something only if a fault was really injected: `report.faulted`
is False when none was, and `Report.require_fault()` raises then, so "lost 0" cannot come from
a quiet run.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Hashable, Iterable

__all__ = ["Fault", "History", "Report"]


@dataclass(frozen=True)
class Fault:
    """One injected fault, as it happened."""

    signal: str          # "SIGKILL", "SIGSTOP", "SIGCONT", or a description such as "failover"
    target: str          # what was hit, chosen on purpose: "kafka node 2 (leader of topic-0)"
    pid: int | None      # the host pid that received the signal
    at: float            # seconds since the run started (time.monotonic based)
    utc: str             # wall-clock time, ISO 8601
    acked_before: int    # acknowledgements recorded before the fault

    def __str__(self) -> str:
        pid = f" pid {self.pid}" if self.pid else ""
        return f"{self.signal} {self.target}{pid} at t={self.at:.2f} s (after {self.acked_before} acks)"


@dataclass
class Report:
    """The verdict of one run."""

    name: str
    attempted: int
    acknowledged: int
    failed: int            # publishes the broker refused or never answered (not acknowledged: may or may not exist)
    received: int          # distinct ids read back
    lost: int              # acknowledged, not read back
    duplicated: int        # ids read back more than once
    unacknowledged_received: int  # read back although never acknowledged (a publish whose ack was lost)
    faults: list[Fault]
    seconds: float         # duration of the publishing phase
    lost_ids: list = field(default_factory=list)
    healthy_rate: float | None = None  # acknowledgements per second measured before any fault (the setting's cost)
    notes: dict = field(default_factory=dict)  # what else the experiment observed (History.note)

    @property
    def faulted(self) -> bool:
        return bool(self.faults)

    @property
    def acks_per_second(self) -> float:
        return self.acknowledged / self.seconds if self.seconds > 0 else 0.0

    def require_fault(self) -> "Report":
        """Raise unless a fault was injected during this run (a "lost 0" of a quiet run proves nothing)."""
        if not self.faults:
            raise AssertionError(f"{self.name}: no fault was injected, so its loss count proves nothing")
        return self

    def row(self) -> dict:
        """One row of a summary table."""
        return {"run": self.name, "attempted": self.attempted, "acknowledged": self.acknowledged,
                "failed": self.failed, "received": self.received, "lost": self.lost,
                "duplicated": self.duplicated,
                "acks/s before the fault": round(self.healthy_rate) if self.healthy_rate else None,
                "fault": "; ".join(str(f) for f in self.faults) or "none"}

    def __str__(self) -> str:
        return (f"{self.name}: {self.acknowledged}/{self.attempted} acknowledged, {self.received} received, "
                f"lost {self.lost}, duplicated {self.duplicated}; faults: "
                + ("; ".join(str(f) for f in self.faults) or "none"))


class History:
    """The record of one run.  Thread-safe: delivery callbacks may record from another thread."""

    def __init__(self, name: str):
        self.name = name
        self.started = time.monotonic()
        self.finished: float | None = None
        self._lock = threading.Lock()
        self._acked: dict[Hashable, float] = {}
        self._failed: dict[Hashable, str] = {}
        self._attempted: set[Hashable] = set()
        self.faults: list[Fault] = []
        self.healthy_rate: float | None = None  # set by the experiment: acks/s while nothing was broken
        self.notes: dict = {}  # observations of the experiment beside the counts (a new leader, an ISR, an error)

    # --- the producer side ---------------------------------------------------------------
    def attempt(self, msg_id: Hashable) -> None:
        with self._lock:
            self._attempted.add(msg_id)

    def acked(self, msg_id: Hashable) -> None:
        """The broker acknowledged `msg_id` (call only on a real acknowledgement)."""
        with self._lock:
            self._attempted.add(msg_id)
            self._acked.setdefault(msg_id, time.monotonic() - self.started)
            self._failed.pop(msg_id, None)

    def failed(self, msg_id: Hashable, error: object = "") -> None:
        """Publishing `msg_id` raised, was refused, or timed out: not acknowledged."""
        with self._lock:
            self._attempted.add(msg_id)
            if msg_id not in self._acked:
                self._failed[msg_id] = str(error)[:200]

    @property
    def acknowledged(self) -> set:
        with self._lock:
            return set(self._acked)

    @property
    def errors(self) -> dict:
        with self._lock:
            return dict(self._failed)

    def note(self, key: str, value: object) -> None:
        """Record an observation the counts do not hold (e.g. "leader after the kill": 2); it goes into the report."""
        with self._lock:
            self.notes[key] = value

    def done_publishing(self) -> None:
        """Mark the end of the publishing phase (acks/s is measured up to here)."""
        self.finished = time.monotonic()

    # --- faults ---------------------------------------------------------------------------
    def record_fault(self, what: str, target: str, pid: int | None = None) -> Fault:
        """Record a fault injected by other means (e.g. a ScratchServer.kill() that also waits)."""
        with self._lock:
            fault = Fault(what, target, pid, time.monotonic() - self.started,
                          datetime.now(timezone.utc).isoformat(timespec="milliseconds"), len(self._acked))
            self.faults.append(fault)
        return fault

    def inject(self, pid: int, sig: int, target: str) -> Fault:
        """Send `sig` (SIGKILL, SIGSTOP, SIGCONT) to `pid` and record it."""
        if not pid:
            raise ValueError(f"no pid to signal for {target}")
        fault = self.record_fault(signal.Signals(sig).name, target, pid)
        os.kill(pid, sig)
        return fault

    # --- the verdict ----------------------------------------------------------------------
    def check(self, received_ids: Iterable[Hashable]) -> Report:
        """Compare what the consumers read back with what the broker acknowledged."""
        counts = Counter(received_ids)
        with self._lock:
            acked = set(self._acked)
            lost = sorted(acked - counts.keys(), key=str)
            end = self.finished if self.finished is not None else time.monotonic()
            return Report(
                name=self.name,
                attempted=len(self._attempted),
                acknowledged=len(acked),
                failed=len(self._failed),
                received=len(counts),
                lost=len(lost),
                duplicated=sum(1 for n in counts.values() if n > 1),
                unacknowledged_received=len(counts.keys() - acked),
                faults=list(self.faults),
                seconds=end - self.started,
                lost_ids=lost[:20],
                healthy_rate=self.healthy_rate,
                notes=dict(self.notes),
            )
