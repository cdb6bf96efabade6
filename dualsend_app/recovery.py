"""Find work whose message was lost and send it again: the sweeper's rules.

A message can be lost when the broker was down at commit, a worker was killed, or Redis
restarted without persistence. The database still knows what was meant to happen, so
each rule below finds one kind of stranded work and re-drives it. Re-driving is safe to
repeat: the same sends with the same idempotency keys, and every task claims before it
acts. Each re-drive is a `Redrive` row on its order; an order past its maximum age is
given up to `needs_attention` with the reason.
"""

import datetime
import logging
import uuid
from collections.abc import Callable

from django.conf import settings
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from . import enqueue, log_context, metrics_state, orders, tracing
from .models import Order, Redrive, Send

logger = logging.getLogger(__name__)

# One sweep touches at most this many rows per rule, so it always ends quickly.
BATCH = 200


def sweep(
    now: datetime.datetime | None = None, still_ours: Callable[[], bool] = lambda: True
) -> dict[str, int]:
    """Run every rule once; returns how many items each one re-drove.

    `still_ours` is asked before each rule: False (the sweep lock lapsed while this sweep
    was slow, and a newer sweep holds it) ends this sweep, leaving the rest to the newer.
    """
    now = now or timezone.now()
    grace = datetime.timedelta(seconds=settings.DUALSEND_SWEEP_GRACE_SECONDS)
    busy = busy_queues()
    rules: dict[str, Callable[[], int]] = {
        "expired": lambda: expire_old_orders(now),
        "dispatch": lambda: redispatch_undispatched_orders(now - grace),
        "send": lambda: requeue_lost_sends(now, now - grace, busy=busy),
        "settle": lambda: (
            0 if settings.QUEUE_DEFAULT in busy else resettle_forgotten_orders(now - grace)
        ),
        "finish": lambda: finish_forgotten_compensations(now - grace),
    }
    counts = dict.fromkeys(rules, 0)
    for name, rule in rules.items():
        if not still_ours():
            break
        counts[name] = rule()
    return counts


def busy_queues() -> frozenset[str]:
    """The queues with messages waiting in them.

    Work overdue in such a queue may well be in it, behind the others (a burst longer than
    the grace), not lost: sending it again would add a duplicate behind the original, and
    under load every sweep would add more work to the very queue that is late. It is
    re-driven once its queue has drained, if it is still overdue then. A broker that cannot
    say: no queue counts as busy (the re-drive will meet the same broker).
    """
    queues = (settings.QUEUE_INVENTORY, settings.QUEUE_PAYMENT, settings.QUEUE_DEFAULT)
    try:
        depths = metrics_state.read_queue_depths(settings.CELERY_BROKER_URL, queues)
    except Exception as exc:  # whatever the broker's client raises
        logger.warning("sweep: queue depths unreadable (%s: %s)", type(exc).__name__, exc)
        return frozenset()
    return frozenset(queue for queue, waiting in depths.items() if waiting)


def not_redriven_since(since: datetime.datetime, *kinds: str, order_ref: str = "pk") -> Q:
    """No re-drive of these kinds since `since`: a re-driven message waiting in a busy
    queue is not lost, and sending it again on every sweep would only lengthen the queue."""
    recent = Redrive.objects.filter(order_id=OuterRef(order_ref), kind__in=kinds, at__gte=since)
    return ~Exists(recent)


def expire_old_orders(now: datetime.datetime) -> int:
    """Not final past the maximum age (counted from creation, or from an operator's
    re-drive): its unfinished sends stop and settle's rules decide (`orders.expire`)."""
    max_age = settings.DUALSEND_ORDER_MAX_AGE_SECONDS
    too_old = now - datetime.timedelta(seconds=max_age)
    stale = (
        Order.objects.exclude(status__in=Order.FINAL_STATUSES)
        .filter(Q(redriven_at__isnull=True, created_at__lt=too_old) | Q(redriven_at__lt=too_old))
        .values_list("pk", "correlation_id")
    )
    count = 0
    for order_id, correlation_id in stale[:BATCH]:
        with log_context.bound(order_id=order_id, correlation_id=correlation_id):
            result = orders.expire(order_id, max_age_seconds=max_age)
            if result is not None and result is not orders.SettleResult.ALREADY_SETTLED:
                status_reason = Order.objects.values_list("status_reason", flat=True).get(
                    pk=order_id
                )
                record_redrive(order_id, Redrive.Kind.EXPIRED, f"{result}: {status_reason}")
                count += 1
    return count


def redispatch_undispatched_orders(created_before: datetime.datetime) -> int:
    """Still pending: its sends never reached the broker (it was down at commit)."""
    pending = Order.objects.filter(
        not_redriven_since(created_before, Redrive.Kind.DISPATCH),
        status=Order.Status.PENDING,
        created_at__lt=created_before,
    )
    return redrive_each(
        pending, _dispatch_if_still_pending, Redrive.Kind.DISPATCH, "sends dispatched again"
    )


def _dispatch_if_still_pending(order_id: uuid.UUID) -> bool:
    """Dispatch an order of the sweep's list unless it was dispatched since.

    The list is read once, and dispatching 200 orders under load takes seconds: meanwhile
    the batch request that created them reaches them too (it looks first as well:
    `orders._dispatched_by_the_sweeper`). Without this look, a short bench's batch burst had
    the sweeper dispatch 184 orders of which the web skipped only 30: 154 dispatched twice.
    """
    return orders.still_pending(order_id) and enqueue.dispatch_order(order_id)


def redrive_each(
    stranded: QuerySet[Order],
    publish: Callable[[uuid.UUID], bool],
    kind: Redrive.Kind,
    reason: str,
) -> int:
    """`publish(order_id)` for up to BATCH of the `stranded` orders; a `Redrive` row for each that
    went out. Returns how many did."""
    count = 0
    for order_id, correlation_id in stranded.values_list("pk", "correlation_id")[:BATCH]:
        # Its log lines, and the tasks it publishes, carry the order's ids.
        with log_context.bound(order_id=order_id, correlation_id=correlation_id):
            with tracing.new_trace(f"re-drive {kind}", order_id=str(order_id)):
                published = publish(order_id)
            if published:
                record_redrive(order_id, kind, reason)
                count += 1
    return count


def requeue_lost_sends(
    now: datetime.datetime, due_before: datetime.datetime, busy: frozenset[str] = frozenset()
) -> int:
    """A send whose next step is long overdue: its message was lost. Enqueue it alone.

    Pending and overdue (never picked up, or its retry message vanished) while its queue
    is not `busy`, or in flight with an expired lease (its worker died mid-call). An
    order whose sends are final but that is not settled is `resettle_forgotten_orders`'.
    """
    waiting_behind_others = [op for op in Send.Operation.values if enqueue.queue_of(op) in busy]
    overdue = (
        Q(status=Send.Status.PENDING)
        & (
            Q(next_attempt_at__lt=due_before)
            | Q(next_attempt_at__isnull=True, created_at__lt=due_before)
        )
        & ~Q(operation__in=waiting_behind_others)
    )
    abandoned = Q(status=Send.Status.IN_FLIGHT, lease_expires_at__lt=now)
    lost = Send.objects.filter(overdue | abandoned).filter(
        not_redriven_since(
            due_before, Redrive.Kind.SEND, Redrive.Kind.COMPENSATION, order_ref="order_id"
        ),
        order__status__in=(Order.Status.DISPATCHED, Order.Status.COMPENSATING),
    )
    count = 0
    for send in lost.select_related("order")[:BATCH]:
        with log_context.bound(order_id=send.order_id, correlation_id=send.order.correlation_id):
            with tracing.new_trace("re-drive send", order_id=str(send.order_id), send_id=send.pk):
                published = enqueue.enqueue_send(send)
            if not published:
                continue
            kind = Redrive.Kind.COMPENSATION if send.is_compensation else Redrive.Kind.SEND
            detail = f"{send.operation} was {send.status}: enqueued again"
            record_redrive(send.order_id, kind, detail)
            count += 1
    return count


def resettle_forgotten_orders(finished_before: datetime.datetime) -> int:
    """Both sends final for a while, the order still dispatched: the callback was lost."""
    # A dispatched order has only its two header sends.
    unsettled = Order.objects.filter(status=Order.Status.DISPATCHED).exclude(
        sends__status__in=(Send.Status.PENDING, Send.Status.IN_FLIGHT)
    )
    unsettled = unsettled.exclude(sends__finished_at__gte=finished_before).filter(
        not_redriven_since(finished_before, Redrive.Kind.SETTLE)
    )
    return redrive_each(
        unsettled,
        enqueue.enqueue_settle,
        Redrive.Kind.SETTLE,
        "both sends final, settle enqueued again",
    )


def finish_forgotten_compensations(finished_before: datetime.datetime) -> int:
    """Compensating with every compensation final: close it here (a database update)."""
    stuck = Order.objects.filter(status=Order.Status.COMPENSATING).exclude(
        sends__status__in=(Send.Status.PENDING, Send.Status.IN_FLIGHT)
    )
    stuck = stuck.exclude(sends__finished_at__gte=finished_before)
    count = 0
    for order_id, correlation_id in stuck.values_list("pk", "correlation_id")[:BATCH]:
        with log_context.bound(order_id=order_id, correlation_id=correlation_id):
            result = orders.finish_compensation(order_id)
            if result and result != orders.SettleResult.ALREADY_SETTLED:
                record_redrive(order_id, Redrive.Kind.FINISH, f"compensations closed: {result}")
                count += 1
    return count


def record_redrive(order_id: uuid.UUID | str, kind: Redrive.Kind, detail: str) -> None:
    Redrive.objects.create(order_id=order_id, kind=kind, detail=detail)
    Order.objects.filter(pk=order_id).update(redrive_count=F("redrive_count") + 1)
    logger.warning("re-driven by the sweeper: %s (%s)", kind, detail)
