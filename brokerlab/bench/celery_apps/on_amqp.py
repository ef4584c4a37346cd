"""The benchmark's Celery app with RabbitMQ as the broker."""
from . import build

app = build("amqp")
