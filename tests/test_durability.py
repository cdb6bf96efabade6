"""Nothing lost, nothing doubled: crash points on real processes, and the sweeper.

A killed worker, a broker down when an order arrives, the database down while a partner
call is in flight, and every kind of lost message the sweeper (under real beat) re-drives.
"""

import time

import pytest

from dualsend_app.models import Order, Redrive, Send
from tests import environment
from tests.factories import stranded_order
from tests.helpers import (
    new_request_id,
    place_order,
    sends_by_operation,
    wait_final,
    wait_until,
)

pytestmark = [pytest.mark.integration]

Op = Send.Operation


def charge_in_flight(order_id):
    return Send.objects.filter(
        order_id=order_id, operation=Op.PAYMENT_CHARGE, status=Send.Status.IN_FLIGHT
    ).exists()


def charge_requests(sim, rid):
    return [e for e in sim.requests_log(request_id=rid) if e["path"] == "/v1/charges"]


def redrive_kinds(order_id):
    return set(Redrive.objects.filter(order_id=order_id).values_list("kind", flat=True))


# --- crash points ----------------------------------------------------------------------


def test_worker_killed_mid_call_is_redriven_with_the_same_key(live, client, celery_worker):
    """SIGKILL while the charge is in flight: the sweeper re-drives it, one charge."""
    rid = new_request_id()
    live.script(rid, "charge", [{"delay_ms": 1000}])
    order_id = place_order(client, rid)
    wait_until(lambda: charge_in_flight(order_id), timeout=15, what="charge in flight")

    celery_worker.kill()
    celery_worker.start()
    order = wait_final(order_id, timeout=40)

    assert order.status == Order.Status.COMPLETED
    if environment.BROKER_URL.startswith("redis"):
        # Redis gives an unacknowledged message back only after visibility_timeout: the
        # sweeper re-drives it. RabbitMQ gives it back as soon as the connection drops.
        assert Redrive.Kind.SEND in redrive_kinds(order_id)
    assert sends_by_operation(order)[Op.PAYMENT_CHARGE].attempts == 2
    calls = charge_requests(live, rid)
    assert len({call["idempotency_key"] for call in calls}) == 1
    assert live.ledger(order_id)["charged"] == 1


def test_broker_down_when_an_order_arrives(live, client, broker_proxy):
    """Broker unreachable at POST: 202, saved pending; dispatched once the broker is back."""
    broker_proxy.cut()
    order_id = place_order(client, new_request_id())

    order = Order.objects.get(pk=order_id)
    assert order.status == Order.Status.PENDING and order.dispatched_at is None
    assert order.sends.count() == 2

    broker_proxy.restore()
    order = wait_final(order_id, timeout=30)

    assert order.status == Order.Status.COMPLETED
    assert Redrive.Kind.DISPATCH in redrive_kinds(order_id)
    assert live.ledger(order_id)["charged"] == 1


def test_database_down_while_a_call_is_in_flight(live, client, db_proxy):
    """The worker loses the database mid-call: the answer is kept, the call not repeated."""
    rid = new_request_id()
    live.script(rid, "charge", [{"delay_ms": 1200}])
    order_id = place_order(client, rid)
    wait_until(lambda: charge_in_flight(order_id), timeout=15, what="charge in flight")
    # in_flight is visible once the claim commits, a moment before the worker reads the
    # claim's reply: a cut in that moment loses the reply, not the call (CI saw it; the
    # lease then runs out and the sweeper sends it once, as attempt 2). Let the worker
    # get into its 1.2 s call first (under the tests' 1.5 s read timeout); the cut then
    # outlasts the call's end.
    time.sleep(0.3)
    db_proxy.cut()
    time.sleep(1.5)
    db_proxy.restore()
    order = wait_final(order_id, timeout=30)

    assert order.status == Order.Status.COMPLETED
    charge = sends_by_operation(order)[Op.PAYMENT_CHARGE]
    assert charge.attempts == 1
    assert charge.attempt_rows.count() == 1
    assert len(charge_requests(live, rid)) == 1
    assert live.ledger(order_id)["charged"] == 1


# --- the sweeper's rules, each on its own ----------------------------------------------


def test_lost_header_messages_are_sent_and_the_order_settled(live):
    """Dispatched, sends never picked up (Redis lost them): both sent again, and the
    order settled by the settle each re-driven send carries, not by a later sweep."""
    order = stranded_order(
        status=Order.Status.DISPATCHED,
        **{Op.INVENTORY_RESERVE: (Send.Status.PENDING, False),
           Op.PAYMENT_CHARGE: (Send.Status.PENDING, False)},
    )

    order = wait_final(order.pk, timeout=30)

    assert order.status == Order.Status.COMPLETED
    assert Redrive.Kind.SEND in redrive_kinds(order.pk)
    assert Redrive.Kind.SETTLE not in redrive_kinds(order.pk)
    ledger = live.ledger(str(order.pk))
    assert (ledger["reserved"], ledger["charged"]) == (1, 1)


def test_lost_settle_callback_is_redriven(live):
    """Both sends final, order never settled (callback lost): settled by the sweeper."""
    order = stranded_order(
        status=Order.Status.DISPATCHED,
        **{Op.INVENTORY_RESERVE: (Send.Status.SUCCEEDED, True),
           Op.PAYMENT_CHARGE: (Send.Status.SUCCEEDED, True)},
    )

    order = wait_final(order.pk, timeout=20)

    assert order.status == Order.Status.COMPLETED
    assert redrive_kinds(order.pk) == {Redrive.Kind.SETTLE}


def test_lost_compensation_is_redriven(live):
    """Compensating, its refund never enqueued: sent by the sweeper, then the order closed."""
    order = stranded_order(
        status=Order.Status.COMPENSATING,
        **{Op.INVENTORY_RESERVE: (Send.Status.FAILED, True),
           Op.PAYMENT_CHARGE: (Send.Status.SUCCEEDED, True),
           Op.PAYMENT_REFUND: (Send.Status.PENDING, False)},
    )

    order = wait_final(order.pk, timeout=20)

    assert Redrive.Kind.COMPENSATION in redrive_kinds(order.pk)
    refund = sends_by_operation(order)[Op.PAYMENT_REFUND]
    assert refund.status == Send.Status.SUCCEEDED and refund.nothing_to_undo
    assert order.status == Order.Status.FAILED  # the simulator had no charge: 404


def test_order_past_its_maximum_age_is_settled_by_the_rules(live):
    """Not final after DUALSEND_ORDER_MAX_AGE_SECONDS: its unfinished send stops, and
    whatever may have taken effect is undone (not frozen in needs_attention)."""
    order = stranded_order(
        status=Order.Status.DISPATCHED,
        age_seconds=3600,
        **{Op.INVENTORY_RESERVE: (Send.Status.IN_FLIGHT, False),
           Op.PAYMENT_CHARGE: (Send.Status.SUCCEEDED, True)},
    )

    order = wait_final(order.pk, timeout=20)

    assert Redrive.Kind.EXPIRED in redrive_kinds(order.pk)
    sends = sends_by_operation(order)
    assert sends[Op.INVENTORY_RESERVE].failure_kind == Send.FailureKind.UNKNOWN
    # The simulators never saw this order: both undos answer 404, nothing had happened.
    assert sends[Op.INVENTORY_RELEASE].nothing_to_undo
    assert sends[Op.PAYMENT_REFUND].nothing_to_undo
    assert order.status == Order.Status.FAILED


def test_a_healthy_order_is_never_redriven(live, client):
    """The sweeper leaves work that is on time alone."""
    order_id = place_order(client, new_request_id())
    wait_final(order_id)
    time.sleep(2)  # two more sweeps
    assert not Redrive.objects.filter(order_id=order_id).exists()
