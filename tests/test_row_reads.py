"""row_reads: each hand-written read gives exactly the instances the ORM gives, in one query.

The hot path's reads are SQL written once (dualsend_app/row_reads.py); these compare every
field of what they return with the ORM's own read of the same rows (JSON, dates, nulls,
decimals included), and check the scoping and the not-found cases.
"""

import datetime
import uuid

import pytest
from django.utils import timezone

from dualsend_app import row_reads
from dualsend_app.models import Order, Send
from tests.factories import create_order, create_send, needs_attention_order

pytestmark = pytest.mark.django_db


def same_fields(mine: object, orm: object) -> None:
    assert type(mine) is type(orm)
    for field in type(orm)._meta.concrete_fields:
        assert getattr(mine, field.attname) == getattr(orm, field.attname), field.name
    assert not mine._state.adding


def test_a_send_and_its_order_as_the_orm_reads_them(django_assert_num_queries):
    order = create_order(idempotency_key="key-1", dispatched_at=timezone.now())
    charge = order.sends.get(operation=Send.Operation.PAYMENT_CHARGE)
    Send.objects.filter(pk=charge.pk).update(
        status=Send.Status.IN_FLIGHT,
        attempts=2,
        lease_expires_at=timezone.now() + datetime.timedelta(seconds=30),
    )

    with django_assert_num_queries(1):
        send = row_reads.send_with_order(charge.pk)
        order_read = send.order  # cached with the send: no second query

    orm = Send.objects.select_related("order").get(pk=charge.pk)
    same_fields(send, orm)
    same_fields(order_read, orm.order)
    assert isinstance(order_read.payload, dict)
    assert send.lease_expires_at.tzinfo is not None


def test_an_unknown_send_is_does_not_exist():
    with pytest.raises(Send.DoesNotExist):
        row_reads.send_with_order(2**31 - 1)


def test_an_order_and_its_header_sends_only(django_assert_num_queries):
    order, refund = needs_attention_order()

    with django_assert_num_queries(1):
        read, headers = row_reads.order_with_headers(order.pk)

    same_fields(read, Order.objects.get(pk=order.pk))
    orm_headers = list(order.sends.filter(operation__in=Send.HEADER_OPERATIONS))
    assert [send.pk for send in headers] == [send.pk for send in orm_headers]
    assert refund.pk not in {send.pk for send in headers}
    for mine, orm in zip(headers, orm_headers, strict=True):
        same_fields(mine, orm)
        assert mine.order is read


def test_order_with_headers_of_an_unknown_order_is_does_not_exist():
    with pytest.raises(Order.DoesNotExist):
        row_reads.order_with_headers(uuid.uuid4())


def test_an_order_with_all_its_sends_for_its_own_client_only(django_assert_num_queries):
    order, _refund = needs_attention_order()
    create_send(create_order(client="someone-else"), Send.Operation.INVENTORY_RELEASE)

    with django_assert_num_queries(1):
        read, sends = row_reads.order_with_sends(order.pk, order.client)

    same_fields(read, Order.objects.get(pk=order.pk))
    assert [send.pk for send in sends] == [send.pk for send in order.sends.all()]
    assert len(sends) == 3
    assert row_reads.order_with_sends(order.pk, "someone-else") is None
    assert row_reads.order_with_sends(uuid.uuid4(), order.client) is None


def test_an_order_by_its_client_and_key():
    order = create_order(idempotency_key="key-7")
    create_order(client="someone-else", idempotency_key="key-7")

    same_fields(row_reads.order_by_key(order.client, "key-7"), order)
    assert row_reads.order_by_key(order.client, "key-8") is None
    assert row_reads.order_by_key("nobody", "key-7") is None
    # Orders without a key all have "": none of them is found by it.
    create_order()
    assert row_reads.order_by_key("test", "") is None


def test_an_orders_status_alone_and_none_for_an_unknown_order(django_assert_num_queries):
    order = create_order(status=Order.Status.COMPENSATING)

    with django_assert_num_queries(1):
        assert row_reads.order_status(order.pk) == Order.Status.COMPENSATING
    assert row_reads.order_status(str(order.pk)) == Order.Status.COMPENSATING
    assert row_reads.order_status(uuid.uuid4()) is None
