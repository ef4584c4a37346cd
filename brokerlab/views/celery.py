"""TaskTimeline: Celery tasks as the workers report them, one row per task, its states over time.

Fed by Celery's own monitoring feed, the event stream (what `celery events` and Flower read):
workers publish task-received / started / succeeded / failed / retried events, the sending
process publishes task-sent (only with task_send_sent_event, which celery_app.make_app turns on).  A background thread runs an `app.events.Receiver` (bounded:
it stops when the view stops, checking every 0.2 s) and keeps only the events of the
workers it watches and of tasks this process sent, because other runs' workers share the
broker.  Each refresh can also ask the watched workers through `inspect()` what they hold.

    with TaskTimeline(app, workers=[worker]) as timeline:    # subscribes before anything is sent
        results = [slow.delay(...) for ...]
        timeline.watch(seconds=10, until=timeline.all_done(len(results)))
    timeline.model["tasks"][results[0].id]["states"]          # [("SENT", 0.0), ("RECEIVED", 0.01), ...]
"""
from __future__ import annotations

import bisect
import os
import re
import threading
import time

from .base import LiveView

FINAL = ("SUCCESS", "FAILURE", "REVOKED", "REJECTED")
# event type -> the state Celery names it (celery.states)
STATES = {"task-sent": "SENT", "task-received": "RECEIVED", "task-started": "STARTED",
          "task-succeeded": "SUCCESS", "task-failed": "FAILURE", "task-retried": "RETRY",
          "task-revoked": "REVOKED", "task-rejected": "REJECTED"}


_RUN_PREFIXED = re.compile(r"^bl-.+-\d{9,11}-[0-9a-f]{4}-(?P<role>.+)$")


def worker_label(nodename: str) -> str:
    """'bl-lesson03-1795412456-2219-main@host' -> 'main': the worker's role, without the run's name and the host."""
    name = nodename.split("@")[0]
    match = _RUN_PREFIXED.match(name)
    return match["role"] if match else name


class TaskTimeline(LiveView):
    """model = {"tasks": {task_id: {"name", "args", "state", "worker", "retries", "states": [(state, t)],
                                   "waited": s from sent to started, "ran": s from started to the end}},
               "counts": {state: n}, "events": n kept, "ignored": n of other runs,
               "workers": {nodename: {"active": n, "reserved": n}}  (from inspect(), when asked)}
    Times t are seconds since the timeline started (wall clock, comparable between processes)."""

    title = "Celery tasks (event stream)"
    columns = ("task", "state", "worker", "retries", "waited s", "ran s")
    bar_columns = ("retries", "waited s", "ran s")
    interval = 0.2
    chart = {"waiting": lambda m: m["counts"].get("waiting", 0), "running": lambda m: m["counts"].get("running", 0),
             "done": lambda m: m["counts"].get("done", 0)}
    max_rows = 24  # the table stays readable; the model keeps every task

    def __init__(self, app, workers=(), inspect_every: float | None = None):
        super().__init__()
        self.app = app
        self.nodenames = {getattr(w, "nodename", w) for w in workers}
        self.inspect_every = inspect_every
        self.t0 = time.time()
        self._tasks: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._events = 0
        self._ignored = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._subscribed = threading.Event()
        self._probe = f"{os.getpid()}-{id(self)}-{time.time()}"
        self._thread: threading.Thread | None = None
        self._receiver = None
        self._error: BaseException | None = None
        self._inspected_at = 0.0
        self._workers: dict = {}

    # --- the event stream -------------------------------------------------------------------
    def start(self, timeout: float = 5.0) -> "TaskTimeline":
        """Subscribe to the event stream (before sending tasks: Redis does not keep events for late readers)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._receive, name="task-timeline", daemon=True)
            self._thread.start()
            deadline = time.monotonic() + timeout
            if self._ready.wait(timeout) and self._error is None:
                # kombu subscribes lazily, on its first wait for events: probe until our own event comes back.
                # The probe takes the path task-sent events take (the app's task producer), so that path is
                # known to work before the first task is sent.
                dispatcher = self.app.events.Dispatcher(enabled=False)
                while not self._subscribed.is_set() and time.monotonic() < deadline and self._error is None:
                    with self.app.producer_or_acquire() as producer:
                        dispatcher.publish("brokerlab-probe", {"probe": self._probe}, producer)
                    self._subscribed.wait(0.2)
            if not self._subscribed.is_set():
                self.stop()
                raise TimeoutError(f"the Celery event stream did not answer within {timeout:g} s"
                                   + (f": {self._error}" if self._error else ""))
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._receiver is not None:
            self._receiver.should_stop = True  # checked between waits of at most 0.2 s
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> "TaskTimeline":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.refresh()

    def watch_worker(self, worker) -> None:
        self.nodenames.add(getattr(worker, "nodename", worker))

    def _receive(self) -> None:
        try:
            with self.app.connection_for_read() as connection:
                receiver = self.app.events.Receiver(connection, handlers={"*": self._on_event})
                original = receiver.on_consume_ready

                def ready(*args, **kwargs):
                    original(*args, **kwargs)
                    self._ready.set()

                receiver.on_consume_ready = ready
                receiver.should_stop = self._stop.is_set()
                self._receiver = receiver
                for _ in receiver.consume(limit=None, safety_interval=0.2, wakeup=False):
                    if self._stop.is_set():
                        break
        except BaseException as exc:  # shown by refresh(), not lost in a thread
            self._error = exc
            self._ready.set()

    def _mine(self, event: dict) -> bool:
        if event["type"] == "task-sent":
            return event.get("pid") == os.getpid()
        return event.get("hostname") in self.nodenames

    def _on_event(self, event: dict) -> None:
        kind = event.get("type", "")
        if kind == "brokerlab-probe" and event.get("probe") == self._probe:
            self._subscribed.set()
            return
        if kind not in STATES:
            return
        if not self._mine(event):
            with self._lock:
                self._ignored += 1
            return
        state, at = STATES[kind], event.get("timestamp", time.time()) - self.t0
        with self._lock:
            self._events += 1
            task = self._tasks.setdefault(event["uuid"], {
                "name": "", "args": "", "state": "", "worker": "", "retries": 0, "states": [],
                "sent": None, "started": None, "finished": None})
            if event.get("name"):
                task["name"] = event["name"].rsplit(".", 1)[-1]
            if event.get("args") and not task["args"]:
                task["args"] = event["args"]
            if kind != "task-sent":
                task["worker"] = event.get("hostname", "")
            # events come from two processes, so their clocks race: the sender stamps task-sent just after
            # publishing, and a fast worker can stamp task-received before that.  A task is sent first.
            if state == "SENT" and task["states"]:
                at = min(at, task["states"][0][0])
            bisect.insort(task["states"], (round(at, 3), state != "SENT", state))
            if state == "SENT":
                task["sent"] = at
            elif state == "RECEIVED" and task["sent"] is None:
                task["sent"] = at
            elif state == "STARTED":
                task["started"] = at
            elif state == "RETRY":
                task["retries"] += 1
                task["started"] = None
            if state in FINAL:
                task["finished"] = at
            # events can arrive out of order (two processes publish them): a final state stays final
            if not (task["state"] in FINAL and state not in FINAL):
                task["state"] = state

    # --- the model ----------------------------------------------------------------------------
    def snapshot(self) -> dict:
        if self._error is not None:
            raise self._error
        with self._lock:
            tasks = {}
            for task_id, t in self._tasks.items():
                waited = (t["started"] - t["sent"]) if t["started"] is not None and t["sent"] is not None else None
                ran = (t["finished"] - t["started"]) if t["finished"] is not None and t["started"] is not None \
                    else None
                tasks[task_id] = {"name": t["name"], "args": t["args"], "state": t["state"], "worker": t["worker"],
                                  "retries": t["retries"], "states": [(s, at) for at, _, s in t["states"]],
                                  "waited": None if waited is None else round(waited, 3),
                                  "ran": None if ran is None else round(ran, 3)}
            events, ignored = self._events, self._ignored
        counts: dict[str, int] = {}
        for t in tasks.values():
            counts[t["state"]] = counts.get(t["state"], 0) + 1
            phase = "done" if t["state"] in FINAL else "running" if t["state"] == "STARTED" else "waiting"
            counts[phase] = counts.get(phase, 0) + 1
        if self.inspect_every is not None and time.monotonic() - self._inspected_at >= self.inspect_every:
            self._workers = self.inspect_workers()
            self._inspected_at = time.monotonic()
        return {"tasks": tasks, "counts": counts, "events": events, "ignored": ignored,
                "workers": dict(self._workers)}

    def inspect_workers(self) -> dict:
        """Ask the watched workers (only them) how many tasks they run and hold: Celery's remote control."""
        if not self.nodenames:
            return {}
        inspector = self.app.control.inspect(destination=sorted(self.nodenames), timeout=1.0)
        active, reserved = inspector.active() or {}, inspector.reserved() or {}
        return {name: {"active": len(active.get(name, [])), "reserved": len(reserved.get(name, []))}
                for name in sorted(self.nodenames)}

    def all_done(self, expected: int):
        """A condition for watch(): `expected` tasks have reached a final state."""
        return lambda: self.model and self.model["counts"].get("done", 0) >= expected

    def states_of(self, task_id: str) -> list[str]:
        return [state for state, _ in self.model["tasks"].get(task_id, {}).get("states", [])]

    # --- rendering ----------------------------------------------------------------------------
    def heading(self, model: dict) -> str:
        if not model:
            return self.title
        counts = model["counts"]
        parts = [f"{counts.get(k, 0)} {k}" for k in ("waiting", "running", "done")]
        workers = "; ".join(f"{worker_label(n)}: {w['active']} active, {w['reserved']} reserved"
                            for n, w in model.get("workers", {}).items())
        return f"{self.title}: {', '.join(parts)}" + (f" · inspect(): {workers}" if workers else "")

    def rows(self, model: dict) -> list[tuple]:
        if not model:
            return []
        rows = []
        for task_id, t in list(model["tasks"].items())[: self.max_rows]:
            label = f"{t['name']}{t['args']}" if len(f"{t['name']}{t['args']}") <= 26 else t["name"]
            rows.append((label, t["state"], worker_label(t["worker"]),
                         t["retries"], "" if t["waited"] is None else t["waited"],
                         "" if t["ran"] is None else t["ran"]))
        hidden = len(model["tasks"]) - self.max_rows
        if hidden > 0:
            rows.append((f"… {hidden} more", "", "", "", "", ""))
        return rows

    def gantt(self, title: str | None = None, figsize=(6.5, 2.8)):
        """Each task as a horizontal bar over time: grey while waiting, blue while running, a red tick for
        each retry; a matplotlib figure shown under the running cell."""
        import matplotlib.pyplot as plt

        tasks = list(self.model.get("tasks", {}).items())
        fig, ax = plt.subplots(figsize=(figsize[0], max(figsize[1], 0.28 * len(tasks) + 1)))
        for row, (task_id, t) in enumerate(tasks):
            states = t["states"]
            for (state, start), (_, end) in zip(states, states[1:] + [(None, states[-1][1])]):
                color = {"STARTED": "#1f6feb", "RETRY": "#d1242f"}.get(state, "#afb8c1")
                if end > start:
                    ax.barh(row, end - start, left=start, color=color, height=0.6)
                if state == "RETRY":
                    ax.plot([start], [row], marker="|", color="#d1242f", markersize=12)
            ax.text(states[-1][1], row, f" {t['state'].lower()}", va="center", fontsize=7)
        ax.set_yticks(range(len(tasks)), [f"{t['name']}{t['args']}"[:28] for _, t in tasks], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("seconds since the timeline started (grey: waiting, blue: running, red: retry)")
        ax.set_title(title or self.title, fontsize=10)
        fig.tight_layout()
        plt.show()
        return fig
