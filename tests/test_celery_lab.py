"""Lab 03 (a payment task that charges exactly once): the solution passes every check; a catalogue of plausible
wrong implementations each fails with the right message, blaming the right function, leaving nothing behind.

The learner's functions are module-level here because the checks read their source (a worker imports it)."""
from __future__ import annotations

import pytest

from brokerlab.celery_app import BROKER_DB, RESULT_DB, run_keys
from brokerlab.labs import celery_lab
from brokerlab.labs.catalogue import Wrong, fails_right, params, passes
from brokerlab.labs.celery_lab import CardDeclined, GatewayTimeout  # noqa: F401  (the functions below use them)


# --- the solution ------------------------------------------------------------------------------------------
def task_options():
    return dict(autoretry_for=(GatewayTimeout,), max_retries=5, retry_backoff=1, retry_jitter=False,
                acks_late=True, reject_on_worker_lost=True)


def charge_payment(task, gateway, payment_id, amount):
    return gateway.charge(payment_id, amount, idempotency_key=f"payment-{payment_id}")


# --- wrong implementations ---------------------------------------------------------------------------------
def options_not_written():
    raise NotImplementedError("your code here")


def charge_not_written(task, gateway, payment_id, amount):
    raise NotImplementedError("your code here")


# (each is written out in full: a check copies only the function's own source into the worker's module)
def retries_everything():
    return dict(autoretry_for=(Exception,), max_retries=5, retry_backoff=1, retry_jitter=False,
                acks_late=True, reject_on_worker_lost=True)


def no_retries():
    return dict(acks_late=True, reject_on_worker_lost=True)


def retries_forever():
    return dict(autoretry_for=(GatewayTimeout,), max_retries=None, retry_backoff=1, retry_jitter=False,
                acks_late=True, reject_on_worker_lost=True)


def early_ack():
    return dict(autoretry_for=(GatewayTimeout,), max_retries=5, retry_backoff=1, retry_jitter=False)


def late_ack_without_reject():
    return dict(autoretry_for=(GatewayTimeout,), max_retries=5, retry_backoff=1, retry_jitter=False, acks_late=True)


def no_backoff():
    return dict(autoretry_for=(GatewayTimeout,), max_retries=5, acks_late=True, reject_on_worker_lost=True)


def options_not_a_dict():
    return [("autoretry_for", (GatewayTimeout,))]


def charge_without_key(task, gateway, payment_id, amount):
    return gateway.charge(payment_id, amount)


def charge_with_fresh_key(task, gateway, payment_id, amount):
    import uuid

    return gateway.charge(payment_id, amount, idempotency_key=str(uuid.uuid4()))  # new key on every attempt


def charge_keyed_on_task_id(task, gateway, payment_id, amount):
    return gateway.charge(payment_id, amount, idempotency_key=task.request.id)


def charge_returning_true(task, gateway, payment_id, amount):
    gateway.charge(payment_id, amount, idempotency_key=f"payment-{payment_id}")
    return True  # "it worked"


def charge_swallowing_errors(task, gateway, payment_id, amount):
    try:
        return gateway.charge(payment_id, amount, idempotency_key=f"payment-{payment_id}")
    except Exception:
        return None  # "handled"


def charge_with_a_typo(task, gateway, payment_id, amount):
    return gateway.charge(payment_id, amount, idempotency_key=f"payment-{payment_idd}")  # noqa: F821


CATALOGUE = [
    Wrong("task_options not written", celery_lab.check_retries, (charge_payment, options_not_written),
          blame="task_options", says=("not written",)),
    Wrong("charge_payment not written", celery_lab.check_retries, (charge_not_written, task_options),
          blame="charge_payment", says=("not written",)),
    Wrong("task_options returns a list", celery_lab.check_retries, (charge_payment, options_not_a_dict),
          blame="task_options", says=("not a dict",)),
    Wrong("retries every exception, declined cards too", celery_lab.check_retries,
          (charge_payment, retries_everything), blame="task_options", says=("declined", "times")),
    Wrong("no retries: a timeout fails the payment", celery_lab.check_retries, (charge_payment, no_retries),
          blame="task_options", says=("timed out", "retried")),
    Wrong("retries forever", celery_lab.check_retries, (charge_payment, retries_forever),
          blame="task_options", says=("forever", "max_retries")),
    Wrong("no idempotency key: a timeout after the charge charges again", celery_lab.check_retries,
          (charge_without_key, task_options), blame="charge_payment", says=("charged 3 times", "idempotency")),
    Wrong("a fresh idempotency key on every attempt", celery_lab.check_retries,
          (charge_with_fresh_key, task_options), blame="charge_payment", says=("charged 3 times", "same")),
    Wrong("returns True instead of the charge id", celery_lab.check_retries, (charge_returning_true, task_options),
          blame="charge_payment", says=("returned True", "charge id")),
    Wrong("swallows every error", celery_lab.check_retries, (charge_swallowing_errors, task_options),
          blame="charge_payment", says=("declined", "CardDeclined")),
    Wrong("a NameError in the body", celery_lab.check_retries, (charge_with_a_typo, task_options),
          blame="charge_payment", says=("NameError",)),
    Wrong("no decision made", celery_lab.check_crash, (charge_payment, task_options, None),
          blame="ACK_MODE", says=("decision",)),
    Wrong("ACK_MODE late but acks_late off", celery_lab.check_crash, (charge_payment, early_ack, "late"),
          blame="task_options", says=("acks_late",)),
    Wrong("early acknowledgement loses the payment a dying worker holds", celery_lab.check_crash,
          (charge_payment, early_ack, "early"), blame="ACK_MODE", says=("never finished", "at most once")),
    Wrong("acks_late without reject_on_worker_lost: a killed pool process loses the payment", celery_lab.check_crash,
          (charge_payment, late_ack_without_reject, "late"), blame="task_options", says=("reject_on_worker_lost",)),
    Wrong("retries without backoff", celery_lab.check_crash, (charge_payment, no_backoff, "late"),
          blame="task_options", says=("back off",)),
    Wrong("keyed on the task id: a double click charges twice", celery_lab.check_double_submit,
          (charge_keyed_on_task_id, task_options), blame="charge_payment", says=("charged 2 times", "same")),
]


def _nothing_left():
    scratch = [name for _, name in celery_lab.lab.scratch_names]   # what the last check made (its queue included)
    assert run_keys(celery_lab.app, prefixes=scratch) == {BROKER_DB: [], RESULT_DB: []}


def test_the_solution_passes_every_check():
    passes(celery_lab.check_retries, charge_payment, task_options)
    _nothing_left()
    passes(celery_lab.check_crash, charge_payment, task_options, "late")
    _nothing_left()
    passes(celery_lab.check_double_submit, charge_payment, task_options)
    _nothing_left()


def test_keyed_on_the_task_id_survives_retries_and_crashes_but_not_a_double_click():
    passes(celery_lab.check_retries, charge_keyed_on_task_id, task_options)  # the same task id on every retry


@pytest.mark.parametrize("wrong", params(CATALOGUE))
def test_wrong_implementation_fails_with_the_right_message(wrong):
    fails_right(wrong)
    _nothing_left()
