"""Notebook 08b, moving Celery's broker: the same task as priority_redis.py, with broker="amqp".
RabbitMQ honours a message's priority only on a queue declared with x-max-priority, so this app declares it."""
from kombu import Queue

from brokerlab.celery_app import make_app
from celery_apps import priority_tasks

app = make_app("priority_rabbit", broker="amqp", per_run=True)
QUEUE = app.course_run
app.conf.update(worker_prefetch_multiplier=1, task_acks_late=True,
                task_queues=[Queue(QUEUE, queue_arguments={"x-max-priority": 10})])
record = priority_tasks.define(app)
