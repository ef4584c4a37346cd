"""Celery apps the notebooks use.  They live in real modules because a Celery
worker is a separate process that must import the tasks it runs."""
