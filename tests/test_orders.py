"""The business rules of settling, called directly (no worker): outcome → order status."""

import pytest

from dualsend_app import orders
from dualsend_app.models import Order, Send
from tests.factories import create_order, create_send

Op = Send.Operation
S = Send.Status
K = Send.FailureKind


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    """Nothing is published here: record what would have been."""
    published = []
    monkeypatch.setattr(orders.enqueue, "enqueue_compensations", published.extend)
    monkeypatch.setattr(
        orders.enqueue, "dispatch_order", lambda order_id, sends=None: published.append(order_id)
    )
    return published


def order_with(status=Order.Status.DISPATCHED, **sends):
    """An order whose sends are each (status, failure kind, nothing to undo)."""
    order = create_order(status=status, header_sends=False)
    for operation, (send_status, kind, nothing_to_undo) in sends.items():
        create_send(
            order, operation, status=send_status, failure_kind=kind, nothing_to_undo=nothing_to_undo
        )
    return order


OK = (S.SUCCEEDED, K.NONE, False)
DECLINED = (S.FAILED, K.DECLINED, False)
UNKNOWN = (S.FAILED, K.UNKNOWN, False)
NOT_SENT = (S.FAILED, K.NOT_SENT, False)
UNDONE = (S.SUCCEEDED, K.NONE, False)
NOTHING_THERE = (S.SUCCEEDED, K.NONE, True)
COMP_FAILED = (S.FAILED, K.UNKNOWN, False)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("reserve", "charge", "expected", "undo"),
    [
        (OK, OK, orders.SettleResult.COMPLETED, set()),
        (DECLINED, DECLINED, orders.SettleResult.FAILED, set()),
        (NOT_SENT, DECLINED, orders.SettleResult.FAILED, set()),
        (OK, DECLINED, orders.SettleResult.COMPENSATING, {Op.INVENTORY_RELEASE}),
        (DECLINED, OK, orders.SettleResult.COMPENSATING, {Op.PAYMENT_REFUND}),
        (OK, UNKNOWN, orders.SettleResult.COMPENSATING, {Op.INVENTORY_RELEASE, Op.PAYMENT_REFUND}),
        (UNKNOWN, NOT_SENT, orders.SettleResult.COMPENSATING, {Op.INVENTORY_RELEASE}),
    ],
)
def test_settle_decides_from_both_outcomes(reserve, charge, expected, undo):
    """Every side that may have taken effect is undone; a definite no or never-sent is clean."""
    order = order_with(**{Op.INVENTORY_RESERVE: reserve, Op.PAYMENT_CHARGE: charge})

    assert orders.settle(order.pk) == expected

    created = set(order.sends.exclude(operation__in=Send.HEADER_OPERATIONS)
                  .values_list("operation", flat=True))
    assert created == undo
    assert orders.settle(order.pk) == orders.SettleResult.ALREADY_SETTLED


@pytest.mark.django_db
def test_settle_waits_while_a_send_is_not_final():
    """allSettled: one side still in flight, nothing is decided yet."""
    in_flight = (S.IN_FLIGHT, K.NONE, False)
    order = order_with(**{Op.INVENTORY_RESERVE: OK, Op.PAYMENT_CHARGE: in_flight})
    assert orders.settle(order.pk) == orders.SettleResult.NOT_READY
    order.refresh_from_db()
    assert order.status == Order.Status.DISPATCHED


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("release", "refund", "expected"),
    [
        (UNDONE, UNDONE, orders.SettleResult.COMPENSATED),
        (UNDONE, NOTHING_THERE, orders.SettleResult.COMPENSATED),
        (NOTHING_THERE, NOTHING_THERE, orders.SettleResult.FAILED),
        (UNDONE, COMP_FAILED, orders.SettleResult.NEEDS_ATTENTION),
    ],
)
def test_finish_compensation_names_the_final_status(release, refund, expected):
    """Something undone: compensated; nothing was there: failed; an undo failed: attention."""
    order = order_with(
        status=Order.Status.COMPENSATING,
        **{Op.INVENTORY_RESERVE: OK, Op.PAYMENT_CHARGE: UNKNOWN,
           Op.INVENTORY_RELEASE: release, Op.PAYMENT_REFUND: refund},
    )

    assert orders.finish_compensation(order.pk) == expected

    order.refresh_from_db()
    assert order.status == expected.value and order.settled_at is not None
    assert orders.finish_compensation(order.pk) is None


@pytest.mark.django_db
def test_finish_compensation_waits_for_every_compensation():
    """One compensation still pending: the order stays compensating."""
    order = order_with(
        status=Order.Status.COMPENSATING,
        **{Op.INVENTORY_RESERVE: OK, Op.PAYMENT_CHARGE: UNKNOWN,
           Op.INVENTORY_RELEASE: UNDONE, Op.PAYMENT_REFUND: (S.PENDING, K.NONE, False)},
    )
    assert orders.finish_compensation(order.pk) is None
