"""The benchmark's Celery app with Redis as the broker."""
from . import build

app = build("redis")
