"""The Celery app of notebook 07c on a scratch Redis broker (made by brokerlab.broker_crashes.crash_app).

The kernel describes the scratch servers in an environment variable before it starts Celery's own worker;
the worker imports this module and builds the same app from it."""
from brokerlab.broker_crashes import app_from_environment

app = app_from_environment("redis")
