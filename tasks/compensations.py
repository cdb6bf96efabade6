"""Compensations: release the stock, refund the charge, then close the order."""

from typing import Any

from celery import Task, shared_task

from dualsend_app import orders, sending
from dualsend_app.models import Send

from .options import ORDER_TASK_OPTIONS
from .sends import run_send


# Nothing reads a compensation's result (its send row is the outcome): none is stored.
@shared_task(name="tasks.compensations.compensate", ignore_result=True, **ORDER_TASK_OPTIONS)
def compensate(self: Task, send_id: int, kept_answer: dict[str, Any] | None = None) -> dict:
    """Same path as a header send; whichever compensation finishes last closes the order."""
    summary = sending.summary(send_id, run_send(self, send_id, kept_answer))
    order_id = Send.objects.values_list("order_id", flat=True).get(pk=send_id)
    orders.finish_compensation(order_id)
    return summary
