"""The business rules: create an order, settle it from both outcomes, close compensations.

    both sends succeeded                  → completed
    a side may have taken effect, other not → compensating → undo it → compensated
    nothing needs undoing (or partner 404) → failed
    a compensation ran out of retries      → needs_attention (the admin can re-drive)
    not final past its maximum age         → its unfinished sends stop, then the rules above

Every change is a conditional update: a duplicate settle or compensation changes nothing.
Every move of an order's status goes through `status_history.claim`, which records it.
"""

import contextlib
import logging
import uuid
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from . import enqueue, log_context, metrics, order_events, order_rows, row_reads, status_history
from .models import Order, Redrive, Send
from .partners import clients

logger = logging.getLogger(__name__)

# The orders `created_together` is collecting, in this thread; None outside it.
_dispatched_together: ContextVar[list[Order] | None] = ContextVar(
    "dualsend_dispatched_together", default=None
)


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
    """Save the order and its two sends in one transaction; dispatch once it commits.

    A duplicate of a request still being created (same client and key, its row not yet
    committed) waits on that row at most `DUALSEND_INTAKE_LOCK_TIMEOUT_SECONDS`; past it
    PostgreSQL gives up (`LockNotAvailable`) and the caller answers 409, retry shortly,
    rather than holding a web thread for as long as the first request takes.
    """
    order = Order(
        client=client,
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
        payload=payload,
        correlation_id=correlation_id,
    )
    sends = [_new_send(order, operation) for operation in Send.HEADER_OPERATIONS]
    # One statement, atomic on its own (order_rows.py); in a batch's transaction, a
    # savepoint, so that this order's failure leaves the others.
    with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
        order_rows.insert(
            order, sends, lock_timeout_seconds=settings.DUALSEND_INTAKE_LOCK_TIMEOUT_SECONDS
        )
        order.new_sends = sends
        together = _dispatched_together.get()
        if together is not None:
            together.append(order)  # dispatched with the others of its batch
        else:
            # Once committed (at once, outside a transaction): the sends go to the broker.
            transaction.on_commit(lambda: _dispatch(order, sends), robust=True)
    with log_context.bound(order_id=order.pk, correlation_id=correlation_id):
        logger.info("order created")
    return order


@contextlib.contextmanager
def created_together() -> Iterator[None]:
    """One transaction, whose new orders are dispatched together once it commits (a
    batch's: `enqueue.dispatch_orders`); an order whose savepoint failed is not among them.
    """
    created: list[Order] = []
    token = _dispatched_together.set(created)
    try:
        with transaction.atomic():
            transaction.on_commit(lambda: _dispatch_all(created), robust=True)
            yield
    finally:
        _dispatched_together.reset(token)


def _dispatch_all(created: list[Order]) -> None:
    late = _dispatched_by_the_sweeper_among(created)
    if late:
        logger.info("%s orders dispatched by the sweeper meanwhile; not published again", len(late))
    enqueue.dispatch_orders([order for order in created if order.pk not in late])


def _dispatch(order: Order, sends: list[Send] | None) -> None:
    """The order's two sends, published with the order's ids (its tasks' message headers carry
    them): a batch commits many orders at once, each dispatched as itself."""
    with log_context.bound(order_id=order.pk, correlation_id=order.correlation_id):
        if _dispatched_by_the_sweeper(order):
            logger.info("dispatched by the sweeper meanwhile; not published again")
            return
        enqueue.dispatch_order(order.pk, sends=sends)


def _dispatched_by_the_sweeper(order: Order) -> bool:
    return order.pk in _dispatched_by_the_sweeper_among([order])


def _dispatched_by_the_sweeper_among(created: list[Order]) -> set[uuid.UUID]:
    """Those of `created` the sweeper already dispatched, looked up (one query) only for
    those it may have.

    Under load, orders came up for dispatch after the sweep grace, when the sweeper had
    already taken them for lost and dispatched them
    (`recovery.redispatch_undispatched_orders`): a second dispatch each, 200 of the 1,000
    orders of `manage.py bench`'s batch burst. Past half the grace an order is published
    only if it is still pending. A database that cannot say leaves the publish as it was:
    a duplicate dispatch is harmless (its sends are claimed once), a lost one is not.
    """
    now = timezone.now()
    half_grace = settings.DUALSEND_SWEEP_GRACE_SECONDS / 2
    old = [o.pk for o in created if (now - o.created_at).total_seconds() >= half_grace]
    if not old:
        return set()
    try:
        return set(
            Order.objects.filter(pk__in=old)
            .exclude(status=Order.Status.PENDING)
            .values_list("pk", flat=True)
        )
    except DatabaseError:
        return set()


def still_pending(order_id: uuid.UUID) -> bool:
    """Not dispatched yet: asked by the sweeper before dispatching an order the web may
    have dispatched meanwhile (the web asks it the other way round, for many orders at
    once: `_dispatched_by_the_sweeper_among`)."""
    return Order.objects.filter(pk=order_id, status=Order.Status.PENDING).exists()


def _new_send(order: Order, operation: str) -> Send:
    method, path, body = clients.build_request(operation, order)
    return Send(
        order=order,
        operation=operation,
        partner=Send.partner_of(operation),
        method=method,
        path=path,
        request_body=body,
    )


def _create_send(order: Order, operation: str) -> Send:
    send = _new_send(order, operation)
    send.save()
    return send


SETTLING = (Order.Status.PENDING, Order.Status.DISPATCHED)


def settle(
    order_id: uuid.UUID | str,
    *,
    why: str = "",
    from_statuses: Iterable[str] = SETTLING,
    by: status_history.Operator = None,
) -> SettleResult:
    """Read both outcomes from the database and move the order on (allSettled).

    `why` goes in front of the reason (an expiry, an operator's re-drive); an order not
    in `from_statuses` was settled already. `by`: the operator whose action it is.
    """
    order, headers = row_reads.order_with_headers(order_id)  # one query
    if order.status not in from_statuses:
        return SettleResult.ALREADY_SETTLED
    if not all(send.is_final for send in headers):
        return SettleResult.NOT_READY
    if all(send.status == Send.Status.SUCCEEDED for send in headers):
        reason = _because(why, "both partners succeeded")
        return _finish(order, headers, Order.Status.COMPLETED, reason, from_statuses, by)
    to_undo = [send for send in headers if send.may_have_taken_effect]
    if not to_undo:
        reason = _because(why, _summary(headers))
        return _finish(order, headers, Order.Status.FAILED, reason, from_statuses, by)
    return _start_compensation(order, headers, to_undo, why, from_statuses, by)


def _because(why: str, reason: str) -> str:
    return f"{why}; {reason}" if why else reason


def _finish(
    order: Order,
    sends: Iterable[Send],
    status: str,
    reason: str,
    from_statuses: Iterable[str] = SETTLING,
    by: status_history.Operator = None,
) -> SettleResult:
    """The order reaches a final status, and its card token is forgotten in the same
    transaction; once that commits, whoever waits on the order is told.

    `order` and `sends` are as the caller read them: the token is blanked from them, with
    no second read. The charge will not be sent again (a re-drive only retries
    compensations, and a refund's body has no source), so nothing needs the token any
    more, and a token kept forever is a token that can leak.
    """
    # Usually the charge forgot its token when it was answered: then the claim (with its
    # status history row) is the only statement, and needs no transaction around it.
    tokens = [(send.pk, body) for send in sends if (body := send.request_body_without_card_token())]
    now = timezone.now()
    with transaction.atomic() if tokens else contextlib.nullcontext():
        won = status_history.claim(
            order.pk,
            from_statuses=status_history.ordered_from(order.status, from_statuses),
            to_status=status,
            reason=reason,
            by=by,
            at=now,
            status_reason=reason,
            settled_at=now,
            payload=_without_payment_source(order.payload),
        )
        if not won:
            return SettleResult.ALREADY_SETTLED
        for send_id, body in tokens:
            Send.objects.filter(pk=send_id).update(request_body=body)
        transaction.on_commit(lambda: order_events.publish_final(order.pk), robust=True)
    metrics.record_order_settled(status, order.created_at)  # Prometheus: final status, latency
    logger.info("settled status=%s reason=%s", status, reason)
    return SettleResult(status)


def _without_payment_source(payload: dict[str, Any]) -> dict[str, Any]:
    return payload | {"payment_source": ""} if payload.get("payment_source") else payload


def _start_compensation(
    order: Order,
    headers: list[Send],
    to_undo: list[Send],
    why: str = "",
    from_statuses: Iterable[str] = SETTLING,
    by: status_history.Operator = None,
) -> SettleResult:
    """Claim the order for compensation and create the undo sends, in one transaction."""
    undoing = ", ".join(send.operation for send in to_undo)
    reason = _because(why, f"undoing {undoing}: {_summary(headers)}")
    with transaction.atomic():
        won = status_history.claim(
            order.pk,
            from_statuses=status_history.ordered_from(order.status, from_statuses),
            to_status=Order.Status.COMPENSATING,
            reason=reason,
            by=by,
            status_reason=reason,
            settled_at=None,
        )
        if not won:
            return SettleResult.ALREADY_SETTLED
        compensations = [
            _create_send(order, Send.COMPENSATION_OF[send.operation]) for send in to_undo
        ]
        ids = [send.pk for send in compensations]
        transaction.on_commit(lambda: enqueue.enqueue_compensations(ids), robust=True)
    logger.info("compensating: %s", reason)
    return SettleResult.COMPENSATING


def _summary(sends: Iterable[Send]) -> str:
    """Each send as it is now, in words an operator reads in the admin."""
    return "; ".join(
        f"{send.operation} {send.status}"
        + (f" ({send.failure_kind}: {send.error})" if send.status == Send.Status.FAILED else "")
        for send in sends
    )


def finish_compensation(order_id: uuid.UUID | str, *, why: str = "") -> SettleResult | None:
    """Once every compensation is final: compensated, failed, or needs_attention."""
    order = Order.objects.get(pk=order_id)
    if order.status != Order.Status.COMPENSATING:
        return None
    sends = list(order.sends.all())
    compensations = [send for send in sends if send.is_compensation]
    if not all(send.is_final for send in compensations):
        return None
    failed = [send for send in compensations if send.status == Send.Status.FAILED]
    if failed:
        status = Order.Status.NEEDS_ATTENTION
        reason = "compensation did not succeed: " + _summary(failed)
    elif any(send.undid_something for send in compensations):
        status = Order.Status.COMPENSATED
        reason = "undone: " + ", ".join(s.operation for s in compensations if s.undid_something)
    else:
        status = Order.Status.FAILED
        reason = "nothing had taken effect (the partners answered 404 to the undo)"
    return _finish(order, sends, status, _because(why, reason), (Order.Status.COMPENSATING,))


def expire(order_id: uuid.UUID | str, *, max_age_seconds: float) -> SettleResult | None:
    """An order not final past its maximum age: stop what has not finished, then apply
    the usual rules, so that anything that may have taken effect is undone.

    A send never called fails as `not_sent` (nothing to undo); one that was called, or
    is in flight, fails as `unknown` (it may have acted: compensated). The claim of every
    send checks its order, so nothing stopped here is called afterwards; an in-flight
    call that answers late finds its send taken and changes nothing. None when the
    order was final already.
    """
    why = f"expired: not final {max_age_seconds:g}s after it was created or re-driven"
    order = Order.objects.get(pk=order_id)
    if order.status in Send.HEADER_ORDER_STATUSES:
        _stop_unfinished(order.sends.filter(operation__in=Send.HEADER_OPERATIONS), why)
        return settle(order_id, why=why)
    if order.status in Send.COMPENSATION_ORDER_STATUSES:
        _stop_unfinished(order.sends.exclude(operation__in=Send.HEADER_OPERATIONS), why)
        return finish_compensation(order_id, why=why)
    return None


def _stop_unfinished(sends: QuerySet[Send], why: str) -> None:
    """Fail every send of `sends` that is not final, each by what it may have done."""
    stopped = {
        "status": Send.Status.FAILED,
        "finished_at": timezone.now(),
        "next_attempt_at": None,
        "lease_expires_at": None,
    }
    sends.filter(status=Send.Status.PENDING, attempts=0).update(
        failure_kind=Send.FailureKind.NOT_SENT, error=f"{why}: never sent", **stopped
    )
    sends.filter(
        Q(status=Send.Status.PENDING, attempts__gt=0) | Q(status=Send.Status.IN_FLIGHT)
    ).update(
        failure_kind=Send.FailureKind.UNKNOWN,
        error=f"{why}: sent before, outcome unknown",
        **stopped,
    )


@dataclass(frozen=True)
class RedriveResult:
    """What an operator's re-drive did: sends set going again, or why it did nothing."""

    sends: int = 0
    refused_because: str | None = None

    @property
    def refused(self) -> bool:
        return self.refused_because is not None


def redrive(order_id: uuid.UUID | str, *, by: status_history.Operator = None) -> RedriveResult:
    """An operator's re-drive of a needs_attention order, decided by its sends.

    - compensations not succeeded: retried, same idempotency keys, fresh attempt budget;
    - no compensation at all (given up before its outcome was settled): settle's rules
      on its header sends, which undo whatever may have taken effect;
    - nothing unfinished: refused with the reason, and the order is left as it is.

    Either way the order's maximum age counts again from now. A re-drive that did
    something is on record in its transaction: a `Redrive` row of kind `operator` and the
    status history row, both naming `by` (the staff user), and the order's re-drive count.
    """
    with transaction.atomic():
        order = Order.objects.select_for_update().filter(pk=order_id).first()
        if order is None or order.status != Order.Status.NEEDS_ATTENTION:
            status = order.status if order else "gone"
            return RedriveResult(refused_because=f"the order is {status}, not needs_attention")
        compensations = order.sends.exclude(operation__in=Send.HEADER_OPERATIONS)
        if compensations.exists():
            return _retry_compensations(order, compensations, by)
        Order.objects.filter(pk=order.pk).update(
            redriven_at=timezone.now(), redrive_count=F("redrive_count") + 1
        )
        why = "re-driven by an operator"
        _stop_unfinished(order.sends.filter(operation__in=Send.HEADER_OPERATIONS), why)
        result = settle(order.pk, why=why, from_statuses=(Order.Status.NEEDS_ATTENTION,), by=by)
        _record_operator_redrive(order, by, f"settle's rules applied to its sends: {result}")
    created = order.sends.exclude(operation__in=Send.HEADER_OPERATIONS).count()
    logger.info("re-driven by an operator: %s", result)
    return RedriveResult(sends=created)


def _record_operator_redrive(order: Order, by: status_history.Operator, detail: str) -> None:
    user = status_history.operator_user(by)
    Redrive.objects.create(
        order=order,
        kind=Redrive.Kind.OPERATOR,
        detail=detail,
        by=user,
        by_username=user.get_username() if user else "",
    )


def _retry_compensations(
    order: Order, compensations: QuerySet[Send], by: status_history.Operator = None
) -> RedriveResult:
    to_retry = compensations.exclude(status=Send.Status.SUCCEEDED)
    ids = list(to_retry.values_list("pk", flat=True))
    retrying = _summary(to_retry)
    if not ids:
        return RedriveResult(
            refused_because="nothing to re-drive: every compensation of this order succeeded"
        )
    to_retry.update(
        status=Send.Status.PENDING,
        failure_kind=Send.FailureKind.NONE,
        budget_starts_after=F("attempts"),
        started_at=None,
        next_attempt_at=None,
        lease_expires_at=None,
        finished_at=None,
    )
    reason = f"re-driven by an operator: retrying {retrying}"
    now = timezone.now()
    status_history.claim(
        order.pk,
        from_statuses=(Order.Status.NEEDS_ATTENTION,),
        to_status=Order.Status.COMPENSATING,
        reason=reason,
        by=by,
        at=now,
        status_reason=reason,
        settled_at=None,
        redriven_at=now,
        redrive_count=F("redrive_count") + 1,
    )
    _record_operator_redrive(order, by, f"retrying {retrying}")
    transaction.on_commit(lambda: enqueue.enqueue_compensations(ids), robust=True)
    logger.info("re-driven by an operator: %s compensation(s)", len(ids))
    return RedriveResult(sends=len(ids))
