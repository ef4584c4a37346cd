"""The Celery app of notebooks 03a (tasks, results, retries, acknowledgement, canvas) and
03b (routing, limits, prefetch, pools, beat).

The notebook's kernel imports this module to *send* tasks; each `celery worker` the
notebook starts imports it to *run* them.  Both see the same per-run names: make_app
puts this run's id in the environment, which the workers inherit.

Side effects go to a journal in Redis (brokerlab.celery_journal), so the notebook can
count what really ran, where and when.
"""
import os
import time
from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded

from brokerlab import celery_journal as journal
from brokerlab.celery_app import make_app

# Redis re-delivers a task nobody acknowledged after this many seconds (Celery's default is
# 3600).  Short here so the lesson can watch it happen; see the ETA pitfall for the price.
VISIBILITY_TIMEOUT = 5

app = make_app("lesson03", per_run=True, visibility_timeout=VISIBILITY_TIMEOUT)
RUN = app.course_run                        # this run's id: the default queue is named after it
CRASH_QUEUE = f"{RUN}.payments"             # the queue of the crash demonstration
IMAGES_QUEUE = f"{RUN}.images"              # a named queue that only some workers consume
BEAT_JOURNAL = f"{RUN}:beat"                # where the periodic task records who sent it

app.conf.update(
    # routing by task name: resize goes to the images queue, everything else to this run's default queue
    task_routes={"celery_apps.lesson03.resize": {"queue": IMAGES_QUEUE}},
    # celery beat: one periodic task every second; BEAT_NAME tells the two beats of the pitfall apart
    beat_schedule={"heartbeat": {"task": "celery_apps.lesson03.heartbeat", "schedule": timedelta(seconds=1),
                                 "args": (BEAT_JOURNAL, os.environ.get("BEAT_NAME", "beat"))}},
)


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
    """Fails `failures` times with a transient error, then succeeds; retried with 1, 2, 4 s of backoff.
    Each attempt records the ETA its message carried (None for the first): the wait Celery planned."""
    journal.note(log, "attempt", task=self, eta=self.request.eta)
    if self.request.retries < failures:
        raise GatewayTimeout(f"attempt {self.request.retries + 1} timed out")
    return f"succeeded on attempt {self.request.retries + 1}"


@app.task(bind=True, autoretry_for=(GatewayTimeout,), retry_backoff=1, retry_jitter=False, max_retries=2)
def give_up(self, log):
    """Always fails: after max_retries=2 retries (1 s, 2 s) Celery gives up and the task fails."""
    journal.note(log, "attempt", task=self)
    raise GatewayTimeout("the gateway is down")


@app.task(bind=True, autoretry_for=(GatewayTimeout,), retry_backoff=1, max_retries=2)
def jittery(self, log):
    """Always fails; Celery's default full jitter picks each delay at random in [0, 1 * 2**n] s."""
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


# --- 03b: routing, ordering, rate limits, time limits, pools, beat --------------------------

@app.task(bind=True)
def resize(self, log, image):
    journal.note(log, "resized", task=self, image=image)
    return image


@app.task(bind=True)
def numbered(self, log, n, seconds):
    journal.note(log, "started", task=self, n=n)
    time.sleep(seconds)
    journal.note(log, "finished", task=self, n=n)
    return n


@app.task(bind=True, rate_limit="4/s")  # at most 4 starts per second, in each worker
def tick(self, log):
    journal.note(log, "tick", task=self)


@app.task(bind=True, soft_time_limit=0.5, time_limit=1.5)
def limited(self, log, seconds, clean_up=True):
    """Sleeps `seconds`.  The soft limit raises SoftTimeLimitExceeded inside the task (a chance to clean
    up); a task that ignores it is killed by the hard limit."""
    try:
        time.sleep(seconds)
        return "finished"
    except SoftTimeLimitExceeded:
        journal.note(log, "soft limit", task=self)
        if clean_up:
            return "cleaned up after the soft limit"
        time.sleep(seconds)  # ignoring the soft limit: the hard limit kills this process
        return "never reached"


@app.task(bind=True)
def burn(self, log, loops):
    """CPU-bound: pure Python arithmetic, which holds the GIL."""
    started, cpu = time.time(), time.thread_time()
    total = 0
    for i in range(loops):
        total += i * i % 7
    journal.note(log, "burned", task=self, started=started, cpu=time.thread_time() - cpu)
    return total


@app.task(bind=True)
def nap(self, log, seconds):
    """I/O-bound: waiting (a sleep stands in for a network call), which releases the GIL."""
    started = time.time()
    time.sleep(seconds)
    journal.note(log, "napped", task=self, started=started)


@app.task(bind=True)
def heartbeat(self, log, sender):
    journal.note(log, "beat", task=self, sender=sender)


@app.task(bind=True, acks_late=True)
def slow_late(self, log, label, seconds):
    """`slow`, acknowledged after it returns: while it runs, a prefetch-1 worker takes nothing else."""
    journal.note(log, "started", task=self, label=label)
    time.sleep(seconds)
    return label
