"""The options every task of an order shares, declared once.

Acknowledging late and giving a message back when its worker dies are global settings
(`CELERY_TASK_ACKS_LATE`, `CELERY_TASK_REJECT_ON_WORKER_LOST` in project/settings.py),
not repeated here.
"""

from typing import Any

from celery.exceptions import Retry

from dualsend_app.sending import DATABASE_ERRORS
from project.celery import app


# Built on the app's own task class (`task_cls` in project/celery.py), not Celery's bare
# Task, so that the order's tasks keep whatever every task of the app has.
class OrderTask(app.Task):
    """A task of an order: its retries stay findable in Flower by the order's id.

    A retry is a new message under the same task id, and its task events replace the
    kwargs Flower shows. Celery would describe it by its real kwargs (nothing, or a kept
    partner answer); it keeps the first message's `kwargsrepr` instead, which carries the
    order id (dualsend_app/enqueue.py, `order_task`).
    """

    def retry(self, *args: Any, **options: Any) -> Retry:
        shown = getattr(self.request, "kwargsrepr", None)
        if shown:
            options.setdefault("kwargsrepr", shown)
        return super().retry(*args, **options)


# The database is the source of truth: while it is unreachable a task cannot read or move
# its rows, so Celery retries it, with backoff, until it is back. Our own attempt budget
# and deadline, counted in the database, bound the partner calls, not Celery's retries.
ORDER_TASK_OPTIONS = {
    "base": OrderTask,
    "bind": True,
    "max_retries": None,
    "autoretry_for": DATABASE_ERRORS,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
}
