"""The Celery app of notebook 00: one task, on Redis, with results in Redis."""
from brokerlab.celery_app import make_app

app = make_app("orientation", broker="redis")


@app.task
def add(a: int, b: int) -> int:
    return a + b
