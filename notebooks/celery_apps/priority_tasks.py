"""The task both priority apps of notebook 08b run: it records its label in a journal (brokerlab.celery_journal)."""
from brokerlab import celery_journal as journal


def define(app):
    @app.task(name="celery_apps.priority_tasks.record")
    def record(log: str, label: str) -> str:
        journal.note(log, "ran", label=label)
        return label

    return record
