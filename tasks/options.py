"""The options every task of an order shares, declared once.

Acknowledging late and giving a message back when its worker dies are global settings
(`CELERY_TASK_ACKS_LATE`, `CELERY_TASK_REJECT_ON_WORKER_LOST` in project/settings.py),
not repeated here.
"""

from dualsend_app.sending import DATABASE_ERRORS

# The database is the source of truth: while it is unreachable a task cannot read or move
# its rows, so Celery retries it, with backoff, until it is back. Our own attempt budget
# and deadline, counted in the database, bound the partner calls, not Celery's retries.
ORDER_TASK_OPTIONS = {
    "bind": True,
    "max_retries": None,
    "autoretry_for": DATABASE_ERRORS,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
}
