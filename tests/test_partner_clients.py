"""The HTTP client layer against partner-apis.md, line by line (with `responses`).

Each row of the contract's tables is one case: the answer a partner gives, and the
decision dualsend takes. The network is faked here and only here; the integration tests
use the real simulators.
"""

import base64
import dataclasses
import datetime
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import responses
from django.conf import settings

from dualsend_app import retry_policy
from dualsend_app.models import Order, Send
from dualsend_app.partners import clients, http
from dualsend_app.partners.outcomes import AnswerOutcome
from tests.helpers import order_body

Op = Send.Operation
INVENTORY = settings.DUALSEND_PARTNERS["inventory"].base_url
PAYMENT = settings.DUALSEND_PARTNERS["payment"].base_url


def make_send(operation):
    """An unsaved Send with the request its partner module builds."""
    order = Order(id=uuid.uuid4(), payload=order_body(), correlation_id="corr-1")
    method, path, body = clients.build_request(operation, order)
    send = Send(order=order, operation=operation, method=method, path=path, request_body=body)
    send.partner = operation.split(".")[0]
    return send


def error(code):
    return {"error": {"code": code, "message": code}}


def fake_answer(operation, status, body=None, headers=None):
    send = make_send(operation)
    base = INVENTORY if send.partner == "inventory" else PAYMENT
    responses.add(send.method, base + send.path, json=body, status=status, headers=headers)
    return clients.call(send, request_id="corr-1")


CONTRACT = [
    # (operation, status, error code, expected outcome)
    (Op.INVENTORY_RESERVE, 201, None, AnswerOutcome.SUCCEEDED),
    (Op.INVENTORY_RESERVE, 200, None, AnswerOutcome.SUCCEEDED),
    (Op.INVENTORY_RESERVE, 409, "out_of_stock", AnswerOutcome.FAILED),
    (Op.INVENTORY_RESERVE, 409, "idempotency_in_progress", AnswerOutcome.RETRY),
    (Op.INVENTORY_RESERVE, 400, "bad_request", AnswerOutcome.FAILED),
    (Op.INVENTORY_RESERVE, 401, "unauthorized", AnswerOutcome.FAILED),
    (Op.INVENTORY_RESERVE, 403, "forbidden", AnswerOutcome.FAILED),
    (Op.INVENTORY_RESERVE, 404, "not_found", AnswerOutcome.FAILED),
    (Op.INVENTORY_RESERVE, 422, "idempotency_key_reused", AnswerOutcome.FAILED),
    (Op.INVENTORY_RESERVE, 408, None, AnswerOutcome.RETRY),
    (Op.INVENTORY_RESERVE, 429, "rate_limited", AnswerOutcome.RETRY),
    (Op.INVENTORY_RESERVE, 500, None, AnswerOutcome.RETRY),
    (Op.INVENTORY_RESERVE, 502, None, AnswerOutcome.RETRY),
    (Op.INVENTORY_RESERVE, 503, None, AnswerOutcome.RETRY),
    (Op.INVENTORY_RESERVE, 504, None, AnswerOutcome.RETRY),
    (Op.INVENTORY_RELEASE, 200, None, AnswerOutcome.SUCCEEDED),
    (Op.INVENTORY_RELEASE, 404, "not_found", AnswerOutcome.SUCCEEDED),
    (Op.INVENTORY_RELEASE, 503, None, AnswerOutcome.RETRY),
    (Op.INVENTORY_RELEASE, 401, "unauthorized", AnswerOutcome.FAILED),
    (Op.PAYMENT_CHARGE, 201, None, AnswerOutcome.SUCCEEDED),
    (Op.PAYMENT_CHARGE, 402, "card_declined", AnswerOutcome.FAILED),
    (Op.PAYMENT_CHARGE, 400, "bad_request", AnswerOutcome.FAILED),
    (Op.PAYMENT_CHARGE, 404, "not_found", AnswerOutcome.FAILED),
    (Op.PAYMENT_CHARGE, 422, "invalid_request", AnswerOutcome.FAILED),
    (Op.PAYMENT_CHARGE, 408, None, AnswerOutcome.RETRY),
    (Op.PAYMENT_CHARGE, 409, "idempotency_in_progress", AnswerOutcome.RETRY),
    (Op.PAYMENT_CHARGE, 429, None, AnswerOutcome.RETRY),
    (Op.PAYMENT_CHARGE, 500, None, AnswerOutcome.RETRY),
    (Op.PAYMENT_CHARGE, 507, None, AnswerOutcome.RETRY),
    (Op.PAYMENT_REFUND, 201, None, AnswerOutcome.SUCCEEDED),
    (Op.PAYMENT_REFUND, 404, "not_found", AnswerOutcome.SUCCEEDED),
    (Op.PAYMENT_REFUND, 502, None, AnswerOutcome.RETRY),
]


@pytest.mark.parametrize(("operation", "status", "code", "expected"), CONTRACT)
@responses.activate
def test_each_answer_of_the_contract_gets_its_decision(operation, status, code, expected):
    """Every row of partner-apis.md maps to succeeded, retry or failed as the contract says."""
    result = fake_answer(operation, status, error(code) if code else {})
    assert result.decision.outcome == expected


@responses.activate
def test_a_404_to_a_compensation_means_nothing_to_undo():
    """Release or refund answered 404: done, and nothing had happened."""
    result = fake_answer(Op.PAYMENT_REFUND, 404, error("not_found"))
    assert result.decision.nothing_to_undo


@pytest.mark.parametrize(
    "exception",
    [requests.ConnectionError("refused"), requests.ReadTimeout("slow"),
     requests.ConnectTimeout("no route")],
)
@responses.activate
def test_no_answer_at_all_is_retried(exception):
    """Connection refused or reset, and timeouts, are transient."""
    send = make_send(Op.PAYMENT_CHARGE)
    responses.add(send.method, PAYMENT + send.path, body=exception)
    result = clients.call(send, request_id="corr-1")
    assert result.decision.outcome == AnswerOutcome.RETRY
    assert result.answer.status_code is None
    assert type(exception).__name__ in result.answer.exception


@responses.activate
def test_success_answers_carry_the_remote_id():
    """The reservation and charge ids are read from the 2xx bodies."""
    reserve = fake_answer(Op.INVENTORY_RESERVE, 201, {"reservation_id": "res_1"})
    charge = fake_answer(Op.PAYMENT_CHARGE, 201, {"charge_id": "ch_1"})
    assert (reserve.remote_id, charge.remote_id) == ("res_1", "ch_1")


@responses.activate
def test_inventory_calls_carry_bearer_auth_key_and_correlation_id():
    """Inventory: Authorization Bearer, the send's Idempotency-Key, X-Request-ID, JSON body."""
    send = make_send(Op.INVENTORY_RESERVE)
    responses.add("POST", INVENTORY + "/v1/reservations", json={}, status=201)
    clients.call(send, request_id="corr-1")
    sent = responses.calls[0].request
    assert sent.headers["Authorization"] == "Bearer test-inventory-token"
    assert sent.headers["Idempotency-Key"] == str(send.idempotency_key)
    assert sent.headers["X-Request-ID"] == "corr-1"
    assert sent.headers["Content-Type"] == "application/json"
    assert json.loads(sent.body) == {"order_id": str(send.order.id),
                                     "items": [{"sku": "SKU-1", "quantity": 2}]}


@responses.activate
def test_payment_calls_carry_basic_auth_with_the_key_as_user():
    """Payment: HTTP Basic, key as user name, empty password; body in minor units."""
    send = make_send(Op.PAYMENT_CHARGE)
    responses.add("POST", PAYMENT + "/v1/charges", json={}, status=201)
    clients.call(send, request_id="corr-1")
    sent = responses.calls[0].request
    expected = base64.b64encode(b"test-payment-key:").decode()
    assert sent.headers["Authorization"] == f"Basic {expected}"
    assert json.loads(sent.body)["amount"] == 1999


@responses.activate
def test_every_attempt_sends_the_same_bytes():
    """The stored body is what goes out, byte for byte, on every attempt."""
    send = make_send(Op.PAYMENT_CHARGE)
    responses.add("POST", PAYMENT + "/v1/charges", status=503)
    responses.add("POST", PAYMENT + "/v1/charges", json={}, status=201)
    clients.call(send, request_id="corr-1")
    clients.call(send, request_id="corr-1")
    first, second = (call.request for call in responses.calls)
    assert first.body == second.body == send.request_body.encode()
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]


def test_release_is_a_delete_by_order_id():
    """Release is DELETE /v1/reservations/{order_id}, with no body."""
    send = make_send(Op.INVENTORY_RELEASE)
    assert (send.method, send.path, send.request_body) == (
        "DELETE", f"/v1/reservations/{send.order.id}", ""
    )


@responses.activate
def test_retry_after_is_read_in_seconds_and_as_a_date():
    """Retry-After as delta-seconds and as an HTTP date."""
    in_seconds = fake_answer(Op.PAYMENT_CHARGE, 429, {}, headers={"Retry-After": "7"})
    assert in_seconds.retry_after == 7.0
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=60)
    as_date = http.retry_after_seconds(
        {"Retry-After": later.strftime("%a, %d %b %Y %H:%M:%S GMT")}
    )
    assert 55 <= as_date <= 60


# --- the retry policy ------------------------------------------------------------------

POLICY = retry_policy.Policy(max_attempts=6, backoff_base=1.0, backoff_max=30.0, deadline=180)


@pytest.mark.parametrize(("attempts", "ceiling"), [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30),
                                                   (12, 30)])
def test_backoff_doubles_with_full_jitter_and_a_cap(attempts, ceiling):
    """After the n-th attempt the delay is uniform in [0, min(30, 2**(n-1))] seconds."""
    delays = [retry_policy.backoff_delay(POLICY, attempts) for _ in range(200)]
    assert all(0 <= delay <= ceiling for delay in delays)
    assert len(set(delays)) > 1  # jittered, not a fixed schedule


def test_retry_after_wins_over_a_shorter_backoff_spread_a_little_later():
    """Never sooner than Retry-After; the sends one 429 stopped do not return together."""
    delays = [retry_policy.next_delay(POLICY, 1, retry_after=45) for _ in range(200)]
    assert all(45 <= delay <= 67.5 for delay in delays)
    assert len(set(delays)) > 1


def test_gives_up_at_max_attempts_and_at_the_deadline():
    """Stop after the last allowed attempt, or when the next would land past the deadline."""
    now = datetime.datetime.now(datetime.UTC)
    assert retry_policy.give_up_reason(
        POLICY, attempts_made=6, started_at=now, now=now, delay=1
    ) == "gave up after 6 attempts"
    assert retry_policy.give_up_reason(
        POLICY, attempts_made=2, started_at=now, now=now, delay=181
    ) == "deadline of 180s passed after 2 attempts"
    assert retry_policy.give_up_reason(POLICY, attempts_made=2, started_at=now,
                                       now=now, delay=5) is None


class _ProxyHandler(BaseHTTPRequestHandler):
    """A forward proxy that answers every request itself, noting what it was asked."""

    seen: list[str] = []

    def do_POST(self) -> None:
        self.seen.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"reservation_id": "res_via_proxy"}'
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _call_through(partner_url: str) -> http.WireAnswer:
    """One call to a partner at `partner_url`, on a session of its own (new this call)."""
    config = dataclasses.replace(settings.DUALSEND_PARTNERS["inventory"], base_url=partner_url)
    return http.call(
        partner=f"proxied-{uuid.uuid4()}",
        config=config,
        auth=requests.auth.HTTPBasicAuth("k", ""),
        method="POST",
        path="/v1/reservations",
        body="{}",
        idempotency_key="key-1",
        request_id="corr-1",
    )


@pytest.fixture
def forward_proxy():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
    _ProxyHandler.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_partner_calls_go_through_the_proxy_the_environment_names(forward_proxy, monkeypatch):
    """The sessions read the proxy variables once, not on every call: they still apply."""
    monkeypatch.setenv("HTTP_PROXY", forward_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    answer = _call_through("http://inventory.partner.invalid")

    assert answer.status_code == 201, answer.exception
    assert _ProxyHandler.seen == ["http://inventory.partner.invalid/v1/reservations"]


def test_no_proxy_still_exempts_a_partner(forward_proxy, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", forward_proxy)
    monkeypatch.setenv("NO_PROXY", "inventory.partner.invalid")

    answer = _call_through("http://inventory.partner.invalid")

    assert answer.status_code is None  # straight to a host that does not exist
    assert _ProxyHandler.seen == []
