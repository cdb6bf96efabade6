"""Helpers shared by the tests: the valid order body, place an order, wait for it to settle."""

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.test import Client

from dualsend_app.models import Order, Send

API_TOKEN = "test-token"


def order_body(**overrides: Any) -> dict[str, Any]:
    """The valid body of POST /api/orders, with `overrides` replacing its fields."""
    body = {
        "items": [{"sku": "SKU-1", "quantity": 2}],
        "amount": 1999,
        "currency": "usd",
        "payment_source": "tok_visa",
    }
    return body | overrides


def new_request_id() -> str:
    """A correlation id of this test's own: simulator fault scripts match on it."""
    return f"test-{uuid.uuid4().hex}"


def place_order(client: Client, request_id: str, **overrides: Any) -> str:
    """POST /api/orders through the real view; returns the new order's id."""
    response = client.post(
        "/api/orders",
        data=json.dumps(order_body(**overrides)),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {API_TOKEN}",
        HTTP_X_REQUEST_ID=request_id,
    )
    assert response.status_code == 202, response.content
    return response.json()["id"]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str = "condition") -> None:
    """Poll until `predicate()` is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached after {timeout}s")


def wait_final(order_id: str | uuid.UUID, timeout: float = 30.0) -> Order:
    """The order once it reached a final status; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        order = Order.objects.get(pk=order_id)
        if order.is_final:
            return order
        time.sleep(0.1)
    order = Order.objects.get(pk=order_id)
    sends = list(order.sends.values_list("operation", "status", "attempts", "error"))
    raise AssertionError(f"order still {order.status} after {timeout}s: {sends}")


def sends_by_operation(order: Order) -> dict[str, Send]:
    """The order's sends, by operation."""
    return {send.operation: send for send in order.sends.all()}
