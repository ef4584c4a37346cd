"""The Celery app of notebook 07c on a scratch RabbitMQ node, with quorum queues
(made by brokerlab.broker_crashes.crash_app; see crash_redis.py)."""
from brokerlab.broker_crashes import app_from_environment

app = app_from_environment("rabbitmq")
