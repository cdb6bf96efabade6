"""The bench's client side: place orders through the HTTP API and time each one.

Each order is one client's whole wait: `POST /api/orders`, then `GET /api/orders/<id>
?wait=10` until the answer shows it final. The clock starts when the POST is sent and
stops when that GET returns; the order's own timestamps (created, each send picked up
and recorded, settled) come back in the GET's body.

The demo's `ApiClient` places the orders (same Idempotency-Key on a resend), the demo's
payloads fill them; every order is a normal one, which both partners accept. With batch
intake, `place_batch` hands over up to 100 of them in one `POST /api/orders/batch`, each
with its key in the body; the clock of each starts when that POST is sent.
`records_written` reads the GET's body: the order completed, both sends succeeded, each
with its attempt, its partner's id and its timestamps.
"""

import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests

from devstack.traffic.client import (
    POST_RETRY_SECONDS,
    POST_TRIES,
    TRANSIENT,
    ApiClient,
    DemoOrder,
    retry_after,
)
from dualsend_app.models import Order, Send

SETTLE_WAIT_SECONDS = 10
RETRY_SECONDS = 0.2
BATCH_SIZE = 100  # the most POST /api/orders/batch takes
BATCH_TIMEOUT = 60.0  # a batch writes 100 orders in one transaction: more than one order
MULTI_STATUS = 207


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

    def place_batch(self, orders: Sequence[BenchOrder], request_id: str) -> None:
        """POST /api/orders/batch with `orders` (at most BATCH_SIZE), each with its own
        key; each accepted one (202 created, 200 replayed) gets its id and status.

        Sent again, the same body with the same keys, for the orders still unanswered
        after a transient failure (no answer, 5xx, 429 on the whole batch; 409 or 429 on
        an order); an order refused for good keeps the answer in `error`, no id.
        """
        pending = list(orders)
        for attempt in range(1, POST_TRIES + 1):
            if self.cancelled.is_set() or not pending:
                break
            response = None
            body = {"orders": [order.payload | {"idempotency_key": order.idempotency_key}
                               for order in pending]}  # fmt: skip
            try:
                response = self._session.post(
                    f"{self.base_url}/api/orders/batch",
                    json=body,
                    headers={"X-Request-ID": request_id},
                    timeout=BATCH_TIMEOUT,
                )
            except requests.RequestException as exc:
                _refuse(pending, f"POST /api/orders/batch failed: {exc}")
            else:
                answered = time.time()
                for order in pending:
                    order.post_answered_wall = answered
                if response.status_code == MULTI_STATUS:
                    pending = _take_results(pending, response.json()["results"])
                else:
                    _refuse(pending, f"POST /api/orders/batch answered "
                                     f"{response.status_code}: {response.text[:200]}")  # fmt: skip
                    if response.status_code < 500 and response.status_code not in TRANSIENT:
                        return  # a definite no for the whole batch
            if pending and attempt < POST_TRIES:
                time.sleep(max(POST_RETRY_SECONDS * attempt, retry_after(response)))

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


def _refuse(orders: Sequence[BenchOrder], error: str) -> None:
    for order in orders:
        order.error = error


def _take_results(orders: list[BenchOrder], results: list[dict[str, Any]]) -> list[BenchOrder]:
    """Each order's own answer in a batch's 207 (the result of `index` i answers
    `orders[i]`); returns the orders to send again (409 still in progress, 429)."""
    by_index = {result.get("index"): result for result in results}
    again = []
    for index, order in enumerate(orders):
        result = by_index.get(index)
        if result is None:
            order.error = f"the batch's answer has no result for index {index}"
            continue
        status = result.get("status")
        if status in (200, 202):
            answer = result["order"]
            order.order_id, order.status, order.error = answer["id"], answer["status"], ""
            continue
        error = result.get("error") or {}
        fields = error.get("fields")
        order.error = (
            f"batch answered {status} for it: {error.get('code')}: {error.get('message')}"
            + (f" {fields}" if fields else "")
        )
        if status in TRANSIENT:
            again.append(order)
    return again


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
