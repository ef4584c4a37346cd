"""The Celery app of notebook 04b: the same kind of tasks as on Redis, with one setting changed (broker="amqp").

The notebook starts Celery's own worker on a per-run queue (`-Q <queue>`) and sends tasks with
`apply_async(queue=...)`, so nothing here uses Celery's default `celery` queue.
"""
import time

from brokerlab.celery_app import make_app

app = make_app("rabbit_tasks", broker="amqp")   # the one change: RabbitMQ carries the tasks; results stay in Redis


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task(bind=True, acks_late=True)
def slow(self, seconds: float, seconds_when_redelivered: float = 0.1) -> dict:
    """Acknowledged only when it returns: a worker that dies while running it leaves it with the broker.
    A redelivered run is short, so the lesson does not wait for the whole job twice."""
    redelivered = bool(self.request.delivery_info.get("redelivered"))
    time.sleep(seconds_when_redelivered if redelivered else seconds)
    return {"redelivered": redelivered, "worker": self.request.hostname}
