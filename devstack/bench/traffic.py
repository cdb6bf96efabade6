"""The bench's client side: place orders through the HTTP API and time each one.

Each order is one client's whole wait: `POST /api/orders`, then `GET /api/orders/<id>
?wait=10` until the answer shows it final. The clock starts when the POST is sent and
stops when that GET returns; the order's own timestamps (created, each send picked up
and recorded, settled) come back in the GET's body.

The demo's `ApiClient` places the orders (same Idempotency-Key on a resend), the demo's
payloads fill them; every order is a normal one, which both partners accept.
`records_written` reads the GET's body: the order completed, both sends succeeded, each
with its attempt, its partner's id and its timestamps.
"""

import datetime
import time
from dataclasses import dataclass
from typing import Any

import requests

from devstack.traffic.client import ApiClient, DemoOrder
from dualsend_app.models import Order, Send

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


def records_written(body: dict[str, Any] | None) -> bool:
    """The order completed, with both sends' records as a completed order must have them."""
    if not body or body.get("status") != Order.Status.COMPLETED or not body.get("settled_at"):
        return False
    sends = {send.get("operation"): send for send in body.get("sends", [])}
    return all(
        (send := sends.get(operation))
        and send.get("status") == Send.Status.SUCCEEDED
        and (send.get("attempts") or 0) >= 1
        and send.get("remote_id")
        and send.get("first_attempt_at")
        and send.get("finished_at")
        for operation in Send.HEADER_OPERATIONS
    )


def settled_wall(body: dict[str, Any] | None) -> float | None:
    """The order's settled_at as seconds since the epoch (the server's clock)."""
    if not body or not body.get("settled_at"):
        return None
    return datetime.datetime.fromisoformat(body["settled_at"]).timestamp()
