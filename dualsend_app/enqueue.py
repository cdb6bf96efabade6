"""Hand work to the broker: the two sends of an order, the compensations of a settle.

Signatures are built by task name (routes in settings pick the queue), so the business
rules enqueue without importing the task modules: tasks/ calls into this package, never
the other way round. Every function here is safe to call while the broker is down: it
logs, returns False, and the sweeper (`recovery.py`) tries again later.
"""

import contextlib
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence

from celery import current_app, signature
from celery.canvas import Signature
from django.conf import settings
from django.utils import timezone
from kombu import Producer

from . import log_context, status_history, tracing
from .models import Order, Send

logger = logging.getLogger(__name__)

SEND_TASK_BY_PARTNER = {
    "inventory": "tasks.sends.send_inventory",
    "payment": "tasks.sends.send_payment",
}
SETTLE_TASK = "tasks.settle.settle_order"
COMPENSATE_TASK = "tasks.compensations.compensate"
DISPATCHED_REASON = "the sends are with the broker"


def dispatch_order(order_id: uuid.UUID | str, sends: Iterable[Send] | None = None) -> bool:
    """reserve and charge, each to its queue; mark the order dispatched once the broker
    has both. Whichever finishes last settles the order (`tasks/sends.py`): the join is
    the order's rows, not a Celery chord, whose counter in Redis cost more CPU than the
    send's own bookkeeping and was lost whenever Redis restarted empty.

    `sends` are the order's header sends when the caller holds them (it just created
    them); otherwise they are read."""
    if sends is None:
        sends = Send.objects.filter(order_id=order_id, operation__in=Send.HEADER_OPERATIONS)
    try:
        with _one_pipeline() as producer:
            _publish_sends(producer, order_id, sends)
    except Exception:
        # The broker is down: the order stays pending and the sweeper dispatches it later.
        logger.exception("order could not be dispatched; left pending")
        return False
    mark_dispatched(order_id)
    return True


def dispatch_orders(orders: Sequence[Order]) -> bool:
    """`dispatch_order` for the orders a batch created (each with its `new_sends`): their
    sends go to a Redis broker in one pipeline, and they are marked dispatched in one
    statement. All or none: a broker that fails leaves them all pending, for the sweeper.

    One at a time, a batch's dispatch was most of the web's CPU for it: a producer taken
    from the pool, a round trip and an UPDATE for each message and order (py-spy, issue 8).
    """
    if not orders:
        return True
    try:
        with _one_pipeline() as producer:
            for order in orders:
                # Each order's ids go in its tasks' headers (task_log_context.py).
                with log_context.bound(order_id=order.pk, correlation_id=order.correlation_id):
                    _publish_sends(producer, order.pk, order.new_sends)
    except Exception:
        logger.exception("%s orders could not be dispatched; left pending", len(orders))
        return False
    mark_dispatched(*(order.pk for order in orders))
    return True


@contextlib.contextmanager
def _one_pipeline() -> Iterator[Producer]:
    """One producer for several messages: on a Redis broker they go in one round trip
    (kombu's `Producer.batch`), sent when the block ends; another broker sends each at
    once. A block that raises sends nothing that was still buffered."""
    with current_app.producer_or_acquire() as producer, producer.batch():
        yield producer


def _publish_sends(producer: Producer, order_id: uuid.UUID | str, sends: Iterable[Send]) -> None:
    # The publications run in this span: each task's message carries it.
    with tracing.span("dispatch order", order_id=str(order_id)):
        for send in sends:
            send_task(send).apply_async(producer=producer)


def mark_dispatched(*order_ids: uuid.UUID | str) -> None:
    """pending → dispatched with the time of the first dispatch, and a status history row
    each: one statement for them all (`status_history.claim_many`).

    An order that moved on meanwhile (its sends and settle ran before this line) keeps
    its status; only the time of its first dispatch is filled in, by a second UPDATE
    that happens in that case only.
    """
    now = timezone.now()
    ids = [Order._meta.pk.to_python(order_id) for order_id in order_ids]
    # A pending order was never marked dispatched (the mark moves it on, and nothing
    # moves an order back to pending): this is its first dispatch time.
    moved = status_history.claim_many(
        ids,
        from_status=Order.Status.PENDING,
        to_status=Order.Status.DISPATCHED,
        reason=DISPATCHED_REASON,
        at=now,
        dispatched_at=now,
    )
    moved_on = [order_id for order_id in ids if order_id not in moved]
    if moved_on:
        Order.objects.filter(pk__in=moved_on, dispatched_at__isnull=True).update(
            dispatched_at=now, updated_at=now
        )


def enqueue_compensations(send_ids: Iterable[int]) -> None:
    # One read, for the order and operation each task shows (`order_task`).
    compensations = Send.objects.filter(pk__in=list(send_ids)).only("order_id", "operation")
    for send in compensations:
        _publish(send_task(send), f"compensation send={send.pk}")


def enqueue_send(send: Send) -> bool:
    """One send on its own (the sweeper's re-drive): a header send settles its order
    once it is final, as when the order was dispatched."""
    return _publish(send_task(send), f"send={send.pk}")


def enqueue_settle(order_id: uuid.UUID | str) -> bool:
    return _publish(settle_task(order_id, []), "settle")


def send_task(send: Send) -> Signature:
    """The task that runs one send: its partner's send task, or a compensation."""
    return order_task(_task_name(send.operation), (send.pk,), send.order_id, send.operation)


def queue_of(operation: str) -> str:
    """The queue a send of this operation waits in (the routes in settings)."""
    return settings.CELERY_TASK_ROUTES[_task_name(operation)]["queue"]


def _task_name(operation: str) -> str:
    if operation in Send.HEADER_OPERATIONS:
        return SEND_TASK_BY_PARTNER[Send.partner_of(operation)]
    return COMPENSATE_TASK


def settle_task(order_id: uuid.UUID | str, *header_results: list) -> Signature:
    """settle(header_results, order_id): the sweeper's, when the sends did not settle it."""
    return order_task(SETTLE_TASK, (*header_results, str(order_id)), order_id)


def order_task(name: str, args: tuple, order_id: uuid.UUID | str, operation: str = "") -> Signature:
    """A task of an order, found in Flower by the order's id.

    The task takes ids (a send's, or the order's for settle); Flower shows and searches the
    kwargs its task events carry, which is `kwargsrepr`: here the order's id and the
    operation, for every task of the order. Retries keep it (`tasks/options.py`).
    `kwargs:order_id=<id>` in Flower's search matches it exactly.
    """
    shown = {"order_id": str(order_id)}
    if operation:
        shown["operation"] = str(operation)
    # No task of an order stores a result (tasks/), but a process that publishes by name
    # does not know that: Celery's `send_task` would SUBSCRIBE to each task's result
    # channel before publishing, and the result's `__del__` UNSUBSCRIBE, two useless
    # Redis round trips per task. Saying it here skips both.
    return signature(name, args=args, kwargsrepr=repr(shown), ignore_result=True)


def _publish(task_signature: Signature, what: str) -> bool:
    """True once the broker has it; a broker outage is logged, the sweeper tries again."""
    try:
        task_signature.apply_async()
    except Exception:
        logger.exception("%s could not be enqueued; the sweeper will try again", what)
        return False
    return True
