"""Hand work to the broker: the chord of an order, the compensations of a settle.

Signatures are built by task name (routes in settings pick the queue), so the business
rules enqueue without importing the task modules: tasks/ calls into this package, never
the other way round. Every function here is safe to call while the broker is down: it
logs, returns False, and the sweeper (`recovery.py`) tries again later.
"""

import logging
import uuid
from collections.abc import Iterable

from celery import chord, signature
from celery.canvas import Signature
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from .models import Order, Send

logger = logging.getLogger(__name__)

SEND_TASK_BY_PARTNER = {
    "inventory": "tasks.sends.send_inventory",
    "payment": "tasks.sends.send_payment",
}
SETTLE_TASK = "tasks.settle.settle_order"
COMPENSATE_TASK = "tasks.compensations.compensate"


def dispatch_order(order_id: uuid.UUID | str, sends: Iterable[Send] | None = None) -> bool:
    """chord([reserve, charge], settle); mark the order dispatched once the broker has it.

    `sends` are the order's header sends when the caller holds them (it just created
    them); otherwise they are read."""
    if sends is None:
        sends = Send.objects.filter(order_id=order_id, operation__in=Send.HEADER_OPERATIONS)
    header = [signature(SEND_TASK_BY_PARTNER[send.partner], args=(send.pk,)) for send in sends]
    try:
        chord(header)(signature(SETTLE_TASK, args=(str(order_id),)))
    except Exception:
        # The broker is down: the order stays pending and the sweeper dispatches it later.
        logger.exception("order=%s could not be dispatched; left pending", order_id)
        return False
    # One UPDATE: the first dispatch's time, and pending → dispatched (an order that
    # moved on meanwhile keeps its status).
    now = timezone.now()
    dispatched_first = Q(dispatched_at__isnull=True) | Q(status=Order.Status.PENDING)
    Order.objects.filter(dispatched_first, pk=order_id).update(
        dispatched_at=Coalesce(F("dispatched_at"), now),
        status=Case(
            When(status=Order.Status.PENDING, then=Value(Order.Status.DISPATCHED)),
            default=F("status"),
        ),
        updated_at=now,
    )
    return True


def enqueue_compensations(send_ids: Iterable[int]) -> None:
    for send_id in send_ids:
        _publish(signature(COMPENSATE_TASK, args=(send_id,)), f"compensation send={send_id}")


def enqueue_send(send: Send) -> bool:
    """One send on its own, outside any chord (the sweeper's re-drive).

    A header send re-driven alone is no longer part of its order's chord, whose callback
    may never fire now: it carries `settle` as its link, so the order settles as soon as
    the send is final instead of a sweep later (settle waits while the other send is not
    final, and does nothing for an order already settled).
    """
    if send.is_compensation:
        return _publish(signature(COMPENSATE_TASK, args=(send.pk,)), f"send={send.pk}")
    task = signature(SEND_TASK_BY_PARTNER[send.partner], args=(send.pk,))
    task.link(signature(SETTLE_TASK, args=(str(send.order_id),)))
    return _publish(task, f"send={send.pk}")


def enqueue_settle(order_id: uuid.UUID | str) -> bool:
    return _publish(signature(SETTLE_TASK, args=([], str(order_id))), f"settle order={order_id}")


def _publish(task_signature: Signature, what: str) -> bool:
    """True once the broker has it; a broker outage is logged, the sweeper tries again."""
    try:
        task_signature.apply_async()
    except Exception:
        logger.exception("%s could not be enqueued; the sweeper will try again", what)
        return False
    return True
