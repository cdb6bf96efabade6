"""Helpers shared by the tests: the valid order body, place an order, wait for it to settle."""

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import redis
from django.test import Client

from dualsend_app.models import Order, Send

API_TOKEN = "test-token"
# The fields of an order as the API shows it.
ORDER_FIELDS = {
    "id",
    "status",
    "status_reason",
    "correlation_id",
    "created_at",
    "dispatched_at",
    "settled_at",
    "payload",
    "url",
    "sends",
}


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


BATCH_URL = "/api/orders/batch"


def batch_order(key: str, **overrides: Any) -> dict[str, Any]:
    """One order of POST /api/orders/batch: the valid order body with its own key."""
    return {"idempotency_key": key} | order_body(**overrides)


def post_batch(
    client: Client,
    orders: Any,
    *,
    token: str | None = API_TOKEN,
    request_id: str | None = None,
    content_type: str = "application/json",
    raw: str | bytes | None = None,
) -> Any:
    """POST /api/orders/batch with `{"orders": orders}` (or the `raw` body as given)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    data = raw if raw is not None else json.dumps({"orders": orders})
    return client.post(BATCH_URL, data=data, content_type=content_type, headers=headers)


@contextlib.contextmanager
def own_redis_keys(settings: Any, name: str) -> Iterator[str]:
    """The tests' Redis, with every dualsend key (breaker, rates, order events) under a
    prefix of this test's own; its keys are removed afterwards. Yields the prefix."""
    from tests import environment

    prefix = f"test-{name}-{uuid.uuid4().hex[:12]}"
    settings.REDIS_URL = environment.REDIS_URL
    settings.DUALSEND_RESILIENCE_KEY_PREFIX = prefix
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(environment.REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
