"""An order past its maximum age: nothing is called for it afterwards, and whatever may
have taken effect is undone by the usual rules; an operator's re-drive starts its clock
again, and a re-drive with nothing to do is refused.
"""

import time

import pytest
from amqp.exceptions import ChannelError
from django.utils import timezone

from dualsend_app import orders, recovery, sending
from dualsend_app.models import Attempt, Order, Redrive, Send
from project.celery import app
from tests.factories import create_order, create_send, stranded_order
from tests.helpers import new_request_id, place_order, wait_final, wait_until

Op = Send.Operation
HOUR = 3600


def expire_now(settings, max_age=300):
    settings.DUALSEND_ORDER_MAX_AGE_SECONDS = max_age
    return recovery.expire_old_orders(timezone.now())


# --- the rules, on the database --------------------------------------------------------


def test_expiry_fails_sends_never_called_as_not_sent_and_settles(db, settings):
    """Both sends still waiting in their queues: nothing happened, the order fails."""
    order = stranded_order(
        status=Order.Status.DISPATCHED,
        age_seconds=HOUR,
        **{Op.INVENTORY_RESERVE: (Send.Status.PENDING, False),
           Op.PAYMENT_CHARGE: (Send.Status.PENDING, False)},
    )

    assert expire_now(settings) == 1

    order.refresh_from_db()
    assert order.status == Order.Status.FAILED
    assert order.status_reason.startswith("expired: not final 300s")
    assert "never sent" in order.status_reason
    assert {(s.status, s.failure_kind) for s in order.sends.all()} == {
        (Send.Status.FAILED, Send.FailureKind.NOT_SENT)
    }
    assert Redrive.objects.get(order=order).kind == Redrive.Kind.EXPIRED


def test_expiry_compensates_what_may_have_taken_effect(db, settings):
    """A charge made and a reservation in flight at expiry: both are undone, not frozen."""
    order = stranded_order(
        status=Order.Status.DISPATCHED,
        age_seconds=HOUR,
        **{Op.INVENTORY_RESERVE: (Send.Status.IN_FLIGHT, False),
           Op.PAYMENT_CHARGE: (Send.Status.SUCCEEDED, True)},
    )
    Send.objects.filter(order=order, operation=Op.INVENTORY_RESERVE).update(attempts=1)

    expire_now(settings)

    order.refresh_from_db()
    assert order.status == Order.Status.COMPENSATING
    reserve = order.sends.get(operation=Op.INVENTORY_RESERVE)
    assert (reserve.status, reserve.failure_kind) == (Send.Status.FAILED, Send.FailureKind.UNKNOWN)
    undo = set(order.sends.exclude(operation__in=Send.HEADER_OPERATIONS).values_list(
        "operation", "status"))
    assert undo == {(Op.INVENTORY_RELEASE, Send.Status.PENDING),
                    (Op.PAYMENT_REFUND, Send.Status.PENDING)}
    # The reason describes the sends as they are now, not as they were before expiry.
    assert "inventory.reserve failed (unknown" in order.status_reason


def test_a_send_of_an_expired_order_is_never_called(db, settings):
    """Its message arrives after the order expired: no call, the send fails not_sent."""
    order = stranded_order(
        status=Order.Status.DISPATCHED,
        age_seconds=HOUR,
        **{Op.INVENTORY_RESERVE: (Send.Status.PENDING, False),
           Op.PAYMENT_CHARGE: (Send.Status.PENDING, False)},
    )
    Order.objects.filter(pk=order.pk).update(status=Order.Status.NEEDS_ATTENTION)
    charge = order.sends.get(operation=Op.PAYMENT_CHARGE)

    step = sending.run(charge.pk)

    assert not step.should_retry
    charge.refresh_from_db()
    assert (charge.status, charge.failure_kind, charge.attempts) == (
        Send.Status.FAILED, Send.FailureKind.NOT_SENT, 0)
    assert not Attempt.objects.filter(send=charge).exists()


def test_the_claim_refuses_a_send_whose_order_moved_on(db):
    """The claim itself checks the order: a delivery that read the order just before it
    expired still cannot start a call."""
    order = create_order(status=Order.Status.COMPENSATING)
    charge = order.sends.get(operation=Op.PAYMENT_CHARGE)

    assert not sending.claim(charge, timezone.now())
    charge.refresh_from_db()
    assert (charge.status, charge.attempts) == (Send.Status.PENDING, 0)


def test_a_redriven_order_is_not_expired_again_at_the_next_sweep(db, settings):
    """An old needs_attention order re-driven by an operator gets its full time again."""
    order = stranded_order(
        status=Order.Status.NEEDS_ATTENTION,
        age_seconds=2 * HOUR,
        **{Op.INVENTORY_RESERVE: (Send.Status.SUCCEEDED, True),
           Op.PAYMENT_CHARGE: (Send.Status.FAILED, True),
           Op.INVENTORY_RELEASE: (Send.Status.FAILED, True)},
    )

    assert orders.redrive(order.pk) == orders.RedriveResult(sends=1)
    assert expire_now(settings) == 0

    order.refresh_from_db()
    assert order.status == Order.Status.COMPENSATING
    assert order.redriven_at is not None
    release = order.sends.get(operation=Op.INVENTORY_RELEASE)
    assert release.status == Send.Status.PENDING


def test_a_redrive_with_nothing_to_redrive_is_refused(db):
    """Every compensation succeeded: the operator is told so, the order is untouched."""
    order = stranded_order(
        status=Order.Status.NEEDS_ATTENTION,
        **{Op.INVENTORY_RESERVE: (Send.Status.SUCCEEDED, True),
           Op.PAYMENT_CHARGE: (Send.Status.FAILED, True),
           Op.INVENTORY_RELEASE: (Send.Status.SUCCEEDED, True)},
    )

    result = orders.redrive(order.pk)

    assert result.refused
    assert "every compensation of this order succeeded" in result.refused_because
    order.refresh_from_db()
    assert order.status == Order.Status.NEEDS_ATTENTION


def test_a_redrive_of_an_order_given_up_before_settling_applies_the_rules(db):
    """needs_attention with no compensation yet (expired under the old rule): a re-drive
    looks at the sends and undoes what may have acted, never calls it 'nothing happened'."""
    order = stranded_order(
        status=Order.Status.NEEDS_ATTENTION,
        **{Op.INVENTORY_RESERVE: (Send.Status.SUCCEEDED, True),
           Op.PAYMENT_CHARGE: (Send.Status.IN_FLIGHT, False)},
    )
    Send.objects.filter(order=order, operation=Op.PAYMENT_CHARGE).update(attempts=1)

    result = orders.redrive(order.pk)

    assert result == orders.RedriveResult(sends=2)
    order.refresh_from_db()
    assert order.status == Order.Status.COMPENSATING
    assert order.status_reason.startswith("re-driven by an operator; undoing")


def test_the_card_token_is_blanked_once_the_order_is_final(db):
    """Completed: the stored order and the charge's stored request forget the token."""
    order = create_order()
    order.sends.update(status=Send.Status.SUCCEEDED, finished_at=timezone.now())
    charge = order.sends.get(operation=Op.PAYMENT_CHARGE)
    assert '"source":"tok_visa"' in charge.request_body

    assert orders.settle(order.pk) == orders.SettleResult.COMPLETED

    order.refresh_from_db()
    charge.refresh_from_db()
    assert order.payload["payment_source"] == ""
    assert '"source":""' in charge.request_body
    assert "tok_visa" not in charge.request_body


def test_the_charge_keeps_its_exact_bytes_while_the_order_is_open(db):
    """Retries send byte-identical requests: nothing is blanked before the order is final."""
    order = create_order(status=Order.Status.DISPATCHED)
    charge = order.sends.get(operation=Op.PAYMENT_CHARGE)
    before = charge.request_body
    create_send(order, Op.PAYMENT_REFUND)

    assert orders.settle(order.pk) == orders.SettleResult.NOT_READY

    charge.refresh_from_db()
    assert charge.request_body == before


# --- on the real worker ----------------------------------------------------------------


def queued(queue):
    """Messages waiting in a broker queue (Redis or RabbitMQ)."""
    with app.connection_for_write() as connection:
        try:
            return connection.default_channel.queue_declare(queue, passive=True).message_count
        except ChannelError:
            return 0  # kombu's Redis transport: an emptied queue's list no longer exists


@pytest.mark.integration
def test_orders_expired_in_the_queue_are_never_reserved_nor_charged(workers, client, live):
    """The partner workers are down while orders expire; when they come back, the
    sends waiting in their queues call nobody, and every order failed cleanly."""
    workers(queues="default", DUALSEND_ORDER_MAX_AGE_SECONDS="2")
    ids = [place_order(client, new_request_id()) for _ in range(3)]
    expired = [wait_final(order_id, timeout=30) for order_id in ids]
    assert {order.status for order in expired} == {Order.Status.FAILED}

    workers(queues="api.inventory,api.payment", DUALSEND_ORDER_MAX_AGE_SECONDS="2")
    wait_until(lambda: queued("api.inventory") == queued("api.payment") == 0, 30,
               "the partner queues drained")
    time.sleep(1)  # the last messages taken are run to their end

    for order_id in ids:
        ledger = live.ledger(order_id)
        assert not ledger.get("reservation_standing") and not ledger.get("charge_standing")
        assert live.requests_log(order_id=order_id) == []
    sends = Send.objects.filter(order_id__in=ids)
    assert {(s.status, s.failure_kind, s.attempts) for s in sends} == {
        (Send.Status.FAILED, Send.FailureKind.NOT_SENT, 0)
    }


@pytest.mark.integration
def test_expiry_under_the_real_sweeper_undoes_a_charge(workers, client, live):
    """A real charge made, its reservation never made before expiry: refunded, and the
    order ends compensated, not frozen in needs_attention with the charge standing."""
    workers(queues="api.payment,default", DUALSEND_ORDER_MAX_AGE_SECONDS="3")
    order_id = place_order(client, new_request_id())
    wait_until(lambda: live.ledger(order_id).get("charge_standing"), 20, "the charge")

    order = wait_final(order_id, timeout=30)
    wait_until(
        lambda: Order.objects.get(pk=order_id).status in Order.FINAL_STATUSES
        and not live.ledger(order_id).get("charge_standing"),
        30,
        "the refund",
    )

    order.refresh_from_db()
    assert order.status == Order.Status.COMPENSATED, order.status_reason
    assert order.status_reason == "undone: payment.refund"
    assert Redrive.objects.filter(order=order, kind=Redrive.Kind.EXPIRED).exists()
    assert order.payload["payment_source"] == ""
    reserve = order.sends.get(operation=Op.INVENTORY_RESERVE)
    assert (reserve.failure_kind, reserve.attempts) == (Send.FailureKind.NOT_SENT, 0)
