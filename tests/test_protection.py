"""Protection of the partners and of us: breaker, rate limits and bulkheads, live.

These tests need workers configured unlike the session's (a breaker that trips, one
worker per queue), so the module pauses the session worker and starts its own.
"""

import datetime
import itertools
import time

import environ
import pytest
from django.utils import timezone

from devstack import SimulatorControl
from dualsend_app.models import BreakerTransition, Order, Send
from project.partner_settings import read_partner
from tests import environment
from tests.helpers import new_request_id, place_order, wait_final, wait_until

pytestmark = [pytest.mark.integration]

Op = Send.Operation
TRIPPING_BREAKER = {
    "PAYMENT_API_BREAKER_MIN_CALLS": "4",
    "PAYMENT_API_BREAKER_FAILURE_RATE": "0.5",
    "PAYMENT_API_BREAKER_WINDOW": "20",
    "PAYMENT_API_BREAKER_OPEN_SECONDS": "2",
    "PAYMENT_API_BREAKER_HALF_OPEN_PROBES": "1",
}


def partner(name):
    """The control client of one partner's simulator (its knobs are its own)."""
    return SimulatorControl(environment.TEST_ENVIRONMENT[f"{name.upper()}_API_URL"])


def place_many(client, count, **overrides):
    return [place_order(client, new_request_id(), **overrides) for _ in range(count)]


def charge_calls_between(sim, start, end):
    """Payment calls the simulator received in [start, end] (wall-clock datetimes)."""
    return [
        entry
        for entry in sim.requests_log()
        if entry["path"] == "/v1/charges"
        and start.timestamp() <= entry["received_wall"] <= end.timestamp()
    ]


def test_open_breaker_reschedules_instead_of_calling_then_recovers(workers, client, live):
    """Payment failing: the breaker opens, sends wait without calling, a probe closes it."""
    workers(**TRIPPING_BREAKER)
    payment = partner("payment")
    payment.configure(error_rate=1.0)
    order_ids = place_many(client, 6)
    opened = wait_for_transition("payment", to_state="open")

    payment.configure(error_rate=0.0)
    orders = [wait_final(order_id, timeout=60) for order_id in order_ids]

    closed = wait_for_transition("payment", to_state="closed")
    half_open = BreakerTransition.objects.get(partner="payment", to_state="half_open")
    assert opened.at < half_open.at < closed.at
    # While open, the partner heard nothing from us.
    quiet = charge_calls_between(
        live, opened.at + datetime.timedelta(milliseconds=200), half_open.at
    )
    assert quiet == []
    charges = Send.objects.filter(order_id__in=order_ids, operation=Op.PAYMENT_CHARGE)
    assert sum(charge.deferrals for charge in charges) > 0
    assert all(order.is_final for order in orders)
    assert any(order.status == Order.Status.COMPLETED for order in orders)


def test_a_429_storm_is_ridden_out_honouring_retry_after(workers, client, live):
    """Inventory allows 2 calls a second: every order completes, each reserved once.

    The storm is made certain: the orders wait in the queue until eight inventory
    threads start at once, and the partner holds each call 400 ms, so the first
    eight calls all reach it before any answer can tell us to slow down. Then the
    partner answers at its usual speed. (Our slowdown on X-RateLimit-Remaining is
    held back to zero here, or it would soften the storm.)
    """
    inventory = partner("inventory")
    usual_latency = inventory.config()["latency_ms"]
    inventory.configure(rate_limit={"limit": 2, "window": 1}, latency_ms=[400, 400])
    order_ids = place_many(client, 15)
    workers(queues="api.inventory", concurrency=8, INVENTORY_API_SLOWDOWN_BELOW="0")
    workers(queues="api.payment,default", concurrency=4)
    wait_until(lambda: 429 in reservation_answers(live), timeout=30)
    inventory.configure(latency_ms=usual_latency)

    orders = [wait_final(order_id, timeout=60) for order_id in order_ids]

    assert {order.status for order in orders} == {Order.Status.COMPLETED}
    assert all(live.ledger(order_id)["reserved"] == 1 for order_id in order_ids)
    reserves = Send.objects.filter(order_id__in=order_ids, operation=Op.INVENTORY_RESERVE)
    assert sum(send.deferrals for send in reserves) > 0  # the pause was shared, and kept
    assert_no_call_before_retry_after(live, "/v1/reservations")


def reservation_answers(sim):
    return [e["status"] for e in sim.requests_log() if e["path"] == "/v1/reservations"]


def assert_no_call_before_retry_after(sim, path):
    """After a 429, the same send (same key) did not call again before the window reset."""
    calls = [e for e in sim.requests_log() if e["path"] == path]
    by_key = {}
    for call in calls:
        by_key.setdefault(call["idempotency_key"], []).append(call)
    for key_calls in by_key.values():
        for earlier, later in itertools.pairwise(key_calls):
            if earlier["status"] == 429:
                # Retry-After was at least one second (the simulator rounds up).
                assert later["received_monotonic"] - earlier["answered_monotonic"] >= 0.95


@pytest.mark.parametrize("read_timeout", ["10", "1.5"], ids=["slow", "not-answering"])
def test_a_slow_partner_does_not_slow_the_other(workers, client, live, read_timeout):
    """Payment takes 4 s (within our timeout, or past it): inventory's own workers
    reserve at full speed.

    The proof is in what the partner heard: while the twelve reservations were made,
    payment's four threads were each stuck in their first call, so at most four
    charges had gone out. Had the pools been shared, the reservations would have
    queued behind the charges, and more charges would have gone out meanwhile.
    """
    workers(queues="api.inventory", concurrency=4)
    workers(queues="api.payment,default", concurrency=4, PAYMENT_API_READ_TIMEOUT=read_timeout)
    partner("payment").configure(latency_ms=[4000, 4000])
    began = timezone.now()
    order_ids = place_many(client, 12)
    reserves = Send.objects.filter(order_id__in=order_ids, operation=Op.INVENTORY_RESERVE)

    wait_until(lambda: reserves.filter(status=Send.Status.SUCCEEDED).count() == 12, timeout=30)
    partner("payment").configure(latency_ms=[0, 5])
    for order_id in order_ids:
        wait_final(order_id, timeout=60)

    all_reserved = max(reserves.values_list("finished_at", flat=True))
    assert len(charge_calls_between(live, began, all_reserved)) <= 4


def wait_for_transition(partner, to_state, timeout=30):
    def found():
        return BreakerTransition.objects.filter(partner=partner, to_state=to_state).first()

    wait_until(found, timeout)
    return found()


def default_breaker():
    """The breaker a deployment gets when it sets nothing: the settings' own defaults."""
    return read_partner(
        environ.Env(),
        "inventory",
        prefix="UNSET_ONLY_DEFAULTS",
        url="http://127.0.0.1:1",
        credential_name="UNSET_ONLY_DEFAULTS_TOKEN",
        development_credential="unused",
        debug=True,
    ).breaker


def test_a_poison_order_does_not_hold_the_breaker_open(workers, client, live):
    """One order's reserve and release always answer 503; inventory itself is healthy
    once a short outage is over. The breaker runs at its real defaults (at least 10
    calls in 30 s, open 15 s, 3 probes), not the tests' never-tripping one.

    The outage opens it, as it should. After that, the poison order's retries must not
    take the half-open probes from healthy orders, nor count enough in the window to
    open it again: the breaker closes once and stays closed, and every healthy order
    placed after the outage completes, its first call no later than one open period
    (stretched by the deferral's spread) after it was placed.
    """
    breaker = default_breaker()
    assert (breaker.min_calls, breaker.open_seconds) == (10, 15)  # the README's defaults
    unset = [f"INVENTORY_API_BREAKER_{name}" for name in ("MIN_CALLS", "WINDOW",
             "FAILURE_RATE", "OPEN_SECONDS", "HALF_OPEN_PROBES", "SLOW_CALL_SECONDS",
             "SLOW_CALL_RATE")]  # fmt: skip
    # The poison's release keeps failing for the whole test: a long compensation budget.
    workers(
        without=unset,
        DUALSEND_COMPENSATION_MAX_ATTEMPTS="1000",
        DUALSEND_COMPENSATION_DEADLINE="300",
    )
    inventory = partner("inventory")
    poison_rid = new_request_id()
    always_503 = [{"status": 503}] * 1000
    live.script(poison_rid, "reserve", always_503)
    live.script(poison_rid, "release", always_503)

    # A short outage of inventory: 15 orders fail their reservation, the breaker opens.
    inventory.configure(error_rate=1.0)
    poison_id = place_order(client, poison_rid)
    outage_ids = place_many(client, 15)
    wait_for_transition("inventory", to_state="open", timeout=30)
    inventory.configure(error_rate=0.0)
    outage_over = timezone.now()

    # Healthy orders keep coming, one every 2 s, through the open time and well after.
    healthy_ids = []
    for _ in range(18):
        healthy_ids.append(place_order(client, new_request_id()))
        time.sleep(2)

    healthy = [wait_final(order_id, timeout=90) for order_id in healthy_ids]
    for order_id in outage_ids:
        wait_final(order_id, timeout=90)

    assert {order.status for order in healthy} == {Order.Status.COMPLETED}
    bound = datetime.timedelta(seconds=breaker.open_seconds * 1.5 + 10)
    for order in healthy:
        reserve = order.sends.get(operation=Op.INVENTORY_RESERVE)
        waited = reserve.first_attempt_at - order.created_at
        assert waited <= bound, f"order {order.pk} waited {waited} for its first call"
    after_outage = list(
        BreakerTransition.objects.filter(partner="inventory", at__gte=outage_over)
        .order_by("at", "id")
        .values_list("from_state", "to_state")
    )
    # Recovered once, and the poison never opened it again, though it failed far more
    # than min_calls times while the breaker was closed.
    assert after_outage == [("open", "half_open"), ("half_open", "closed")]
    closed_at = BreakerTransition.objects.get(
        partner="inventory", from_state="half_open", to_state="closed"
    ).at
    poison_failures = [
        entry
        for entry in live.requests_log(request_id=poison_rid)
        if entry["operation"] in ("reserve", "release")
        and entry["status"] == 503
        and entry["received_wall"] > closed_at.timestamp()
    ]
    assert len(poison_failures) >= breaker.min_calls

    # Let the poison's release through, so nothing of it is left for later tests.
    live.script(poison_rid, "release", [])
    assert wait_final(poison_id, timeout=60).is_final
