"""The business rules: create an order, settle it from both outcomes, close compensations.

    both sends succeeded                  → completed
    a side may have taken effect, other not → compensating → undo it → compensated
    nothing needs undoing (or partner 404) → failed
    a compensation ran out of retries      → needs_attention (the admin can re-drive)

Every change is a conditional update: a duplicate settle or compensation changes nothing.
"""

import logging
import uuid
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from . import enqueue
from .models import Order, Send
from .partners import clients

logger = logging.getLogger(__name__)


class SettleResult(StrEnum):
    NOT_READY = "not_ready"  # a header send is not final yet: look again later
    ALREADY_SETTLED = "already_settled"
    COMPLETED = Order.Status.COMPLETED
    FAILED = Order.Status.FAILED
    COMPENSATING = Order.Status.COMPENSATING
    COMPENSATED = Order.Status.COMPENSATED
    NEEDS_ATTENTION = Order.Status.NEEDS_ATTENTION


def create_order(
    *,
    client: str,
    idempotency_key: str,
    fingerprint: str,
    payload: dict[str, Any],
    correlation_id: str,
) -> Order:
    """Save the order and its two sends in one transaction; dispatch once it commits."""
    with transaction.atomic():
        order = Order.objects.create(
            client=client,
            idempotency_key=idempotency_key,
            request_fingerprint=fingerprint,
            payload=payload,
            correlation_id=correlation_id,
        )
        for operation in Send.HEADER_OPERATIONS:
            _create_send(order, operation)
        transaction.on_commit(lambda: enqueue.dispatch_order(order.pk), robust=True)
    logger.info("order=%s request_id=%s created", order.pk, correlation_id)
    return order


def _create_send(order: Order, operation: str) -> Send:
    method, path, body = clients.build_request(operation, order)
    return Send.objects.create(
        order=order, operation=operation, method=method, path=path, request_body=body
    )


def settle(order_id: uuid.UUID | str) -> SettleResult:
    """Read both outcomes from the database and move the order on (allSettled)."""
    order = Order.objects.get(pk=order_id)
    if order.status not in (Order.Status.PENDING, Order.Status.DISPATCHED):
        return SettleResult.ALREADY_SETTLED
    headers = list(order.sends.filter(operation__in=Send.HEADER_OPERATIONS))
    if not all(send.is_final for send in headers):
        return SettleResult.NOT_READY
    if all(send.status == Send.Status.SUCCEEDED for send in headers):
        return _finish(order, Order.Status.COMPLETED, "both partners succeeded")
    to_undo = [send for send in headers if send.may_have_taken_effect]
    if not to_undo:
        return _finish(order, Order.Status.FAILED, _failure_summary(headers))
    return _start_compensation(order, headers, to_undo)


def _finish(
    order: Order,
    status: str,
    reason: str,
    from_statuses: Iterable[str] = (Order.Status.PENDING, Order.Status.DISPATCHED),
) -> SettleResult:
    won = Order.claim(
        order.pk,
        from_statuses=from_statuses,
        status=status,
        status_reason=reason,
        settled_at=timezone.now(),
    )
    if not won:
        return SettleResult.ALREADY_SETTLED
    logger.info(
        "order=%s request_id=%s settled status=%s reason=%s",
        order.pk,
        order.correlation_id,
        status,
        reason,
    )
    return SettleResult(status)


def _start_compensation(order: Order, headers: list[Send], to_undo: list[Send]) -> SettleResult:
    """Claim the order for compensation and create the undo sends, in one transaction."""
    reason = f"undoing {', '.join(s.operation for s in to_undo)}: {_failure_summary(headers)}"
    with transaction.atomic():
        won = Order.claim(
            order.pk,
            from_statuses=(Order.Status.PENDING, Order.Status.DISPATCHED),
            status=Order.Status.COMPENSATING,
            status_reason=reason,
        )
        if not won:
            return SettleResult.ALREADY_SETTLED
        compensations = [
            _create_send(order, Send.COMPENSATION_OF[send.operation]) for send in to_undo
        ]
        ids = [send.pk for send in compensations]
        transaction.on_commit(lambda: enqueue.enqueue_compensations(ids), robust=True)
    logger.info("order=%s request_id=%s compensating: %s", order.pk, order.correlation_id, reason)
    return SettleResult.COMPENSATING


def _failure_summary(sends: Iterable[Send]) -> str:
    return "; ".join(
        f"{send.operation} {send.status}"
        + (f" ({send.failure_kind}: {send.error})" if send.status == Send.Status.FAILED else "")
        for send in sends
    )


def finish_compensation(order_id: uuid.UUID | str) -> SettleResult | None:
    """Once every compensation is final: compensated, failed, or needs_attention."""
    order = Order.objects.get(pk=order_id)
    if order.status != Order.Status.COMPENSATING:
        return None
    compensations = [send for send in order.sends.all() if send.is_compensation]
    if not all(send.is_final for send in compensations):
        return None
    failed = [send for send in compensations if send.status == Send.Status.FAILED]
    if failed:
        status = Order.Status.NEEDS_ATTENTION
        reason = "compensation did not succeed: " + _failure_summary(failed)
    elif any(send.undid_something for send in compensations):
        status = Order.Status.COMPENSATED
        reason = "undone: " + ", ".join(s.operation for s in compensations if s.undid_something)
    else:
        status = Order.Status.FAILED
        reason = "nothing had taken effect (the partners answered 404 to the undo)"
    return _finish(order, status, reason, from_statuses=(Order.Status.COMPENSATING,))


def redrive_compensations(order_id: uuid.UUID | str) -> int:
    """An operator's re-drive of a needs_attention order: retry its failed compensations.

    Same idempotency keys, fresh attempt budget. Returns the number of sends re-driven.
    """
    with transaction.atomic():
        won = Order.claim(
            order_id,
            from_statuses=(Order.Status.NEEDS_ATTENTION,),
            status=Order.Status.COMPENSATING,
            status_reason="re-driven by an operator",
            settled_at=None,
        )
        if not won:
            return 0
        failed = Send.objects.filter(
            order_id=order_id,
            operation__in=list(Send.COMPENSATION_OF.values()),
            status=Send.Status.FAILED,
        )
        ids = list(failed.values_list("pk", flat=True))
        failed.update(
            status=Send.Status.PENDING,
            failure_kind=Send.FailureKind.NONE,
            budget_starts_after=F("attempts"),
            started_at=None,
            next_attempt_at=None,
            finished_at=None,
        )
        transaction.on_commit(lambda: enqueue.enqueue_compensations(ids), robust=True)
    return len(ids)
