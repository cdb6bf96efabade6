"""Every status change of an order is a row: from, to, when, why, and who for an operator.

The business rules are called directly (no worker, no broker: publishing is recorded
instead); each test reads the order's `status_changes` afterwards. A move that did not
happen (a claim that lost) leaves no row.
"""

import datetime

import pytest
from celery.canvas import Signature
from django.contrib.auth import get_user_model
from django.utils import timezone

from dualsend_app import enqueue, orders, recovery, status_history
from dualsend_app.models import Order, OrderStatusChange, Send
from tests.factories import create_order, create_send, stranded_order
from tests.helpers import new_request_id, order_body

pytestmark = pytest.mark.django_db

Op = Send.Operation
S = Send.Status


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    """Nothing is published: what would have been is recorded."""
    published = []
    monkeypatch.setattr(orders.enqueue, "enqueue_compensations", published.extend)
    monkeypatch.setattr(Signature, "apply_async", lambda task, *a, **k: published.append(task))
    return published


def moves(order):
    """The order's history as (from, to) pairs, oldest first."""
    return list(order.status_changes.values_list("from_status", "to_status"))


def order_with(status=Order.Status.DISPATCHED, **sends):
    """An order whose sends are each (status, failure kind)."""
    order = create_order(status=status, header_sends=False)
    for operation, (send_status, kind) in sends.items():
        create_send(order, operation, status=send_status, failure_kind=kind)
    return order


OK = (S.SUCCEEDED, Send.FailureKind.NONE)
DECLINED = (S.FAILED, Send.FailureKind.DECLINED)
UNKNOWN = (S.FAILED, Send.FailureKind.UNKNOWN)


def create_through_the_rules():
    return orders.create_order(
        client="test",
        idempotency_key="",
        fingerprint="f" * 64,
        payload=order_body(),
        correlation_id=new_request_id(),
    )


# --- creation and dispatch ---------------------------------------------------------------


def test_a_new_order_starts_its_history_pending_at_its_creation_time():
    """The creation row: from nothing to pending, at created_at, saved with the order."""
    order = create_through_the_rules()

    (change,) = order.status_changes.all()
    assert (change.from_status, change.to_status) == ("", Order.Status.PENDING)
    assert change.at == order.created_at
    assert change.reason
    assert change.by is None and change.by_username == ""


def test_dispatch_records_pending_to_dispatched_at_the_dispatch_time():
    order = create_through_the_rules()

    assert enqueue.dispatch_order(order.pk)

    order.refresh_from_db()
    assert order.status == Order.Status.DISPATCHED
    assert moves(order) == [("", "pending"), ("pending", "dispatched")]
    assert order.status_changes.last().at == order.dispatched_at


def test_a_second_dispatch_changes_nothing_and_records_nothing():
    """The sweeper re-dispatching an order already dispatched: no second row."""
    order = create_through_the_rules()
    enqueue.dispatch_order(order.pk)
    first_dispatch = Order.objects.get(pk=order.pk).dispatched_at

    enqueue.dispatch_order(order.pk)

    order.refresh_from_db()
    assert moves(order) == [("", "pending"), ("pending", "dispatched")]
    assert order.dispatched_at == first_dispatch


def test_an_order_settled_before_its_dispatch_was_marked_keeps_its_status():
    """The worker settled it first: dispatch fills in its time, records no move."""
    order = order_with(Order.Status.PENDING, **{Op.INVENTORY_RESERVE: OK, Op.PAYMENT_CHARGE: OK})
    assert orders.settle(order.pk) == orders.SettleResult.COMPLETED

    enqueue.mark_dispatched(order.pk)

    order.refresh_from_db()
    assert order.status == Order.Status.COMPLETED
    assert order.dispatched_at is not None
    assert moves(order) == [("pending", "completed")]


# --- settle and compensation ---------------------------------------------------------------


def test_settle_records_the_final_status_with_its_reason_and_time():
    order = order_with(**{Op.INVENTORY_RESERVE: OK, Op.PAYMENT_CHARGE: OK})

    orders.settle(order.pk)

    order.refresh_from_db()
    (change,) = order.status_changes.all()
    assert (change.from_status, change.to_status) == ("dispatched", "completed")
    assert change.reason == order.status_reason == "both partners succeeded"
    assert change.at == order.settled_at


def test_a_duplicate_settle_records_nothing():
    """The claim lost: no row for a move that did not happen."""
    order = order_with(**{Op.INVENTORY_RESERVE: DECLINED, Op.PAYMENT_CHARGE: DECLINED})
    orders.settle(order.pk)

    assert orders.settle(order.pk) == orders.SettleResult.ALREADY_SETTLED

    assert OrderStatusChange.objects.filter(order=order, to_status="failed").count() == 1


def test_compensation_then_its_end_are_two_rows():
    """dispatched → compensating (undoing the charge) → compensated."""
    order = order_with(**{Op.INVENTORY_RESERVE: DECLINED, Op.PAYMENT_CHARGE: OK})
    orders.settle(order.pk)
    Send.objects.filter(order=order, operation=Op.PAYMENT_REFUND).update(status=S.SUCCEEDED)

    assert orders.finish_compensation(order.pk) == orders.SettleResult.COMPENSATED

    assert moves(order) == [("dispatched", "compensating"), ("compensating", "compensated")]
    assert "undoing payment.charge" in order.status_changes.first().reason


def test_a_compensation_that_failed_records_needs_attention():
    order = order_with(**{Op.INVENTORY_RESERVE: DECLINED, Op.PAYMENT_CHARGE: OK})
    orders.settle(order.pk)
    Send.objects.filter(order=order, operation=Op.PAYMENT_REFUND).update(
        status=S.FAILED, failure_kind=Send.FailureKind.UNKNOWN
    )

    orders.finish_compensation(order.pk)

    assert moves(order)[-1] == ("compensating", "needs_attention")
    assert order.status_changes.last().reason.startswith("compensation did not succeed")


def test_expiry_is_recorded_with_its_reason():
    order = stranded_order(
        status=Order.Status.DISPATCHED,
        age_seconds=3600,
        **{Op.INVENTORY_RESERVE: (S.PENDING, False), Op.PAYMENT_CHARGE: (S.PENDING, False)},
    )

    assert recovery.expire_old_orders(timezone.now()) == 1

    (change,) = order.status_changes.all()
    assert (change.from_status, change.to_status) == ("dispatched", "failed")
    assert change.reason.startswith("expired: not final")


# --- the claim itself ------------------------------------------------------------------------


def test_the_recorded_from_status_is_the_one_the_update_replaced():
    """Settle allows pending or dispatched and read pending, but dispatch moved the order
    meanwhile: the row says dispatched, the status the claim really replaced."""
    order = create_order(status=Order.Status.DISPATCHED, header_sends=False)

    won = status_history.claim(
        order.pk,
        from_statuses=status_history.ordered_from("pending", ["pending", "dispatched"]),
        to_status=Order.Status.COMPLETED,
        reason="test",
    )

    assert won
    assert moves(order) == [("dispatched", "completed")]


def test_a_claim_that_loses_changes_nothing_and_records_nothing():
    order = create_order(status=Order.Status.COMPLETED, header_sends=False)

    won = status_history.claim(
        order.pk,
        from_statuses=[Order.Status.PENDING, Order.Status.DISPATCHED],
        to_status=Order.Status.FAILED,
        reason="too late",
        status_reason="too late",
    )

    assert not won
    order.refresh_from_db()
    assert order.status == Order.Status.COMPLETED
    assert order.status_reason == ""
    assert moves(order) == []


def test_a_claim_and_its_row_are_one_statement_on_postgresql(django_assert_num_queries):
    """The hot path pays no extra round trip: the UPDATE and the INSERT go together."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("one statement on PostgreSQL; two in a transaction elsewhere")
    order = create_order(status=Order.Status.DISPATCHED, header_sends=False)

    with django_assert_num_queries(1):
        status_history.claim(
            order.pk,
            from_statuses=[Order.Status.DISPATCHED],
            to_status=Order.Status.COMPLETED,
            reason="both partners succeeded",
            settled_at=timezone.now(),
        )

    assert moves(order) == [("dispatched", "completed")]


def test_an_operators_row_keeps_their_name_after_their_account_is_deleted():
    user = get_user_model().objects.create_user("night-operator", is_staff=True)
    order = create_order(status=Order.Status.NEEDS_ATTENTION, header_sends=False)
    status_history.claim(
        order.pk,
        from_statuses=[Order.Status.NEEDS_ATTENTION],
        to_status=Order.Status.COMPENSATING,
        reason="re-driven",
        by=user,
        at=timezone.now() - datetime.timedelta(seconds=1),
    )

    user.delete()

    (change,) = order.status_changes.all()
    assert change.by is None
    assert change.by_username == "night-operator"


def test_claim_many_moves_the_pending_ones_and_records_each_in_one_statement(
    django_assert_num_queries,
):
    pending = [create_order(status=Order.Status.PENDING) for _ in range(3)]
    settled = create_order(status=Order.Status.COMPLETED)
    at = timezone.now()

    with django_assert_num_queries(1):
        moved = status_history.claim_many(
            [order.pk for order in (*pending, settled)],
            from_status=Order.Status.PENDING,
            to_status=Order.Status.DISPATCHED,
            reason="the sends are with the broker",
            at=at,
            dispatched_at=at,
        )

    assert moved == {order.pk for order in pending}
    for order in pending:
        order.refresh_from_db()
        assert (order.status, order.dispatched_at) == (Order.Status.DISPATCHED, at)
        assert moves(order)[-1] == ("pending", "dispatched")
    settled.refresh_from_db()
    assert settled.status == Order.Status.COMPLETED and not settled.status_changes.exists()


def test_a_batch_is_published_through_one_producer_then_marked_dispatched(
    no_broker, monkeypatch
):
    """Every send of every order through the same producer, in its batch; then each order
    pending → dispatched with its history row, one that moved on meanwhile keeping its
    status with its dispatch time."""
    created = [create_through_the_rules() for _ in range(2)]
    raced = order_with(Order.Status.PENDING, **{Op.INVENTORY_RESERVE: OK, Op.PAYMENT_CHARGE: OK})
    assert orders.settle(raced.pk) == orders.SettleResult.COMPLETED
    raced.new_sends = list(raced.sends.all())
    producers = []
    monkeypatch.setattr(
        Signature,
        "apply_async",
        lambda task, *a, **k: no_broker.append(task) or producers.append(k["producer"]),
    )

    assert enqueue.dispatch_orders([*created, raced])

    assert len(no_broker) == 6 and len({id(producer) for producer in producers}) == 1
    for order in created:
        order.refresh_from_db()
        assert order.status == Order.Status.DISPATCHED
        assert moves(order) == [("", "pending"), ("pending", "dispatched")]
    raced.refresh_from_db()
    assert raced.status == Order.Status.COMPLETED and raced.dispatched_at is not None


def test_a_batch_the_broker_refuses_stays_pending(monkeypatch):
    created = [create_through_the_rules() for _ in range(2)]

    def broker_down(task, *args, **kwargs):
        raise ConnectionError("the broker is down")

    monkeypatch.setattr(Signature, "apply_async", broker_down)

    assert not enqueue.dispatch_orders(created)
    for order in created:
        order.refresh_from_db()
        assert order.status == Order.Status.PENDING and order.dispatched_at is None


def test_one_order_s_two_sends_go_through_one_producer(no_broker, monkeypatch):
    order = create_through_the_rules()
    producers = []
    monkeypatch.setattr(
        Signature,
        "apply_async",
        lambda task, *a, **k: no_broker.append(task) or producers.append(k["producer"]),
    )

    assert enqueue.dispatch_order(order.pk)

    assert sorted(task.task for task in no_broker) == [
        "tasks.sends.send_inventory",
        "tasks.sends.send_payment",
    ]
    assert len({id(producer) for producer in producers}) == 1
