"""An order published late (a batch under load) is not published a second time.

Under load a batch's orders came up for dispatch after the sweep grace, when the sweeper
had already taken them for lost and dispatched them. These tests run the real on-commit
callbacks of `orders.create_order` and `orders.created_together` after the sweeper's part
is played by hand.
"""

import datetime

import pytest

from dualsend_app import orders
from dualsend_app.models import Order
from tests.helpers import new_request_id, order_body

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("dispatched")]


def create_with_callback(django_capture_on_commit_callbacks):
    """A new order and its on-commit dispatch, not run yet."""
    with django_capture_on_commit_callbacks() as callbacks:
        order = orders.create_order(
            client="shop",
            idempotency_key=new_request_id(),
            fingerprint="f" * 64,
            payload=order_body(),
            correlation_id=new_request_id(),
        )
    (dispatch,) = callbacks
    return order, dispatch


def created_ago(order, seconds):
    order.created_at -= datetime.timedelta(seconds=seconds)


def test_the_sweeper_dispatched_it_first_no_second_dispatch(
    dispatched, settings, django_capture_on_commit_callbacks, caplog
):
    order, dispatch = create_with_callback(django_capture_on_commit_callbacks)
    created_ago(order, settings.DUALSEND_SWEEP_GRACE_SECONDS + 1)
    Order.objects.filter(pk=order.pk).update(status=Order.Status.DISPATCHED)  # the sweeper

    with caplog.at_level("INFO", logger="dualsend_app.orders"):
        dispatch()

    assert dispatched == []
    assert "dispatched by the sweeper meanwhile" in caplog.text


def test_late_but_still_pending_it_is_published(
    dispatched, settings, django_capture_on_commit_callbacks
):
    order, dispatch = create_with_callback(django_capture_on_commit_callbacks)
    created_ago(order, settings.DUALSEND_SWEEP_GRACE_SECONDS + 1)

    dispatch()

    assert dispatched == [order.pk]


def test_on_time_it_is_published_without_a_look(
    dispatched, django_capture_on_commit_callbacks, django_assert_num_queries
):
    _, dispatch = create_with_callback(django_capture_on_commit_callbacks)

    with django_assert_num_queries(0):
        dispatch()

    assert len(dispatched) == 1


def test_a_batch_leaves_out_only_what_the_sweeper_dispatched_looking_once(
    settings, monkeypatch, django_capture_on_commit_callbacks, django_assert_num_queries
):
    """A batch's orders are dispatched together; of those past half the grace, one query
    finds the ones the sweeper took, and only they are left out."""
    handed = []
    monkeypatch.setattr(orders.enqueue, "dispatch_orders", handed.extend)
    with django_capture_on_commit_callbacks() as callbacks, orders.created_together():
        taken, late, on_time = (
            orders.create_order(
                client="shop",
                idempotency_key=new_request_id(),
                fingerprint="f" * 64,
                payload=order_body(),
                correlation_id=new_request_id(),
            )
            for _ in range(3)
        )
    (dispatch_all,) = callbacks
    for order in (taken, late):
        created_ago(order, settings.DUALSEND_SWEEP_GRACE_SECONDS + 1)
    Order.objects.filter(pk=taken.pk).update(status=Order.Status.DISPATCHED)  # the sweeper

    with django_assert_num_queries(1):
        dispatch_all()

    assert handed == [late, on_time]
