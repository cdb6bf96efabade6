"""The demo's and the bench's API client (devstack/traffic/client.py): a POST that got
no answer at all is tried again, with the same key and body, after a pause."""

import json

import requests
import responses

from devstack.traffic.client import ApiClient, DemoOrder, Kind

BASE = "http://127.0.0.1:9"


@responses.activate
def test_a_post_with_no_answer_is_sent_again_with_the_same_key():
    responses.add(responses.POST, f"{BASE}/api/orders", body=requests.ConnectionError("reset"))
    responses.add(
        responses.POST,
        f"{BASE}/api/orders",
        json={"id": "order-1", "status": "pending"},
        status=202,
    )
    order = DemoOrder(1, Kind.NORMAL, {"amount": 100}, "key-1", "request-1")

    ApiClient(BASE, "token").place(order)

    assert (order.order_id, order.status, order.error) == ("order-1", "pending", "")
    sent = [call.request for call in responses.calls]
    assert [request.headers["Idempotency-Key"] for request in sent] == ["key-1", "key-1"]
    assert {request.body for request in sent} == {json.dumps({"amount": 100}).encode()}
