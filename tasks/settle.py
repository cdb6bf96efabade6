"""The chord's callback: settle the order from both outcomes read in the database."""

from celery import Task, shared_task
from celery.utils.log import get_task_logger
from django.conf import settings

from dualsend_app import orders

from .options import ORDER_TASK_OPTIONS

logger = get_task_logger(__name__)

# A header result delivered twice can fire the callback before the other send is final;
# settle then looks again, this many times, and after that the sweeper owns the order.
MAX_RECHECKS = 150


# Nothing reads a settle's result (the order row is the outcome): none is stored.
@shared_task(name="tasks.settle.settle_order", ignore_result=True, **ORDER_TASK_OPTIONS)
def settle_order(self: Task, header_results: list, order_id: str) -> str:
    """`header_results` are the sends' summaries; the database is what counts."""
    result = orders.settle(order_id)
    if result is orders.SettleResult.NOT_READY:
        if self.request.retries >= MAX_RECHECKS:
            logger.warning("not ready after %s rechecks", MAX_RECHECKS)
            return str(result)
        raise self.retry(countdown=settings.DUALSEND_SETTLE_RECHECK_SECONDS)
    return str(result)
