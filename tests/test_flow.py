"""End to end on real processes: API → chord on a real worker → simulators → settle.

Each test gives its order a correlation id of its own and scripts the simulators' answers
for that id, then checks what a user would: the order's final status, its sends and
attempts, and the partners' own ledger of real effects.
"""

import pytest

from dualsend_app.models import Attempt, Order, Send
from tests.environment import MAX_ATTEMPTS
from tests.helpers import new_request_id, place_order, sends_by_operation, wait_final

pytestmark = [pytest.mark.integration]

Op = Send.Operation


def ledger_of(sim, order_id):
    return sim.ledger(order_id)


# --- the four outcome combinations -----------------------------------------------------


def test_both_succeed_order_completed_with_one_effect_each(live, client):
    """Both partners say yes: completed, one reservation and one charge standing."""
    rid = new_request_id()
    order_id = place_order(client, rid)

    order = wait_final(order_id)

    assert order.status == Order.Status.COMPLETED
    assert order.dispatched_at is not None and order.settled_at is not None
    sends = sends_by_operation(order)
    assert set(sends) == {Op.INVENTORY_RESERVE, Op.PAYMENT_CHARGE}
    assert sends[Op.INVENTORY_RESERVE].remote_id.startswith("res_")
    assert sends[Op.PAYMENT_CHARGE].remote_id.startswith("ch_")
    assert all(send.attempts == 1 for send in sends.values())
    ledger = ledger_of(live, order_id)
    assert (ledger["reserved"], ledger["charged"]) == (1, 1)
    assert ledger["reservation_standing"] and ledger["charge_standing"]


def test_correlation_id_reaches_both_partners(live, client):
    """The client's X-Request-ID is sent to both partners on every call."""
    rid = new_request_id()
    order_id = place_order(client, rid)
    wait_final(order_id)

    logged = live.requests_log(request_id=rid)

    assert {entry["path"].split("/")[2] for entry in logged} == {"reservations", "charges"}


def test_out_of_stock_refunds_the_charge(live, client):
    """Inventory declines, payment charged: the charge is refunded, order compensated."""
    order_id = place_order(client, new_request_id(), items=[{"sku": "OOS-1", "quantity": 1}])

    order = wait_final(order_id)

    assert order.status == Order.Status.COMPENSATED
    sends = sends_by_operation(order)
    assert sends[Op.INVENTORY_RESERVE].failure_kind == Send.FailureKind.DECLINED
    assert sends[Op.INVENTORY_RESERVE].attempts == 1
    assert sends[Op.PAYMENT_REFUND].status == Send.Status.SUCCEEDED
    assert Op.INVENTORY_RELEASE not in sends
    ledger = ledger_of(live, order_id)
    assert (ledger["charged"], ledger["refunded"], ledger["reserved"]) == (1, 1, 0)
    assert not ledger["charge_standing"]


def test_card_declined_releases_the_stock(live, client):
    """Payment declines, stock reserved: the reservation is released, order compensated."""
    order_id = place_order(client, new_request_id(), payment_source="tok_chargeDeclined")

    order = wait_final(order_id)

    assert order.status == Order.Status.COMPENSATED
    sends = sends_by_operation(order)
    assert sends[Op.PAYMENT_CHARGE].failure_kind == Send.FailureKind.DECLINED
    assert sends[Op.INVENTORY_RELEASE].status == Send.Status.SUCCEEDED
    ledger = ledger_of(live, order_id)
    assert (ledger["reserved"], ledger["released"], ledger["charged"]) == (1, 1, 0)


def test_both_declined_order_failed_without_compensation(live, client):
    """Both partners say a definite no: failed, nothing to undo, no compensation sent."""
    order_id = place_order(
        client,
        new_request_id(),
        items=[{"sku": "OOS-2", "quantity": 1}],
        payment_source="tok_chargeDeclined",
    )

    order = wait_final(order_id)

    assert order.status == Order.Status.FAILED
    assert set(sends_by_operation(order)) == {Op.INVENTORY_RESERVE, Op.PAYMENT_CHARGE}
    ledger = ledger_of(live, order_id)
    assert (ledger["reserved"], ledger["charged"]) == (0, 0)


# --- retries ---------------------------------------------------------------------------


def test_transient_errors_then_success_are_retried_and_counted(live, client):
    """503 then 502 then yes: the charge succeeds on its third attempt, all recorded."""
    rid = new_request_id()
    live.script(rid, "charge", [{"status": 503}, {"status": 502}])
    order_id = place_order(client, rid)

    order = wait_final(order_id)

    assert order.status == Order.Status.COMPLETED
    charge = sends_by_operation(order)[Op.PAYMENT_CHARGE]
    assert charge.attempts == 3
    attempts = list(charge.attempt_rows.order_by("number"))
    assert [a.status_code for a in attempts] == [503, 502, 201]
    assert [a.will_retry for a in attempts] == [True, True, False]
    keys = {
        entry["idempotency_key"]
        for entry in live.requests_log(request_id=rid)
        if entry["path"] == "/v1/charges"
    }
    assert keys == {charge.idempotency_key}
    assert ledger_of(live, order_id)["charged"] == 1


def test_retry_after_is_honoured(live, client):
    """429 with Retry-After: 2: the next call comes no sooner than 2 s later."""
    rid = new_request_id()
    live.script(rid, "reserve", [{"status": 429, "retry_after": 2}])
    order_id = place_order(client, rid)

    order = wait_final(order_id)

    assert order.status == Order.Status.COMPLETED
    calls = [e for e in live.requests_log(request_id=rid) if e["path"] == "/v1/reservations"]
    assert [c["status"] for c in calls] == [429, 201]
    assert calls[1]["received_monotonic"] - calls[0]["answered_monotonic"] >= 2.0
    first = sends_by_operation(order)[Op.INVENTORY_RESERVE].attempt_rows.get(number=1)
    assert first.retry_in_seconds >= 2.0


def test_timeout_is_retried_with_the_same_key_and_one_effect(live, client):
    """A call slower than the read timeout (1.5 s) is retried; the partner acted once.

    The retry may first meet 409 idempotency_in_progress (the slow call still runs for
    0.1 s after the timeout), which is retried too; then it gets the stored answer.
    """
    rid = new_request_id()
    live.script(rid, "reserve", [{"delay_ms": 1600}])
    order_id = place_order(client, rid)

    order = wait_final(order_id)

    assert order.status == Order.Status.COMPLETED
    reserve = sends_by_operation(order)[Op.INVENTORY_RESERVE]
    assert reserve.attempts >= 2
    assert reserve.attempt_rows.get(number=1).status_code is None
    assert ledger_of(live, order_id)["reserved"] == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "bad_request"), (401, "unauthorized"), (403, "forbidden"), (422, "invalid_request")],
)
def test_permanent_errors_are_never_retried(live, client, status, code):
    """A definite 4xx is not retried; the other side's effect is undone."""
    rid = new_request_id()
    live.script(rid, "charge", [{"status": status, "code": code}])
    order_id = place_order(client, rid)

    order = wait_final(order_id)

    charge = sends_by_operation(order)[Op.PAYMENT_CHARGE]
    assert charge.attempts == 1
    assert charge.failure_kind == Send.FailureKind.DECLINED
    assert order.status == Order.Status.COMPENSATED
    assert not ledger_of(live, order_id)["reservation_standing"]


def test_effect_then_dropped_connection_charges_once(live, client):
    """The partner charged, then the connection dropped: the retry replays, one charge."""
    rid = new_request_id()
    live.script(rid, "charge", [{"drop": "after_effect"}])
    order_id = place_order(client, rid)

    order = wait_final(order_id)

    assert order.status == Order.Status.COMPLETED
    charge = sends_by_operation(order)[Op.PAYMENT_CHARGE]
    assert charge.attempts == 2
    assert charge.remote_id.startswith("ch_")
    ledger = ledger_of(live, order_id)
    assert ledger["charged"] == 1 and ledger["charge_standing"]


# --- the outcome nobody knows ----------------------------------------------------------


def test_exhausted_retries_count_as_possibly_done_and_both_sides_are_undone(live, client):
    """Payment 5xx on every attempt: unknown, so the charge is refunded *and* stock released."""
    rid = new_request_id()
    live.script(rid, "charge", [{"status": 503}] * MAX_ATTEMPTS)
    order_id = place_order(client, rid)

    order = wait_final(order_id)

    sends = sends_by_operation(order)
    assert sends[Op.PAYMENT_CHARGE].attempts == MAX_ATTEMPTS
    assert sends[Op.PAYMENT_CHARGE].failure_kind == Send.FailureKind.UNKNOWN
    assert sends[Op.PAYMENT_REFUND].nothing_to_undo  # the partner had not charged: 404
    assert sends[Op.INVENTORY_RELEASE].status == Send.Status.SUCCEEDED
    assert order.status == Order.Status.COMPENSATED
    ledger = ledger_of(live, order_id)
    assert not ledger["reservation_standing"] and ledger["charged"] == 0


def test_partial_effect_behind_a_5xx_is_refunded(live, client):
    """The partner charged but answered 500, then its gateway kept failing: refunded."""
    rid = new_request_id()
    live.script(
        rid,
        "charge",
        [{"status": 500, "after_effect": True}]
        + [{"status": 503, "gateway": True}] * (MAX_ATTEMPTS - 1),
    )
    order_id = place_order(client, rid, payment_source="tok_visa")

    order = wait_final(order_id)

    assert order.status == Order.Status.COMPENSATED
    ledger = ledger_of(live, order_id)
    assert (ledger["charged"], ledger["refunded"]) == (1, 1)
    assert not ledger["reservation_standing"]


def test_both_unknown_and_nothing_happened_is_failed(live, client):
    """Both sides ran out of retries before acting: both undone with 404, order failed."""
    rid = new_request_id()
    live.script(rid, "reserve", [{"status": 502}] * MAX_ATTEMPTS)
    live.script(rid, "charge", [{"status": 504}] * MAX_ATTEMPTS)
    order_id = place_order(client, rid)

    order = wait_final(order_id)

    assert order.status == Order.Status.FAILED
    sends = sends_by_operation(order)
    assert sends[Op.INVENTORY_RELEASE].nothing_to_undo
    assert sends[Op.PAYMENT_REFUND].nothing_to_undo


# --- compensations ---------------------------------------------------------------------


def test_compensation_that_fails_then_succeeds(live, client):
    """The refund answers 503 twice, then refunds: compensated after three attempts."""
    rid = new_request_id()
    live.script(rid, "refund", [{"status": 503}, {"status": 503}])
    order_id = place_order(client, rid, items=[{"sku": "OOS-3", "quantity": 1}])

    order = wait_final(order_id)

    assert order.status == Order.Status.COMPENSATED
    refund = sends_by_operation(order)[Op.PAYMENT_REFUND]
    assert refund.attempts == 3
    assert not ledger_of(live, order_id)["charge_standing"]


def test_compensation_that_never_succeeds_needs_attention_then_redrive(live, client):
    """A release failing on every attempt: needs_attention with the reason; a re-drive ends it."""
    from dualsend_app import orders

    rid = new_request_id()
    live.script(rid, "release", [{"status": 503}] * MAX_ATTEMPTS)
    order_id = place_order(client, rid, payment_source="tok_chargeDeclined")

    order = wait_final(order_id)

    assert order.status == Order.Status.NEEDS_ATTENTION
    assert "inventory.release" in order.status_reason
    assert live.ledger(order_id)["reservation_standing"]

    assert orders.redrive(order_id) == orders.RedriveResult(sends=1)
    order = wait_final(order_id)

    assert order.status == Order.Status.COMPENSATED
    release = sends_by_operation(order)[Op.INVENTORY_RELEASE]
    assert release.attempts == MAX_ATTEMPTS + 1
    assert not live.ledger(order_id)["reservation_standing"]


# --- duplicate deliveries --------------------------------------------------------------


def test_header_tasks_and_settle_delivered_twice_do_nothing_twice(live, client):
    """Each header task and settle published again: one call per send, one settle."""
    from tasks.sends import send_inventory, send_payment
    from tasks.settle import settle_order

    rid = new_request_id()
    order_id = place_order(client, rid)
    order = wait_final(order_id)
    sends = sends_by_operation(order)
    settled_at = order.settled_at

    results = [
        send_inventory.delay(sends[Op.INVENTORY_RESERVE].pk),
        send_payment.delay(sends[Op.PAYMENT_CHARGE].pk),
        # settle stores no result; this one delivery asks for it, to wait on it.
        settle_order.apply_async(([], order_id), ignore_result=False),
    ]
    for result in results:
        result.get(timeout=20)

    order.refresh_from_db()
    assert order.status == Order.Status.COMPLETED and order.settled_at == settled_at
    assert Attempt.objects.filter(send__order_id=order_id).count() == 2
    assert len(live.requests_log(request_id=rid)) == 2


def test_concurrent_duplicate_header_deliveries_make_one_call(live, client, transactional_db):
    """Two deliveries of the same send racing: exactly one claims it and calls."""
    from dualsend_app import orders
    from tasks.sends import send_payment

    rid = new_request_id()
    live.script(rid, "charge", [{"delay_ms": 500}])
    order_id = place_order(client, rid)
    charge = Send.objects.get(order_id=order_id, operation=Op.PAYMENT_CHARGE)
    extra = [send_payment.delay(charge.pk) for _ in range(3)]
    for result in extra:
        result.get(timeout=20)

    order = wait_final(order_id)

    assert order.status == Order.Status.COMPLETED
    charge.refresh_from_db()
    assert charge.attempts == 1
    assert live.ledger(order_id)["charged"] == 1
    assert orders.settle(order_id) == orders.SettleResult.ALREADY_SETTLED
