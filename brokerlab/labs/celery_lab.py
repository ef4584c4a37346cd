"""Checks for lab 03: a flaky, non-idempotent payment task made safe.

The learner writes, in the notebook:

    def task_options() -> dict               # Celery task options: which errors to retry, backoff, bound, acks
    def charge_payment(task, gateway, payment_id, amount) -> str   # the task's body: one charge per payment
    ACK_MODE = "late"  # DECISION: "early" or "late"

The payment gateway (`Gateway`, state in Redis) is flaky on purpose: it times out, sometimes AFTER it charged the
card (the reply was lost), and it declines some cards.  Like real gateways it deduplicates on an idempotency key.

A Celery worker is a separate process that must import the task, so each check writes the learner's two functions
into a small module (`from brokerlab.labs.celery_lab import *` is all they can use, plus what they import inside),
imports it here and starts real `celery worker` processes on it.  Checks:

- `check_retries`: in this process with `.apply()` (Celery's eager mode, no broker): a declined card is tried once
  and fails; timeouts are retried, a bounded number of times; a timeout after a charge does not charge twice.
- `check_crash`: real workers: one is SIGKILLed while it holds two payments (one before the charge, one after);
  another takes over; a third payment times out twice (backoff measured).  Exactly one charge per payment.
- `check_double_submit` (stretch): the same payment sent twice (a double click) is charged once.
"""
from __future__ import annotations

import importlib
import inspect
import json
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from .. import celery_app
from ..clients import redis_client
from ..waiting import wait_for
from .checking import LabCheckFailed, Lab, call, decided, expect, passed

VISIBILITY_TIMEOUT = 3          # seconds before Redis re-delivers an unacknowledged payment (short for the lab)
MAX_CALLS = 12                  # the gateway stops a payment that is retried forever
lab = Lab("03 · a safe payment task")
hint = lab.hint
app = celery_app.make_app("lab03", per_run=True, visibility_timeout=VISIBILITY_TIMEOUT)


# --- the payment gateway -------------------------------------------------------------------------

class GatewayTimeout(ConnectionError):
    """The gateway did not answer in time.  Transient: worth retrying.  It may have charged the card anyway."""


class CardDeclined(Exception):
    """The card was declined.  Permanent: retrying will not help."""


class RetriedForever(BaseException):
    """Raised by the gateway after MAX_CALLS calls for one payment: the check stops an unbounded retry loop."""


class Gateway:
    """A payment gateway simulated in Redis (database 0, keys under `namespace`).

    charge(payment_id, amount, idempotency_key=None) -> charge id.  With an idempotency key it has seen before,
    it returns the earlier charge's id and charges nothing.  How it misbehaves for a payment is set by the check
    (`plan`): "ok", "declined", "timeout-after-charge:N" (the first N calls charge, then time out), "always-timeout",
    "hang-before" / "hang-after" (wait, bounded, for `release()`, before or after charging)."""

    def __init__(self, namespace: str, client=None):
        self.ns = namespace
        self.r = client or redis_client()

    # the API the learner calls
    def charge(self, payment_id: str, amount: int, idempotency_key: str | None = None) -> str:
        calls = self.r.rpush(f"{self.ns}:calls", json.dumps({"payment": payment_id, "at": time.time(),
                                                              "key": idempotency_key}))
        n = sum(1 for c in self._calls() if c["payment"] == payment_id)
        if n > MAX_CALLS:
            raise RetriedForever(f"{payment_id} was sent to the gateway {n} times")
        plan = self.r.hget(f"{self.ns}:plan", payment_id) or "ok"
        if plan == "declined":
            raise CardDeclined(f"card declined for payment {payment_id}")
        if plan == "always-timeout":
            raise GatewayTimeout(f"gateway timeout for payment {payment_id} (call {n})")
        if plan == "hang-before":
            self._hang(payment_id)
        charge_id = self._charge(payment_id, amount, idempotency_key, calls)
        if plan == "hang-after":
            self._hang(payment_id)
        if plan.startswith("timeout-after-charge:") and n <= int(plan.split(":")[1]):
            raise GatewayTimeout(f"gateway timeout for payment {payment_id} (call {n}): the reply was lost")
        return charge_id

    def _charge(self, payment_id, amount, key, call_number) -> str:
        charge_id = f"ch_{payment_id}_{call_number}"
        if key is not None:
            first = self.r.hsetnx(f"{self.ns}:keys", key, charge_id)
            if not first:
                return self.r.hget(f"{self.ns}:keys", key)  # seen before: the earlier charge, no new one
        self.r.rpush(f"{self.ns}:charges", json.dumps({"payment": payment_id, "amount": amount, "id": charge_id}))
        return charge_id

    def _hang(self, payment_id) -> None:
        self.r.sadd(f"{self.ns}:hanging", payment_id)
        deadline = time.monotonic() + 30
        while not self.r.exists(f"{self.ns}:release") and time.monotonic() < deadline:
            time.sleep(0.05)

    # what the checks look at
    def plan(self, **plans: str) -> None:
        self.r.hset(f"{self.ns}:plan", mapping=plans)

    def release(self) -> None:
        self.r.set(f"{self.ns}:release", 1)

    def hanging(self) -> set[str]:
        return self.r.smembers(f"{self.ns}:hanging")

    def _calls(self) -> list[dict]:
        return [json.loads(c) for c in self.r.lrange(f"{self.ns}:calls", 0, -1)]

    def calls(self, payment_id: str) -> list[float]:
        return [c["at"] for c in self._calls() if c["payment"] == payment_id]

    def charge_ids(self, payment_id: str) -> list[str]:
        return [c["id"] for c in map(json.loads, self.r.lrange(f"{self.ns}:charges", 0, -1))
                if c["payment"] == payment_id]

    def charges(self, payment_id: str) -> int:
        return len(self.charge_ids(payment_id))

    def delete(self) -> None:
        keys = list(self.r.scan_iter(match=f"{self.ns}*"))
        if keys:
            self.r.delete(*keys)


def build_task(charge_payment, task_options, module_dir: Path, tag: str):
    """Write the learner's two functions into a module a worker can import; return (module name, task)."""
    sources = []
    for function, canonical in ((task_options, "task_options"), (charge_payment, "charge_payment")):
        try:
            source = textwrap.dedent(inspect.getsource(function))
            # under the name the lab asks for, whatever the notebook (or a test) called it
            sources.append(source.replace(f"def {function.__name__}(", f"def {canonical}(", 1))
        except (OSError, TypeError):
            raise LabCheckFailed(f"the source of {function.__name__} cannot be read",
                                 "Define it with `def` in a notebook cell and run that cell.",
                                 function=function.__name__) from None
    name = f"lab03_{tag.replace('-', '_')}"
    (module_dir / f"{name}.py").write_text(
        "# written by brokerlab.labs.celery_lab from your notebook: the worker imports it\n"
        "from brokerlab.labs.celery_lab import *  # noqa: F401,F403\n"
        "from brokerlab.labs.celery_lab import app, make_payment_task\n\n"
        + "\n\n".join(sources)
        + f"\n\npay = make_payment_task(charge_payment, task_options, {name!r})\n")
    if str(module_dir) not in sys.path:
        sys.path.insert(0, str(module_dir))
    importlib.invalidate_caches()
    module = importlib.import_module(name)
    return name, module.pay


def make_payment_task(charge_payment, task_options, module_name: str):
    """Called inside the written module: the learner's body as a Celery task with the learner's options."""
    options = call(task_options)
    expect(isinstance(options, dict), f"task_options returned {options!r}, not a dict of Celery task options",
           "Return a dict such as {'autoretry_for': (...), ...}: the options of @app.task(...).", blame="task_options")

    def pay(self, namespace, payment_id, amount):
        return charge_payment(self, Gateway(namespace), payment_id, amount)

    pay.__name__ = "pay"
    return app.task(bind=True, name=f"{module_name}.pay", **options)(pay)


class _Scratch:
    """Everything one check creates: a gateway namespace, a module directory, workers; removed at the end."""

    def __init__(self, topic: str):
        self.ns = lab.scratch(topic, kind="redis")
        self.gateway = Gateway(self.ns)
        self.dir = Path(tempfile.mkdtemp(prefix="brokerlab-lab03-"))
        self.workers: list = []
        self.queue = f"{self.ns}.payments"

    def task(self, charge_payment, task_options):
        self.module, task = build_task(charge_payment, task_options, self.dir, self.ns.split("-", 2)[-1])
        return task

    def worker(self, name: str):
        handle = celery_app.start_worker(self.module, pool="threads", concurrency=2, queues=[self.queue],
                                         name=f"{self.ns}-{name}", cwd=self.dir)
        self.workers.append(handle)
        return handle

    def close(self) -> None:
        for handle in self.workers:
            handle.stop(warm=False)
        self.gateway.delete()
        self.gateway.r.close()
        celery_app.forget_run(app, prefixes=[self.ns])    # this run's results, this check's queue
        sys.modules.pop(getattr(self, "module", ""), None)
        if str(self.dir) in sys.path:
            sys.path.remove(str(self.dir))
        shutil.rmtree(self.dir, ignore_errors=True)


def _eager(task, ns, payment, amount=100):
    """Run the task here, now, with Celery's eager mode: retries happen at once, no broker involved."""
    try:
        return task.apply((ns, payment, amount))
    except RetriedForever:
        return None


# --- the checks ----------------------------------------------------------------------------------------

@lab.check("retries", idea="Retry only what can succeed later (a timeout), a bounded number of times, and make the "
                           "charge safe to repeat: a timeout may come after the gateway has charged.",
           code="task_options: autoretry_for=(GatewayTimeout,), max_retries=..., retry_backoff=..., "
                "retry_jitter=False. charge_payment: gateway.charge(payment_id, amount, idempotency_key=...) with a "
                "key that is the same for every attempt at this payment.")
def check_retries(charge_payment, task_options):
    scratch = _Scratch("lab03-retries")
    try:
        gateway, ns = scratch.gateway, scratch.ns
        gateway.plan(declined="declined", flaky="timeout-after-charge:2", down="always-timeout")
        task = scratch.task(charge_payment, task_options)

        ok = _eager(task, ns, "good")
        if ok is not None and ok.failed() and isinstance(ok.result, NotImplementedError):
            raise LabCheckFailed("charge_payment is not written yet", check_retries.part.idea,
                                 function="charge_payment")
        expect(ok is not None and ok.successful() and gateway.charges("good") == 1,
               f"a payment the gateway accepts at once ended {ok.state if ok else 'in a retry loop'} with "
               f"{gateway.charges('good')} charges" + (f" ({ok.result!r})" if ok is not None and ok.failed() else ""),
               "charge_payment should charge the card once through `gateway.charge` and return its charge id.",
               blame="charge_payment")
        expect(ok.result == gateway.charge_ids("good")[0],
               f"charge_payment returned {ok.result!r}, not the charge id the gateway gave "
               f"({gateway.charge_ids('good')[0]!r})",
               "Return what `gateway.charge` returns: the caller needs the charge id (for a refund, a receipt).",
               blame="charge_payment")

        declined = _eager(task, ns, "declined")
        tries = len(gateway.calls("declined"))
        expect(declined is not None and tries == 1,
               f"a declined card was sent to the gateway {tries} times",
               "CardDeclined is permanent: retrying a declined card only annoys the bank. Retry only GatewayTimeout.",
               blame="task_options")
        expect(declined.failed() and isinstance(declined.result, CardDeclined),
               f"a declined card ended {declined.state} ({declined.result!r}), not failed with CardDeclined",
               "Let CardDeclined propagate: the payment failed, and whoever sent it must see that.",
               blame="charge_payment")

        flaky = _eager(task, ns, "flaky")
        tries, charges = len(gateway.calls("flaky")), gateway.charges("flaky")
        expect(flaky is not None and flaky.successful(),
               f"a payment whose first 2 gateway calls timed out ended {flaky.state if flaky else 'never'} "
               f"after {tries} calls ({flaky.result!r})" if flaky else f"after {tries} calls",
               "GatewayTimeout is transient: the task must be retried (autoretry_for), enough times to get through "
               "two timeouts.", blame="task_options")
        expect(charges == 1,
               f"the card of a payment that timed out twice was charged {charges} times: each timeout came AFTER "
               "the gateway had charged, and every retry charged again",
               "A retry repeats the call: give the gateway an idempotency key that is the same on every attempt at "
               "this payment, so it can recognise a repeat.", blame="charge_payment")

        down = _eager(task, ns, "down")
        tries = len(gateway.calls("down"))
        expect(down is not None and tries <= 11,
               f"with the gateway down, the payment was retried {tries} times and would go on forever",
               "Bound the retries (max_retries): after that the task must fail so someone can look at it.",
               blame="task_options")
        expect(down.failed() and isinstance(down.result, GatewayTimeout),
               f"with the gateway down, the payment ended {down.state} ({down.result!r}) after {tries} calls",
               "When the retries are used up the task must fail with the gateway's error, not succeed quietly.",
               blame="charge_payment")
    finally:
        scratch.close()
    passed("a declined card: tried once, failed; timeouts: retried, charged once; a dead gateway: given up after "
           f"{tries} calls")


@lab.check("crash", idea="A payment a worker held when it died must be charged exactly once: it must come back "
                         "(acknowledge late) and charging it again must be harmless (the idempotency key).",
           code="task_options: acks_late=True, reject_on_worker_lost=True (plus your retry options), and "
                "retry_backoff=1 with retry_jitter=False so the waits can be timed. ACK_MODE says which you chose.")
def check_crash(charge_payment, task_options, ACK_MODE):
    decided(ACK_MODE, "ACK_MODE", ("early", "late"),
            "Early acknowledgement loses the payment a dying worker holds (at most once); late acknowledgement "
            "re-delivers it (at least once) and needs an idempotent charge. Which does a payment need?")
    scratch = _Scratch("lab03-crash")
    try:
        gateway, ns, queue = scratch.gateway, scratch.ns, scratch.queue
        task = scratch.task(charge_payment, task_options)
        late = bool(task.acks_late)
        expect(late == (ACK_MODE == "late"),
               f"ACK_MODE is {ACK_MODE!r} but task_options gives acks_late={task.acks_late!r}",
               "Make task_options say what ACK_MODE says (acks_late).", blame="task_options")
        # This check kills the whole worker (the threads pool), which acks_late alone survives. With the prefork pool
        # (the default) a killed pool process is acknowledged as failed unless reject_on_worker_lost is set: 03a's c1.
        expect(not late or task.reject_on_worker_lost,
               f"acks_late is on but reject_on_worker_lost is {task.reject_on_worker_lost!r}: under the prefork pool, "
               "a payment whose pool process is killed (out of memory) is acknowledged as failed and never charged",
               "Add reject_on_worker_lost=True next to acks_late, so a lost pool process re-queues the payment too.",
               blame="task_options")
        gateway.plan(before="hang-before", after="hang-after", flaky="timeout-after-charge:2")
        first = scratch.worker("first")
        held = {p: task.apply_async((ns, p, 100), queue=queue) for p in ("before", "after")}
        wait_for(lambda: gateway.hanging() == {"before", "after"} or any(r.ready() for r in held.values()),
                 seconds=15, what="the first worker to start both payments")
        for r in held.values():
            expect(not r.ready(), f"a payment ended {r.state} before reaching the gateway: {r.result!r}",
                   "Run check_retries first: the task must charge through `gateway.charge`.", blame="charge_payment")
        first.kill()                                  # SIGKILL with one payment before and one after its charge
        killed_at = time.time()
        gateway.release()
        scratch.worker("second")
        flaky = task.apply_async((ns, "flaky", 100), queue=queue)
        results = {**held, "flaky": flaky}
        since_kill = lambda: time.time() - killed_at  # noqa: E731
        wait_for(lambda: all(r.ready() for r in results.values()) or since_kill() > VISIBILITY_TIMEOUT + 8
                 or (flaky.ready() and since_kill() > VISIBILITY_TIMEOUT + 4),
                 seconds=VISIBILITY_TIMEOUT + 20, what="the payments to finish")
        charges = {p: gateway.charges(p) for p in results}
        lost = [p for p, r in held.items() if not r.ready()]
        expect(not lost,
               f"after the worker was killed, payment(s) {lost} never finished (charges {charges}): the dead worker "
               "had acknowledged them" + (" (ACK_MODE 'early')" if not late else ""),
               "With early acknowledgement the message is gone before the work is done: at most once. A payment "
               "needs at least once: acknowledge late.", blame="ACK_MODE" if not late else "task_options")
        expect(all(n == 1 for n in charges.values()),
               f"charges per payment after a SIGKILL: {charges}; expected exactly 1 each",
               "The payment killed after its charge was delivered again and charged again: the key you give the "
               "gateway must be the same for the re-delivered task.", blame="charge_payment")
        calls = gateway.calls("flaky")
        gaps = [round(b - a, 2) for a, b in zip(calls, calls[1:])]
        expect(flaky.ready(), f"a payment that timed out was tried {len(calls)} times in {since_kill():.0f} s and "
               f"is still waiting (gaps {gaps} s): Celery's default delay before a retry is 3 minutes",
               "Back off exponentially from about 1 s: retry_backoff=1, retry_jitter=False for this lab.",
               blame="task_options")
        expect(len(gaps) == 2 and gaps[0] >= 0.9 and gaps[1] >= 1.5 * gaps[0],
               f"a payment that timed out twice was retried after {gaps} s",
               "Back off exponentially: wait about 1 s before the first retry and twice as long before the next "
               "(retry_backoff=1, retry_jitter=False for this lab), so a struggling gateway gets air.",
               blame="task_options")
        for r in results.values():
            expect(r.successful(), f"a payment ended {r.state}: {r.result!r}",
                   "Every payment here can succeed: check what your task returns.", blame="charge_payment")
    finally:
        scratch.close()
    passed(f"a worker SIGKILLed mid-payment: every payment charged exactly once {charges}; retries after {gaps} s")


@lab.check("double-submit", idea="A double click sends the same payment twice, as two different tasks: the key "
                                 "must belong to the payment, not to the task.",
           code="Which identifier is the same for both tasks: self.request.id, or payment_id?")
def check_double_submit(charge_payment, task_options):
    scratch = _Scratch("lab03-double")
    try:
        gateway, ns = scratch.gateway, scratch.ns
        task = scratch.task(charge_payment, task_options)
        first, second = _eager(task, ns, "order-7"), _eager(task, ns, "order-7")
        expect(first is not None and second is not None and first.successful() and second.successful(),
               f"the two submissions ended {first.state if first else '?'} and {second.state if second else '?'}",
               "Both submissions should succeed (the second returns the first charge).", blame="charge_payment")
        charges = gateway.charges("order-7")
        expect(charges == 1, f"the same payment submitted twice was charged {charges} times",
               "The two tasks have different task ids but the same payment: the gateway can only deduplicate a key "
               "that is the same for both.", blame="charge_payment")
        expect(first.result == second.result, f"the two submissions returned {first.result!r} and {second.result!r}",
               "Return the charge id the gateway gives back: the second submission gets the first charge's id.",
               blame="charge_payment")
    finally:
        scratch.close()
    passed("submitted twice, charged once; both submissions got the same charge id")


__all__ = ["CardDeclined", "Gateway", "GatewayTimeout", "app", "check_crash", "check_double_submit",
           "check_retries", "hint", "lab", "make_payment_task"]
