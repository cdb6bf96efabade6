"""The order's join, in the database: each header send, once final, settles its order.

The first send to finish finds the other still running and leaves the order; the last
one settles it. A delivery that finds its send already final (its worker died between
recording the answer and settling) settles it too, and two sends that finish together
settle it once. On the real database; the sends' bookkeeping is `sending`'s own, the
settle `orders.settle`, and `tasks.sends.settle_when_final` joins them as a send task
does after its delivery.
"""

import threading

import pytest
from django.db import connection
from django.utils import timezone

from dualsend_app import sending
from dualsend_app.models import Order, OrderStatusChange, Send
from dualsend_app.partners import clients, http
from dualsend_app.resilience import gate
from tasks.sends import settle_when_final
from tests.factories import create_order, create_send

Op, S = Send.Operation, Send.Status


def answer_for_good(send: Send, status_code: int, body: dict) -> sending.NextStep:
    """One delivery of `send` that claimed it, called, and recorded `status_code`."""
    send = Send.objects.select_related("order").get(pk=send.pk)
    assert sending.claim(send, timezone.now())
    result = clients.interpret(send, http.WireAnswer(status_code=status_code, body=body))
    return sending.record_attempt(
        sending.CallMade(
            send=send, result=result, started_at=timezone.now(), attempt_number=send.attempts
        )
    )


def status_of(order: Order) -> str:
    return Order.objects.values_list("status", flat=True).get(pk=order.pk)


@pytest.mark.django_db
def test_the_first_send_to_finish_leaves_the_order_and_the_last_settles_it():
    order = create_order(status=Order.Status.DISPATCHED)
    reserve = order.sends.get(operation=Op.INVENTORY_RESERVE)
    charge = order.sends.get(operation=Op.PAYMENT_CHARGE)

    first = answer_for_good(reserve, 201, {"reservation_id": "res_1"})
    assert first.send_is_final and first.order_id == order.pk
    assert settle_when_final(reserve.pk, first) == {"send": reserve.pk, "status": S.SUCCEEDED}
    assert status_of(order) == Order.Status.DISPATCHED  # the charge is still running

    last = answer_for_good(charge, 201, {"charge_id": "ch_1"})
    settle_when_final(charge.pk, last)
    assert status_of(order) == Order.Status.COMPLETED


@pytest.mark.django_db
def test_a_send_that_will_be_retried_does_not_settle():
    order = create_order(status=Order.Status.DISPATCHED)
    charge = order.sends.get(operation=Op.PAYMENT_CHARGE)

    step = answer_for_good(charge, 503, {"error": {"code": "unavailable", "message": ""}})

    assert step.should_retry and not step.send_is_final


@pytest.mark.django_db
def test_a_redelivered_final_send_settles_the_order_its_worker_left():
    """The worker recorded the last answer and died before settling: acks late gives the
    message back, and the next delivery, finding the send final, settles the order."""
    order = create_order(status=Order.Status.DISPATCHED, header_sends=False)
    create_send(order, Op.INVENTORY_RESERVE, status=S.SUCCEEDED)
    charge = create_send(order, Op.PAYMENT_CHARGE, status=S.SUCCEEDED)

    step = sending.run(charge.pk)

    assert step.send_is_final and not step.should_retry
    settle_when_final(charge.pk, step)
    assert status_of(order) == Order.Status.COMPLETED


@pytest.mark.django_db
def test_a_send_that_gives_up_before_any_call_settles_its_order():
    """Held back by the gate past its deadline: failed unsent, and the order settles
    (the reservation was declined: nothing to undo, failed)."""
    order = create_order(status=Order.Status.DISPATCHED, header_sends=False)
    create_send(order, Op.INVENTORY_RESERVE, status=S.FAILED, failure_kind="declined")
    charge = create_send(order, Op.PAYMENT_CHARGE)
    charge = Send.objects.select_related("order").get(pk=charge.pk)
    held = gate.Admission(allowed=False, wait_seconds=10**6, reason="breaker open")

    step = sending.defer(charge, held, timezone.now())

    assert step.send_is_final and step.status == S.FAILED
    settle_when_final(charge.pk, step)
    assert status_of(order) == Order.Status.FAILED


@pytest.mark.django_db(transaction=True)
def test_two_sends_finishing_together_settle_the_order_once():
    """Both deliveries see both sends final and settle at the same moment, each on its own
    connection: one claim wins, the order moves to completed once."""
    order = create_order(status=Order.Status.DISPATCHED, header_sends=False)
    sends = [
        create_send(order, operation, status=S.SUCCEEDED) for operation in Send.HEADER_OPERATIONS
    ]
    together = threading.Barrier(len(sends))
    errors = []

    def finish(send: Send) -> None:
        try:
            step = sending.NextStep(status=S.SUCCEEDED, order_id=order.pk)
            together.wait(timeout=10)
            settle_when_final(send.pk, step)
        except Exception as exc:  # surfaced below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=finish, args=(send,)) for send in sends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not errors
    assert status_of(order) == Order.Status.COMPLETED
    moves = OrderStatusChange.objects.filter(order=order, to_status=Order.Status.COMPLETED)
    assert moves.count() == 1
