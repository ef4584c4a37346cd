"""The Celery app of notebook 08b: the order system's email task, on RabbitMQ (the seeds' hybrid puts the email
task there), results in Redis.

Per-run: make_app(per_run=True) names the default queue after this run, and the worker the notebook starts
consumes only that queue (nothing here uses Celery's default `celery` queue).  The task is idempotent: it
"sends" the email through brokerlab.hybrid.apply_once, so a repeated event is absorbed, not mailed twice.
"""
from brokerlab import hybrid
from brokerlab.celery_app import make_app
from brokerlab.clients import redis_client

app = make_app("orders", broker="amqp", per_run=True)
RUN = app.course_run                  # this run's id; the default (email) queue is named after it
EMAIL_QUEUE = RUN
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1)   # a worker that dies re-queues its email
# apply_async returns once RabbitMQ confirmed the message (publisher confirms), so a count right after is exact
app.conf.broker_transport_options = {**app.conf.broker_transport_options, "confirm_publish": True}

_redis = None


def _client():
    global _redis
    if _redis is None:
        _redis = redis_client()
    return _redis


@app.task(bind=True)
def send_order_email(self, event: dict, journal: str) -> bool:
    """Mail the customer once per order event (True), absorb a repeat (False). The mail itself is a journal entry."""
    return hybrid.apply_once(_client(), "emailed", event, journal, worker=self.request.hostname)
