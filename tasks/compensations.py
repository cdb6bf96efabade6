"""Compensations: release the stock, refund the charge, then close the order."""

from celery import shared_task

from dualsend_app import orders
from dualsend_app.models import Send

from .sends import SEND_TASK_OPTIONS, run_send


@shared_task(name="tasks.compensations.compensate", **SEND_TASK_OPTIONS)
def compensate(self, send_id, kept_answer=None):
    """Same path as a header send; whichever compensation finishes last closes the order."""
    summary = run_send(self, send_id, kept_answer)
    order_id = Send.objects.values_list("order_id", flat=True).get(pk=send_id)
    orders.finish_compensation(order_id)
    return summary
