"""Notebook 08b, moving Celery's broker: the same task on Redis (this module) and on RabbitMQ
(priority_rabbit.py). Both apps are per-run and consume only their own queue."""
from brokerlab.celery_app import make_app
from celery_apps import priority_tasks

app = make_app("priority_redis", broker="redis", per_run=True)
app.conf.update(worker_prefetch_multiplier=1, task_acks_late=True)  # one task at a time: order is the broker's
QUEUE = app.course_run
record = priority_tasks.define(app)
