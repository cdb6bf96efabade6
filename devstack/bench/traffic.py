"""The bench's client side: place orders through the HTTP API and time each one.

Each order is one client's whole wait: `POST /api/orders`, then `GET /api/orders/<id>
?wait=10` until the answer shows it final. The clock starts when the POST is sent and
stops when that GET returns; the order's own timestamps (created, each send picked up
and recorded, settled) come back in the GET's body.

The demo's `ApiClient` places the orders (same Idempotency-Key on a resend), the demo's
payloads fill them; every order is a normal one, which both partners accept.
"""

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from devstack.traffic import client as traffic
from devstack.traffic.client import ApiClient, DemoOrder, Kind, Rng

SETTLE_WAIT_SECONDS = 10
RETRY_SECONDS = 0.2


@dataclass
class BenchOrder(DemoOrder):
    phase: str = ""
    posted_at: float | None = None  # time.monotonic() when the POST was sent
    posted_wall: float | None = None  # time.time() then: compared with created_at
    post_answered_wall: float | None = None  # time.time() when the POST was answered
    answered_at: float | None = None  # time.monotonic() when a GET answered it final
    answered_wall: float | None = None  # time.time() then: compared with settled_at
    body: dict | None = None  # that GET's JSON: the order, its timestamps, its sends

    @property
    def end_to_end_ms(self) -> float | None:
        if self.posted_at is None or self.answered_at is None:
            return None
        return (self.answered_at - self.posted_at) * 1000


def new_orders(count: int, run_id: str, phase: str, rng: Rng = random) -> list[BenchOrder]:
    return [
        BenchOrder(
            number=number,
            kind=Kind.NORMAL,
            payload=traffic.order_payload(Kind.NORMAL, rng),
            idempotency_key=f"{run_id}-{phase}-{number}",
            request_id=f"{run_id}-{phase}-{number}",
            phase=phase,
        )
        for number in range(1, count + 1)
    ]


class BenchClient(ApiClient):
    """The demo's client, plus one timed round trip per order."""

    def round_trip(self, order: BenchOrder, deadline: float) -> BenchOrder:
        """POST the order, then GET ?wait until it is final or `deadline` passed."""
        if self.cancelled.is_set() or time.monotonic() >= deadline:
            return order
        order.posted_wall = time.time()
        order.posted_at = time.monotonic()
        self.place(order)
        order.post_answered_wall = time.time()
        if order.order_id:
            self.wait_until_settled(order, deadline)
        return order

    def wait_until_settled(self, order: BenchOrder, deadline: float) -> BenchOrder:
        """GET ?wait until an answer shows the order final. Also when the POST's answer
        did already (the order can settle while the web thread reads it back): only a
        GET's body carries the sends' timestamps."""
        while (order.body is None or not order.is_final) and not self.cancelled.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wait = max(1, min(SETTLE_WAIT_SECONDS, int(remaining)))
            try:
                body = self.get_order(order.order_id, wait=wait)
            except (requests.RequestException, ValueError) as exc:
                order.error = f"GET failed: {exc}"
                time.sleep(RETRY_SECONDS)
                continue
            order.answered_at, order.answered_wall = time.monotonic(), time.time()
            order.body, order.status = body, body.get("status")
        return order


def one_at_a_time(
    client: BenchClient,
    orders: list[BenchOrder],
    *,
    deadline: float,
    advance: Callable[[], None] | None = None,
) -> list[BenchOrder]:
    """Each order's round trip, the next one only once the last has settled."""
    for order in orders:
        client.round_trip(order, deadline)
        if advance:
            advance()
    return orders


def all_at_once(
    client: BenchClient,
    orders: list[BenchOrder],
    *,
    concurrency: int,
    deadline: float,
    advance: Callable[[], None] | None = None,
) -> list[BenchOrder]:
    """`concurrency` client threads, each placing its next order as soon as it has one
    settled: the load stays at `concurrency` orders in flight until the last ones."""
    pending = iter(orders)
    lock = threading.Lock()

    def next_order() -> BenchOrder | None:
        with lock:
            return next(pending, None)

    def client_thread() -> None:
        while (order := next_order()) is not None:
            client.round_trip(order, deadline)
            if advance:
                advance()

    with traffic.client_pool(client, concurrency, "bench-client") as pool:
        futures = [pool.submit(client_thread) for _ in range(concurrency)]
        for future in futures:
            future.result()
    return orders
