"""order_rows: a new order, its two sends and its first history row, in one statement.

What `orders.create_order` keeps in memory (the intake answers from it) is what the
database holds afterwards, field for field; on PostgreSQL outside a transaction it is one
query, and a duplicate key writes nothing at all.
"""

import pytest
from django.db import IntegrityError, connection

from dualsend_app import orders, status_history
from dualsend_app.models import Order, OrderStatusChange, Send
from tests.helpers import new_request_id, order_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("dispatched")]


def create(key=""):
    return orders.create_order(
        client="test",
        idempotency_key=key,
        fingerprint="f" * 64,
        payload=order_body(),
        correlation_id=new_request_id(),
    )


def same_fields(memory, saved):
    for field in type(saved)._meta.concrete_fields:
        assert getattr(memory, field.attname) == getattr(saved, field.attname), field.name


def test_the_rows_saved_are_the_instances_the_intake_answers_from(dispatched):
    order = create(key="k-1")

    same_fields(order, Order.objects.get(pk=order.pk))
    sends = order.new_sends
    assert [send.operation for send in sends] == list(Send.HEADER_OPERATIONS)
    for send in sends:
        assert send.pk is not None and not send._state.adding
        same_fields(send, Send.objects.get(pk=send.pk))
    (change,) = OrderStatusChange.objects.filter(order=order)
    assert (change.from_status, change.to_status) == ("", Order.Status.PENDING)
    assert change.reason == status_history.CREATED_REASON
    assert change.at == order.created_at
    assert dispatched == [order.pk]  # committed, so handed to the broker


def test_one_statement_on_postgresql(django_assert_num_queries):
    if connection.vendor != "postgresql":
        pytest.skip("the SQLite demo writes the same rows with the ORM, in a transaction")
    with django_assert_num_queries(1):
        create(key="k-2")


def test_a_duplicate_key_writes_nothing(dispatched):
    first = create(key="k-3")

    with pytest.raises(IntegrityError):
        create(key="k-3")

    assert Order.objects.count() == 1
    assert Send.objects.count() == 2
    assert OrderStatusChange.objects.count() == 1
    assert dispatched == [first.pk]
