"""Settle an order from both outcomes read in the database, as its own task.

An order's sends settle it themselves as they finish (`tasks/sends.py`); this task is
for the sweeper, when they did not (`recovery.py`)."""

from celery import Task, shared_task
from celery.utils.log import get_task_logger
from django.conf import settings

from dualsend_app import orders

from .options import ORDER_TASK_OPTIONS

logger = get_task_logger(__name__)

# A send not final yet (the sweeper found the order idle, then the send moved): settle
# looks again, this many times, and after that the sweeper owns the order.
MAX_RECHECKS = 150


# Nothing reads a settle's result (the order row is the outcome): none is stored.
@shared_task(name="tasks.settle.settle_order", ignore_result=True, **ORDER_TASK_OPTIONS)
def settle_order(self: Task, header_results: list, order_id: str) -> str:
    """`header_results` is kept for messages already queued; the database is what counts."""
    result = orders.settle(order_id)
    if result is orders.SettleResult.NOT_READY:
        if self.request.retries >= MAX_RECHECKS:
            logger.warning("not ready after %s rechecks", MAX_RECHECKS)
            return str(result)
        raise self.retry(countdown=settings.DUALSEND_SETTLE_RECHECK_SECONDS)
    return str(result)
