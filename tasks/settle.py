"""The chord's callback: settle the order from both outcomes read in the database."""

from celery import shared_task
from celery.utils.log import get_task_logger
from django.conf import settings

from dualsend_app import orders

from .sends import DATABASE_ERRORS

logger = get_task_logger(__name__)

# A header result delivered twice can fire the callback before the other send is final;
# settle then looks again, this many times, and after that the sweeper owns the order.
MAX_RECHECKS = 150


@shared_task(
    bind=True,
    name="tasks.settle.settle_order",
    max_retries=None,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=DATABASE_ERRORS,
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=True,
)
def settle_order(self, header_results, order_id):
    """`header_results` are the sends' summaries; the database is what counts."""
    result = orders.settle(order_id)
    if result == orders.SettleResult.NOT_READY:
        if self.request.retries >= MAX_RECHECKS:
            logger.warning("order=%s not ready after %s rechecks", order_id, MAX_RECHECKS)
            return str(result)
        raise self.retry(countdown=settings.DUALSEND_SETTLE_RECHECK_SECONDS)
    return str(result)
