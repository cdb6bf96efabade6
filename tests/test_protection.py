"""Protection of the partners and of us: breaker, rate limits and bulkheads, live.

These tests need workers configured unlike the session's (a breaker that trips, one
worker per queue), so the module pauses the session worker and starts its own.
"""

import datetime
import itertools

import pytest
from django.utils import timezone

from devstack import SimulatorControl
from dualsend_app.models import BreakerTransition, Order, Send
from tests import environment
from tests.helpers import new_request_id, place_order, wait_final, wait_until
from tests.processes import Worker

pytestmark = [pytest.mark.integration]

Op = Send.Operation
ALL_QUEUES = "api.inventory,api.payment,default"
TRIPPING_BREAKER = {
    "PAYMENT_API_BREAKER_MIN_CALLS": "4",
    "PAYMENT_API_BREAKER_FAILURE_RATE": "0.5",
    "PAYMENT_API_BREAKER_WINDOW": "20",
    "PAYMENT_API_BREAKER_OPEN_SECONDS": "2",
    "PAYMENT_API_BREAKER_HALF_OPEN_PROBES": "1",
}


class OwnWorkers:
    """Workers of this module's own configuration; the session worker is paused."""

    def __init__(self, env):
        self.env = env
        self.running = []

    def __call__(self, queues=ALL_QUEUES, concurrency=8, **overrides):
        worker = Worker(self.env | overrides, queues=queues, concurrency=concurrency, name="prot")
        worker.start()
        self.running.append(worker)
        return worker

    def stop_all(self):
        while self.running:
            self.running.pop().stop()


@pytest.fixture(scope="module")
def own_workers(celery_worker, stack_env):
    env, _ = stack_env
    celery_worker.stop()
    workers = OwnWorkers(env)
    yield workers
    workers.stop_all()
    celery_worker.start()


@pytest.fixture
def workers(own_workers, live):
    """Start workers with `workers(queues=…, concurrency=…, **env)`; stopped after the test."""
    yield own_workers
    own_workers.stop_all()


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
