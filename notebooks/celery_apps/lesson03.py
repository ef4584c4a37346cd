"""The Celery app of notebook 03a (tasks, results, retries, acknowledgement, canvas).

The notebook's kernel imports this module to *send* tasks; each `celery worker` the
notebook starts imports it to *run* them.  Both see the same per-run names: make_app
puts this run's id in the environment, which the workers inherit.

Side effects go to a journal in Redis (brokerlab.celery_journal), so the notebook can
count what really ran, where and when.
"""
import time

from celery import chord  # noqa: F401  (re-exported for the notebook's canvas section)

from brokerlab import celery_journal as journal
from brokerlab.celery_app import make_app

# Redis re-delivers a task nobody acknowledged after this many seconds (Celery's default is
# 3600).  Short here so the lesson can watch it happen; see the ETA pitfall for the price.
VISIBILITY_TIMEOUT = 5

app = make_app("lesson03", per_run=True, visibility_timeout=VISIBILITY_TIMEOUT)
RUN = app.course_run                        # this run's id: the default queue is named after it
CRASH_QUEUE = f"{RUN}.payments"             # the queue of the crash demonstration


@app.task
def add(a, b):
    return a + b


@app.task
def xsum(numbers):
    return sum(numbers)


@app.task
def fail(reason):
    raise ValueError(reason)


@app.task
def nested_get(a, b):
    """The anti-pattern: wait for another task's result inside a task."""
    return add.delay(a, b).get(timeout=5)


# --- retries ---------------------------------------------------------------------------

class GatewayTimeout(ConnectionError):
    """A transient error: the kind worth retrying."""


@app.task(bind=True, autoretry_for=(GatewayTimeout,), retry_backoff=1, retry_jitter=False, max_retries=3)
def flaky(self, log, failures):
    """Fails `failures` times with a transient error, then succeeds; retried with 1, 2, 4 s of backoff."""
    journal.note(log, "attempt", task=self)
    if self.request.retries < failures:
        raise GatewayTimeout(f"attempt {self.request.retries + 1} timed out")
    return f"succeeded on attempt {self.request.retries + 1}"


@app.task(bind=True, autoretry_for=(GatewayTimeout,), retry_backoff=2, max_retries=3)
def jittery(self, log):
    """Always fails; Celery's default full jitter picks each delay at random in [0, 2 * 2**n] s."""
    journal.note(log, "attempt", task=self)
    raise GatewayTimeout("still down")


# --- acknowledgement -----------------------------------------------------------------------

def _charge(task, log, payment, release, charge_first):
    """A payment step that waits (bounded) for the notebook's go-ahead, so the notebook can kill
    the worker at a known point: before the charge (charge_first=False) or after it."""
    if charge_first:
        journal.note(log, "charged", task=task, payment=payment)
    journal.note(log, "started", task=task, payment=payment)
    journal.wait_released(release, seconds=60)
    if not charge_first:
        journal.note(log, "charged", task=task, payment=payment)
    return payment


@app.task(bind=True)  # Celery's default: acknowledged when the worker takes it, before it runs
def charge_early_ack(self, log, payment, release, charge_first=False):
    return _charge(self, log, payment, release, charge_first)


@app.task(bind=True, acks_late=True, reject_on_worker_lost=True)  # acknowledged after it returns
def charge_late_ack(self, log, payment, release, charge_first=False):
    return _charge(self, log, payment, release, charge_first)


@app.task(bind=True, acks_late=True)  # late ack, but a pool child's death still counts as done
def charge_late_ack_only(self, log, payment, release, charge_first=False):
    return _charge(self, log, payment, release, charge_first)


@app.task(bind=True, acks_late=True)
def fails_late(self, log):
    """acks_late and an exception: acknowledged all the same (a failure is not a crash)."""
    journal.note(log, "attempt", task=self)
    raise ValueError("bad input")


@app.task(bind=True)
def stamp(self, log, label):
    """Records when it ran: for countdown/ETA."""
    journal.note(log, "ran", task=self, label=label)
    return label


@app.task(bind=True)
def slow(self, log, label, seconds):
    journal.note(log, "started", task=self, label=label)
    time.sleep(seconds)
    return label
