"""Rows for the tests: an order, a send, an attempt, with sensible defaults.

Each factory saves its row directly with the ORM and dispatches nothing; keyword arguments
override any field. `create_order` makes an order as POST /api/orders saves it: pending,
with its two header sends.
"""

import datetime
from typing import Any

from django.utils import timezone

from dualsend_app.models import Attempt, Order, Send
from dualsend_app.partners import clients
from dualsend_app.partners.outcomes import AnswerOutcome
from tests.helpers import new_request_id, order_body


def create_order(*, header_sends: bool = True, **fields: Any) -> Order:
    """A saved order (pending unless `status` says otherwise) with the valid order body;
    with its two header sends, pending, unless `header_sends` is False."""
    defaults = {
        "client": "test",
        "request_fingerprint": "f" * 64,
        "payload": order_body(),
        "correlation_id": new_request_id(),
    }
    order = Order.objects.create(**(defaults | fields))
    if header_sends:
        for operation in Send.HEADER_OPERATIONS:
            create_send(order, operation)
    return order


def create_send(order: Order, operation: str, **fields: Any) -> Send:
    """A saved send of `order`, pending, with the request its partner module builds."""
    method, path, body = clients.build_request(operation, order)
    defaults = {"method": method, "path": path, "request_body": body}
    return Send.objects.create(order=order, operation=operation, **(defaults | fields))


def create_attempt(send: Send, number: int = 1, **fields: Any) -> Attempt:
    """A saved attempt of `send`: by default a 201, made just now, that took 40 ms."""
    defaults = {
        "started_at": timezone.now(),
        "duration_ms": 40,
        "status_code": 201,
        "outcome": AnswerOutcome.SUCCEEDED,
    }
    return Attempt.objects.create(send=send, number=number, **(defaults | fields))


def stranded_order(
    *, status: str, age_seconds: float = 30, **send_states: tuple[str, bool]
) -> Order:
    """An order as a lost message leaves it: rows in the database, nothing in the broker.

    `send_states` maps each operation to create to (its status, whether it is finished);
    the order and its sends were created `age_seconds` ago.
    """
    created = timezone.now() - datetime.timedelta(seconds=age_seconds)
    order = create_order(
        header_sends=False,
        status=status,
        created_at=created,
        dispatched_at=None if status == Order.Status.PENDING else created,
    )
    for operation, (send_status, finished) in send_states.items():
        create_send(
            order,
            operation,
            status=send_status,
            created_at=created,
            finished_at=created if finished else None,
        )
    return order


def needs_attention_order() -> tuple[Order, Send]:
    """Charged, stock declined, and the refund ran out of retries."""
    order = create_order(header_sends=False, status=Order.Status.NEEDS_ATTENTION)
    create_send(
        order,
        Send.Operation.INVENTORY_RESERVE,
        status=Send.Status.FAILED,
        failure_kind=Send.FailureKind.DECLINED,
    )
    create_send(order, Send.Operation.PAYMENT_CHARGE, status=Send.Status.SUCCEEDED)
    refund = create_send(
        order,
        Send.Operation.PAYMENT_REFUND,
        status=Send.Status.FAILED,
        failure_kind=Send.FailureKind.UNKNOWN,
        attempts=10,
    )
    return order, refund
