"""dualsend's own HTTP API, as other programs rely on it (design.md, "dualsend's own HTTP API").

The chord is dispatched on commit and would talk to the broker: here `dispatch_order` is a
recording fake, so these tests see what would have been dispatched and nothing leaves the
process. The integration tests run the same API against a real worker.
"""

import hashlib
import io
import json
import threading
import time
import uuid
from datetime import datetime

import pytest
from django.db import IntegrityError, connections
from django.test import Client, RequestFactory

from dualsend_app.api import views
from dualsend_app.models import Order, Send
from project.api_clients import parse_api_clients
from tests.factories import create_send
from tests.helpers import ORDER_FIELDS, order_body, own_redis_keys

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "test-token"
OTHER_TOKEN = "other-test-token"
ORDERS_URL = "/api/orders"
VALID = order_body()
# What every answer shows of VALID: its payment source masked, its last 4 characters only.
SHOWN = VALID | {"payment_source": "••••visa"}
SEND_FIELDS = {
    "operation",
    "status",
    "failure_kind",
    "attempts",
    "last_status_code",
    "remote_id",
    "error",
    "idempotency_key",
    "first_attempt_at",
    "last_attempt_at",
    "finished_at",
}

# A well-formed id that no order has; fixed, so that every test process collects the
# same test ids (pytest-xdist requires it).
NO_SUCH_ORDER = "00000000-0000-4000-8000-000000000404"


# --- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture(autouse=True)
def api_settings(settings):
    """Two known tokens and the default limits, whatever the environment says; the
    clients' rate limits in Redis keys of this test's own, removed afterwards."""
    settings.DUALSEND_API_CLIENTS = parse_api_clients(f"{TOKEN},{OTHER_TOKEN}")
    settings.DUALSEND_MAX_BODY_BYTES = 64 * 1024
    settings.DUALSEND_MAX_WAIT_SECONDS = 30.0
    settings.DUALSEND_MAX_WAITERS = 8
    settings.DUALSEND_CLIENT_RATE_LIMIT = "50/second"
    with own_redis_keys(settings, "api"):
        yield settings


@pytest.fixture(autouse=True)
def dispatched(monkeypatch):
    """The order ids `dispatch_order` was called with (on commit), instead of a broker."""
    calls = []
    lock = threading.Lock()

    def fake_dispatch_order(order_id, sends=None):
        with lock:
            calls.append(str(order_id))
        return True

    monkeypatch.setattr("dualsend_app.enqueue.dispatch_order", fake_dispatch_order)
    return calls


def body_of(document):
    return json.dumps(document)


def auth_headers(token=TOKEN):
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def post_order(
    client,
    body=VALID,
    *,
    token=TOKEN,
    key=None,
    request_id=None,
    content_type="application/json",
    extra_headers=None,
    **meta,
):
    """POST /api/orders; `body` is a document (sent as JSON) or the raw str/bytes to send."""
    headers = auth_headers(token)
    if key is not None:
        headers["Idempotency-Key"] = key
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    headers |= extra_headers or {}
    raw = body if isinstance(body, str | bytes) else body_of(body)
    # CONTENT_TYPE again as WSGI meta: the test client drops content_type for an empty body.
    meta.setdefault("CONTENT_TYPE", content_type)
    return client.post(ORDERS_URL, data=raw, content_type=content_type, headers=headers, **meta)


def get_order(client, order_id, *, token=TOKEN, query=""):
    return client.get(f"{ORDERS_URL}/{order_id}{query}", headers=auth_headers(token))


def without(field):
    return {name: value for name, value in VALID.items() if name != field}


def item(**changes):
    return VALID["items"][0] | changes


def error_of(response):
    return response.json()["error"]


def assert_nothing_written(dispatched):
    assert Order.objects.count() == 0
    assert Send.objects.count() == 0
    assert dispatched == []


def create(client, body=VALID, **kwargs):
    response = post_order(client, body, **kwargs)
    assert response.status_code == 202, response.content
    return response.json()


def close_thread_connections():
    """A thread's own database connections: close them, or the test database stays in use."""
    connections.close_all()


# --- POST: the happy path ---------------------------------------------------------------


def test_create_answers_202_with_the_order_and_its_location(client, dispatched):
    """A valid order answers 202 with the full order, its url and a Location header."""
    response = post_order(client)

    assert response.status_code == 202
    assert response["Content-Type"] == "application/json"
    data = response.json()
    assert set(data) == ORDER_FIELDS
    order = Order.objects.get()
    assert data["id"] == str(order.pk)
    assert data["url"] == f"/api/orders/{order.pk}"
    assert response["Location"] == data["url"]
    assert data["status"] == Order.Status.PENDING
    assert data["payload"] == SHOWN
    assert {send["operation"] for send in data["sends"]} == {
        "inventory.reserve",
        "payment.charge",
    }


def test_create_saves_two_sends_and_dispatches_once_after_commit(client, dispatched):
    """One order, its two header sends, and one dispatch of them on commit."""
    data = create(client)

    assert Send.objects.filter(order_id=data["id"]).count() == 2
    assert dispatched == [data["id"]]


def test_create_accepts_a_utf8_charset_parameter(client):
    """`application/json; charset=utf-8` is JSON too."""
    response = post_order(client, content_type="application/json; charset=UTF-8")

    assert response.status_code == 202


def test_currency_is_stored_lower_case(client):
    """`USD` is accepted and stored (and sent to the partner) as `usd`."""
    data = create(client, order_body(currency="USD"))

    assert data["payload"]["currency"] == "usd"
    assert Order.objects.get().payload["currency"] == "usd"


def test_a_sane_request_id_is_kept_stored_and_echoed(client):
    """A sane X-Request-ID becomes the order's correlation id and comes back in the header."""
    response = post_order(client, request_id="req-42_a.b:c")

    assert response["X-Request-ID"] == "req-42_a.b:c"
    assert response.json()["correlation_id"] == "req-42_a.b:c"
    assert Order.objects.get().correlation_id == "req-42_a.b:c"


@pytest.mark.parametrize(
    "offered",
    ["has spaces", "x" * 129, "semi;colon", "new\\nline", "ünïcode"],
    ids=["spaces", "too-long", "semicolon", "backslash", "non-ascii"],
)
def test_an_insane_request_id_is_replaced_by_a_new_one(client, offered):
    """An X-Request-ID outside 1..128 of [A-Za-z0-9._:-] is replaced by a new uuid4 hex."""
    response = post_order(client, request_id=offered)

    echoed = response["X-Request-ID"]
    assert echoed != offered
    assert uuid.UUID(hex=echoed).hex == echoed
    assert Order.objects.get().correlation_id == echoed


def test_a_missing_request_id_gets_a_new_one(client):
    """Without X-Request-ID the answer still carries one, and the order stores it."""
    response = post_order(client)

    assert response["X-Request-ID"] == Order.objects.get().correlation_id


def test_the_order_records_a_client_id_never_the_token(client, caplog):
    """`Order.client` is a short sha256 hex of the token; the token is neither stored nor logged."""
    caplog.set_level("DEBUG")

    create(client)

    order = Order.objects.get()
    assert order.client == hashlib.sha256(TOKEN.encode()).hexdigest()[: len(order.client)]
    assert 8 <= len(order.client) < 64
    assert TOKEN not in json.dumps(
        [order.client, order.payload, order.correlation_id, order.idempotency_key]
    )
    assert TOKEN not in caplog.text


def test_post_needs_no_csrf_token(dispatched):
    """The API is for programs: POST works with CSRF checks enforced and no CSRF cookie."""
    response = post_order(Client(enforce_csrf_checks=True))

    assert response.status_code == 202


# --- POST: each check answers its code and writes nothing -------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {TOKEN}x"},
    ],
    ids=["missing", "wrong", "empty", "basic-scheme", "no-scheme", "token-prefix"],
)
def test_missing_or_wrong_token_answers_401(client, dispatched, headers):
    """No valid bearer token: 401 `unauthorized`, WWW-Authenticate, nothing written."""
    response = post_order(client, token=None, extra_headers=headers)

    assert response.status_code == 401
    assert error_of(response)["code"] == "unauthorized"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response["X-Request-ID"]
    assert_nothing_written(dispatched)


def test_every_configured_token_is_accepted(client):
    """Each token of DUALSEND_API_TOKENS is a client of its own."""
    create(client, token=OTHER_TOKEN)

    assert Order.objects.get().client != hashlib.sha256(TOKEN.encode()).hexdigest()[:16]


def test_no_configured_token_refuses_everyone(client, api_settings, dispatched):
    """With DUALSEND_API_TOKENS empty, every request is 401."""
    api_settings.DUALSEND_API_CLIENTS = ()

    response = post_order(client)

    assert response.status_code == 401
    assert_nothing_written(dispatched)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "",
        "application/x-www-form-urlencoded",
        "application/json-patch+json",
        "application/json; charset=latin-1",
    ],
    ids=["text", "missing", "form", "other-json", "latin-1"],
)
def test_a_body_that_is_not_json_media_answers_415(client, dispatched, content_type):
    """Content-Type other than application/json (UTF-8): 415, nothing written."""
    response = post_order(client, content_type=content_type)

    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"
    assert_nothing_written(dispatched)


def test_an_announced_body_over_the_limit_answers_413(client, api_settings, dispatched):
    """A Content-Length over DUALSEND_MAX_BODY_BYTES is refused with 413 before reading."""
    api_settings.DUALSEND_MAX_BODY_BYTES = 200
    body = body_of(order_body(payment_source="tok_" + "x" * 300))

    response = post_order(client, body)

    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
    assert_nothing_written(dispatched)


def test_a_body_over_the_limit_without_content_length_answers_413(api_settings, dispatched):
    """A body longer than the limit is refused even when Content-Length did not announce it.

    (Chunked uploads have no Content-Length; the view reads one byte past the limit.)
    """
    api_settings.DUALSEND_MAX_BODY_BYTES = 200
    raw = body_of(order_body(payment_source="tok_" + "x" * 300)).encode()
    request = RequestFactory().post(
        ORDERS_URL, data=raw, content_type="application/json", headers=auth_headers()
    )
    del request.META["CONTENT_LENGTH"]
    request._stream = io.BytesIO(raw)

    response = views.orders_collection(request)

    assert response.status_code == 413
    assert json.loads(response.content)["error"]["code"] == "payload_too_large"
    assert_nothing_written(dispatched)


def test_a_body_exactly_at_the_limit_is_accepted(client, api_settings):
    """The limit is inclusive: a body of exactly DUALSEND_MAX_BODY_BYTES is read."""
    body = body_of(VALID)
    api_settings.DUALSEND_MAX_BODY_BYTES = len(body.encode())

    assert post_order(client, body).status_code == 202


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b'{"items": [',
        b'{"amount": 1999,}',
        b'{"amount": NaN}',
        b'{"amount": 1, "amount": 2}',
        b'{"payment_source": "\xff\xfe"}',
        b"[" * 20_000,
    ],
    ids=[
        "empty",
        "text",
        "truncated",
        "trailing-comma",
        "nan",
        "duplicate-key",
        "not-utf8",
        "too-deep",
    ],
)
def test_a_body_that_is_not_valid_json_answers_400(client, dispatched, raw):
    """Broken JSON (or JSON that parsers disagree on) answers 400 `invalid_json`."""
    response = post_order(client, raw)

    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"
    assert "fields" not in error_of(response)
    assert_nothing_written(dispatched)


@pytest.mark.parametrize("raw", ["[]", '"an order"', "42", "null", "true"])
def test_a_json_body_that_is_not_an_object_answers_400(client, dispatched, raw):
    """The top level must be an object: anything else is 400 `invalid_json`."""
    response = post_order(client, raw)

    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"
    assert_nothing_written(dispatched)


INVALID_FIELDS = [
    # items
    (without("items"), "items"),
    (order_body(items=[]), "items"),
    (order_body(items=[item(sku=f"SKU-{n}") for n in range(101)]), "items"),
    (order_body(items="SKU-1"), "items"),
    (order_body(items={"sku": "SKU-1", "quantity": 1}), "items"),
    (order_body(items=[5]), "items[0]"),
    (order_body(items=[{"quantity": 2}]), "items[0].sku"),
    (order_body(items=[item(sku="")]), "items[0].sku"),
    (order_body(items=[item(sku="S" * 65)]), "items[0].sku"),
    (order_body(items=[item(sku=12)]), "items[0].sku"),
    (order_body(items=[item(sku=None)]), "items[0].sku"),
    (order_body(items=[{"sku": "SKU-1"}]), "items[0].quantity"),
    (order_body(items=[item(quantity=0)]), "items[0].quantity"),
    (order_body(items=[item(quantity=-1)]), "items[0].quantity"),
    (order_body(items=[item(quantity=1001)]), "items[0].quantity"),
    (order_body(items=[item(quantity=True)]), "items[0].quantity"),
    (order_body(items=[item(quantity=2.0)]), "items[0].quantity"),
    (order_body(items=[item(quantity="2")]), "items[0].quantity"),
    (order_body(items=[item(), item(), item(quantity=0)]), "items[2].quantity"),
    (order_body(items=[item(colour="red")]), "items[0].colour"),
    # amount
    (without("amount"), "amount"),
    (order_body(amount=0), "amount"),
    (order_body(amount=-5), "amount"),
    (order_body(amount=True), "amount"),
    (order_body(amount=19.99), "amount"),
    (order_body(amount=1999.0), "amount"),
    (order_body(amount="1999"), "amount"),
    (order_body(amount=2**53), "amount"),
    # currency
    (without("currency"), "currency"),
    (order_body(currency="us"), "currency"),
    (order_body(currency="usdd"), "currency"),
    (order_body(currency="u$d"), "currency"),
    (order_body(currency="üsd"), "currency"),
    (order_body(currency="usd\n"), "currency"),
    (order_body(currency=840), "currency"),
    # payment_source
    (without("payment_source"), "payment_source"),
    (order_body(payment_source=""), "payment_source"),
    (order_body(payment_source=42), "payment_source"),
    (order_body(payment_source=None), "payment_source"),
    (order_body(payment_source="tok_visa\n"), "payment_source"),
    (order_body(payment_source="tok\x00visa"), "payment_source"),
    (order_body(payment_source="tok\u200bvisa"), "payment_source"),
    (order_body(payment_source="t" * 256), "payment_source"),
    # unknown top-level field
    (order_body(coupon="FREE"), "coupon"),
]


def test_values_at_the_limits_are_accepted(client):
    """100 items, quantities 1 and 1000, a 64-character sku and amount 1 are all valid."""
    items = [item(sku=f"SKU-{n}", quantity=1) for n in range(99)]
    items.append(item(sku="S" * 64, quantity=1000))

    data = create(client, order_body(items=items, amount=1, currency="EuR"))

    assert len(data["payload"]["items"]) == 100
    assert data["payload"]["currency"] == "eur"


@pytest.mark.parametrize(("document", "field"), INVALID_FIELDS, ids=lambda v: None)
def test_an_invalid_field_answers_422_naming_it(client, dispatched, document, field):
    """Each field rule: 422 `invalid_fields` naming exactly that field, nothing written."""
    response = post_order(client, document)

    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_fields"
    assert error["message"]
    assert set(error["fields"]) == {field}
    assert error["fields"][field]
    assert_nothing_written(dispatched)


def test_every_invalid_field_is_named_at_once(client, dispatched):
    """All the invalid fields of one request are named in one 422."""
    document = {
        "items": [item(), item(sku=""), item(quantity=True)],
        "amount": 19.99,
        "currency": "dollars",
        "coupon": "FREE",
    }

    response = post_order(client, document, key="k" * 256)

    assert response.status_code == 422
    assert set(error_of(response)["fields"]) == {
        "items[1].sku",
        "items[2].quantity",
        "amount",
        "currency",
        "payment_source",
        "coupon",
        "Idempotency-Key",
    }
    assert error_of(response)["fields"]["items[1].sku"] == (
        "must be a non-empty string of at most 64 characters"
    )
    assert_nothing_written(dispatched)


@pytest.mark.parametrize("key", ["k" * 256, "", "   ", "tab\tkey"], ids=repr)
def test_an_unusable_idempotency_key_answers_422_naming_it(client, dispatched, key):
    """An Idempotency-Key that is empty, over 255 characters or not printable: 422."""
    response = post_order(client, key=key)

    assert response.status_code == 422
    assert set(error_of(response)["fields"]) == {"Idempotency-Key"}
    assert_nothing_written(dispatched)


def test_an_idempotency_key_of_255_characters_is_accepted(client):
    """255 characters is the longest key accepted."""
    assert post_order(client, key="k" * 255).status_code == 202


# --- POST: which check answers first ----------------------------------------------------


def test_a_bad_token_answers_before_bad_json(client, dispatched):
    """Token before syntax: a bad token with a broken body is 401."""
    response = post_order(client, b"{broken", token="wrong")

    assert response.status_code == 401


def test_a_bad_token_answers_before_a_bad_media_type(client):
    """Token before media type: 401."""
    response = post_order(client, token=None, content_type="text/plain")

    assert response.status_code == 401


def test_a_bad_media_type_answers_before_a_body_too_large(client, api_settings):
    """Media type before size: a too large text/plain body is 415."""
    api_settings.DUALSEND_MAX_BODY_BYTES = 10

    response = post_order(client, content_type="text/plain")

    assert response.status_code == 415


def test_a_body_too_large_answers_before_bad_json(client, api_settings):
    """Size before syntax: a too large broken body is 413."""
    api_settings.DUALSEND_MAX_BODY_BYTES = 10

    response = post_order(client, b"{" * 50)

    assert response.status_code == 413


def test_invalid_fields_answer_before_idempotency(client, dispatched):
    """Fields before idempotency: a reused key with an invalid body is 422 invalid_fields."""
    create(client, key="order-1")

    response = post_order(client, order_body(amount=0), key="order-1")

    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_fields"


# --- POST: idempotency ------------------------------------------------------------------


def test_same_key_and_body_replays_the_order_with_200(client, dispatched):
    """A replay answers 200 with the same order and Location; no second order, no dispatch."""
    first = create(client, key="order-1")

    response = post_order(client, key="order-1")

    assert response.status_code == 200
    assert response.json()["id"] == first["id"]
    assert response["Location"] == first["url"]
    assert Order.objects.count() == 1
    assert dispatched == [first["id"]]


def test_a_replay_ignores_key_order_and_white_space(client):
    """The same JSON document with keys reordered and other white space is the same body."""
    first = create(client, key="order-1")
    reordered = (
        '{ "payment_source" : "tok_visa",\n  "currency": "usd", "amount": 1999,\n'
        '  "items": [ { "quantity": 2, "sku": "SKU-1" } ] }'
    )

    response = post_order(client, reordered, key="order-1")

    assert response.status_code == 200
    assert response.json()["id"] == first["id"]


def test_a_replay_treats_currency_case_as_the_same_body(client):
    """Fingerprints are taken after normalizing: `USD` and `usd` are the same body."""
    first = create(client, order_body(currency="USD"), key="order-1")

    response = post_order(client, order_body(currency="usd"), key="order-1")

    assert response.status_code == 200
    assert response.json()["id"] == first["id"]


def test_a_replay_shows_the_order_as_it_stands_now(client):
    """A replay answers with the current status, not the one of the first answer."""
    first = create(client, key="order-1")
    Order.objects.filter(pk=first["id"]).update(status=Order.Status.COMPLETED)

    response = post_order(client, key="order-1")

    assert response.json()["status"] == Order.Status.COMPLETED


def test_a_replay_echoes_its_own_request_id(client):
    """X-Request-ID names this request; the body keeps the order's own correlation id."""
    create(client, key="order-1", request_id="first-request")

    response = post_order(client, key="order-1", request_id="retry-request")

    assert response["X-Request-ID"] == "retry-request"
    assert response.json()["correlation_id"] == "first-request"


def test_same_key_with_another_body_answers_422(client, dispatched):
    """Reusing a key for a different body: 422 `idempotency_key_reused`, nothing new."""
    first = create(client, key="order-1")

    response = post_order(client, order_body(amount=2000), key="order-1")

    assert response.status_code == 422
    assert error_of(response)["code"] == "idempotency_key_reused"
    assert "fields" not in error_of(response)
    assert list(Order.objects.values_list("pk", flat=True)) == [uuid.UUID(first["id"])]
    assert dispatched == [first["id"]]


def test_keys_are_scoped_per_client(client, dispatched):
    """Another token using the same key creates its own order."""
    first = create(client, key="order-1", token=TOKEN)

    second = create(client, key="order-1", token=OTHER_TOKEN)

    assert second["id"] != first["id"]
    assert Order.objects.count() == 2
    assert len(dispatched) == 2


def test_without_a_key_every_post_creates_an_order(client):
    """No Idempotency-Key, no deduplication: two POSTs, two orders."""
    create(client)
    create(client)

    assert Order.objects.count() == 2


def test_a_key_whose_first_request_is_not_visible_yet_answers_409(client, monkeypatch, dispatched):
    """The insert hit the unique key but the winner's order is not visible: 409, Retry-After."""

    def conflicting_create(**kwargs):
        raise IntegrityError("UNIQUE constraint failed: order_unique_client_idempotency_key")

    monkeypatch.setattr("dualsend_app.orders.create_order", conflicting_create)

    response = post_order(client, key="order-1")

    assert response.status_code == 409
    assert error_of(response)["code"] == "idempotency_in_progress"
    assert response["Retry-After"]
    assert_nothing_written(dispatched)


def test_concurrent_posts_with_the_same_key_create_one_order(dispatched):
    """Eight simultaneous POSTs with one key: one order, every answer 202/200/409 with its id."""
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    answers = []
    lock = threading.Lock()

    def post():
        try:
            barrier.wait(timeout=10)
            response = post_order(Client(), key="same-key")
            with lock:
                answers.append((response.status_code, response.json()))
        finally:
            close_thread_connections()

    threads = [threading.Thread(target=post) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(answers) == threads_count
    statuses = [status for status, _ in answers]
    assert set(statuses) <= {200, 202, 409}
    assert statuses.count(202) == 1
    order = Order.objects.get()
    assert {body["id"] for status, body in answers if status != 409} == {str(order.pk)}
    assert Send.objects.count() == 2
    assert dispatched == [str(order.pk)]


def test_an_unexpected_error_answers_500_in_the_error_shape(client, monkeypatch):
    """A bug answers 500 `internal_error` as JSON, with the request id, not an HTML page."""

    def broken_create(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("dualsend_app.orders.create_order", broken_create)

    response = post_order(client, request_id="req-500")

    assert response.status_code == 500
    assert error_of(response)["code"] == "internal_error"
    assert response["X-Request-ID"] == "req-500"


# --- methods ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("put", ORDERS_URL, "GET, POST"),
        ("delete", ORDERS_URL, "GET, POST"),
        ("delete", f"{ORDERS_URL}/{NO_SUCH_ORDER}", "GET"),
        ("post", f"{ORDERS_URL}/{NO_SUCH_ORDER}", "GET"),
    ],
)
def test_other_methods_answer_405_with_allow(client, method, path, allow):
    """A method a resource does not serve: 405 `method_not_allowed` and an Allow header."""
    response = getattr(client, method)(path, headers=auth_headers())

    assert response.status_code == 405
    assert response["Allow"] == allow
    assert error_of(response)["code"] == "method_not_allowed"
    assert response["X-Request-ID"]


# --- GET /api/orders/<id> -----------------------------------------------------------------


def test_get_returns_the_order_and_every_send(client):
    """GET shows the order's fields and one entry per send, with every send field."""
    data = create(client, request_id="req-get")

    response = get_order(client, data["id"])

    assert response.status_code == 200
    body = response.json()
    assert set(body) == ORDER_FIELDS
    assert body["id"] == data["id"]
    assert body["correlation_id"] == "req-get"
    assert body["payload"] == SHOWN
    assert body["url"] == f"/api/orders/{data['id']}"
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert body["dispatched_at"] is None
    assert body["settled_at"] is None
    assert [send["operation"] for send in body["sends"]] == [
        "inventory.reserve",
        "payment.charge",
    ]
    for send in body["sends"]:
        assert set(send) == SEND_FIELDS
        assert send["status"] == Send.Status.PENDING
        assert send["attempts"] == 0
        assert send["first_attempt_at"] is None


def test_get_shows_send_progress_and_compensations(client):
    """Attempts, status codes, remote ids, errors and timestamps of every send, as ISO 8601."""
    data = create(client)
    charge = Send.objects.get(order_id=data["id"], operation=Send.Operation.PAYMENT_CHARGE)
    charge.status = Send.Status.SUCCEEDED
    charge.attempts = 3
    charge.last_status_code = 201
    charge.remote_id = "ch_123"
    charge.first_attempt_at = charge.last_attempt_at = charge.finished_at = charge.created_at
    charge.save()
    create_send(
        charge.order,
        Send.Operation.PAYMENT_REFUND,
        status=Send.Status.FAILED,
        failure_kind=Send.FailureKind.UNKNOWN,
        error="timeout",
    )

    body = get_order(client, data["id"]).json()

    sends = {send["operation"]: send for send in body["sends"]}
    assert set(sends) == {"inventory.reserve", "payment.charge", "payment.refund"}
    assert sends["payment.charge"]["attempts"] == 3
    assert sends["payment.charge"]["last_status_code"] == 201
    assert sends["payment.charge"]["remote_id"] == "ch_123"
    assert sends["payment.charge"]["idempotency_key"] == str(charge.idempotency_key)
    assert datetime.fromisoformat(sends["payment.charge"]["finished_at"]) == charge.finished_at
    assert sends["payment.refund"]["failure_kind"] == "unknown"
    assert sends["payment.refund"]["error"] == "timeout"


@pytest.mark.parametrize("order_id", [NO_SUCH_ORDER, "not-a-uuid", "123"])
def test_get_an_unknown_or_malformed_id_answers_404(client, order_id):
    """No such order, or an id that is not a UUID: 404 `not_found`."""
    response = get_order(client, order_id)

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_get_without_a_valid_token_answers_401(client, token):
    """GET needs the same bearer token as POST."""
    data = create(client)

    response = get_order(client, data["id"], token=token)

    assert response.status_code == 401
    assert error_of(response)["code"] == "unauthorized"


def test_get_echoes_the_request_id(client):
    """GET answers carry the caller's X-Request-ID too."""
    data = create(client)

    response = client.get(data["url"], headers={**auth_headers(), "X-Request-ID": "poll-1"})

    assert response["X-Request-ID"] == "poll-1"


@pytest.mark.parametrize("wait", ["abc", "-1", "nan", "inf", ""])
def test_get_with_an_invalid_wait_answers_422_naming_wait(client, wait):
    """?wait must be a non-negative number of seconds: 422 naming `wait` otherwise."""
    data = create(client)

    response = get_order(client, data["id"], query=f"?wait={wait}")

    assert response.status_code == 422
    assert set(error_of(response)["fields"]) == {"wait"}


def test_get_wait_on_a_pending_order_answers_after_the_wait(client):
    """?wait=0.5 on an order that stays pending answers, still pending, after about 0.5 s."""
    data = create(client)

    started = time.monotonic()
    response = get_order(client, data["id"], query="?wait=0.5")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.json()["status"] == Order.Status.PENDING
    assert elapsed >= 0.4


def test_get_wait_answers_as_soon_as_the_order_is_settled(client):
    """?wait returns early with the final status when another process settles the order."""
    data = create(client)

    def settle_later():
        try:
            time.sleep(0.3)
            Order.objects.filter(pk=data["id"]).update(status=Order.Status.COMPLETED)
        finally:
            close_thread_connections()

    settler = threading.Thread(target=settle_later)
    settler.start()
    started = time.monotonic()
    response = get_order(client, data["id"], query="?wait=10")
    elapsed = time.monotonic() - started
    settler.join()

    assert response.json()["status"] == Order.Status.COMPLETED
    assert elapsed < 9


def test_get_wait_is_capped(client, api_settings):
    """?wait above DUALSEND_MAX_WAIT_SECONDS waits only that long."""
    api_settings.DUALSEND_MAX_WAIT_SECONDS = 0.3
    data = create(client)

    started = time.monotonic()
    response = get_order(client, data["id"], query="?wait=600")

    assert response.status_code == 200
    assert time.monotonic() - started < 10


def test_get_wait_on_a_final_order_answers_at_once(client):
    """An order already final is answered without waiting."""
    data = create(client)
    Order.objects.filter(pk=data["id"]).update(status=Order.Status.FAILED)

    started = time.monotonic()
    response = get_order(client, data["id"], query="?wait=20")

    assert response.json()["status"] == Order.Status.FAILED
    assert time.monotonic() - started < 10


# --- an order belongs to the client that created it -----------------------------------


def test_another_clients_order_answers_404_exactly_as_an_unknown_id(client):
    """To any other client an order does not exist: the same 404 body as an unknown id."""
    data = create(client, token=TOKEN)

    foreign = get_order(client, data["id"], token=OTHER_TOKEN)
    unknown = get_order(client, uuid.uuid4(), token=OTHER_TOKEN)

    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json()
    assert foreign["Content-Type"] == unknown["Content-Type"]
    assert get_order(client, data["id"], token=TOKEN).status_code == 200


def test_another_clients_wait_answers_404_at_once(client):
    """?wait on another client's pending order is the unknown-id 404, without waiting."""
    data = create(client, token=TOKEN)

    started = time.monotonic()
    response = get_order(client, data["id"], token=OTHER_TOKEN, query="?wait=5")

    assert response.status_code == 404
    assert response.json() == get_order(client, uuid.uuid4(), token=OTHER_TOKEN).json()
    assert time.monotonic() - started < 4


def test_a_named_client_owns_its_orders_under_its_name(client, api_settings):
    """`name:token`: the client is its name; the order records the name, never the token."""
    api_settings.DUALSEND_API_CLIENTS = parse_api_clients("shop:shop-token-1,other:other-tok")
    data = create(client, token="shop-token-1")

    order = Order.objects.get()
    assert order.client == "shop"
    assert get_order(client, data["id"], token="shop-token-1").status_code == 200
    assert get_order(client, data["id"], token="other-tok").status_code == 404


def test_a_named_client_keeps_its_orders_when_its_token_is_rotated(client, api_settings):
    """The same name with a new token reads the orders the old token created."""
    api_settings.DUALSEND_API_CLIENTS = parse_api_clients("shop:old-shop-token")
    data = create(client, token="old-shop-token", key="order-1")

    api_settings.DUALSEND_API_CLIENTS = parse_api_clients("shop:new-shop-token")

    assert get_order(client, data["id"], token="old-shop-token").status_code == 401
    assert get_order(client, data["id"], token="new-shop-token").status_code == 200
    replay = post_order(client, token="new-shop-token", key="order-1")
    assert replay.status_code == 200
    assert replay.json()["id"] == data["id"]


def test_plain_and_named_tokens_work_side_by_side(client, api_settings):
    """A plain token keeps its sha256 client id next to named clients."""
    api_settings.DUALSEND_API_CLIENTS = parse_api_clients(f"shop:shop-token,{TOKEN}")

    create(client, token=TOKEN)
    create(client, token="shop-token")

    assert set(Order.objects.values_list("client", flat=True)) == {
        hashlib.sha256(TOKEN.encode()).hexdigest()[:16],
        "shop",
    }


# --- payment_source: never shown whole, validated ---------------------------------------

SOURCE = "pm_card_4242_secret_9f3k"


def assert_masked(payload):
    assert payload["payment_source"] == "••••9f3k"


def test_the_payment_source_is_masked_in_the_202(client):
    """POST answers the source as its last 4 characters behind a mask, never whole."""
    response = post_order(client, order_body(payment_source=SOURCE))

    assert response.status_code == 202
    assert_masked(response.json()["payload"])
    assert SOURCE not in response.content.decode()


def test_the_payment_source_is_masked_in_a_replay(client):
    """A replay (200) masks the source too."""
    create(client, order_body(payment_source=SOURCE), key="order-1")

    response = post_order(client, order_body(payment_source=SOURCE), key="order-1")

    assert response.status_code == 200
    assert_masked(response.json()["payload"])
    assert SOURCE not in response.content.decode()


def test_the_payment_source_is_masked_in_get_and_wait(client):
    """GET, with and without ?wait, masks the source."""
    data = create(client, order_body(payment_source=SOURCE))

    for query in ("", "?wait=0.1"):
        response = get_order(client, data["id"], query=query)
        assert_masked(response.json()["payload"])
        assert SOURCE not in response.content.decode()


@pytest.mark.parametrize("source", ["tok_1", "abcd", "x", "visa123"])
def test_a_short_payment_source_is_masked_whole(client, source):
    """Under 8 characters, showing the last 4 would show most of it: all masked."""
    data = create(client, order_body(payment_source=source))

    assert data["payload"]["payment_source"] == "••••"


def test_masking_changes_nothing_stored_or_sent(client):
    """The order and the charge's request keep the source whole: retries send the same bytes."""
    data = create(client, order_body(payment_source=SOURCE))

    order = Order.objects.get(pk=data["id"])
    charge = order.sends.get(operation=Send.Operation.PAYMENT_CHARGE)
    assert order.payload["payment_source"] == SOURCE
    assert json.loads(charge.request_body)["source"] == SOURCE


@pytest.mark.parametrize(
    "source",
    ["tok_visa\n", "tok\rvisa", "tok\x00visa", "tok\x1bvisa", "tok\tvisa", "tok\u2028visa"],
    ids=["newline", "carriage-return", "nul", "escape", "tab", "line-separator"],
)
def test_a_payment_source_with_a_control_character_answers_422(client, dispatched, source):
    """Not printable: 422 naming `payment_source`, nothing written, the source not echoed."""
    response = post_order(client, order_body(payment_source=source))

    assert response.status_code == 422
    assert set(error_of(response)["fields"]) == {"payment_source"}
    assert source not in response.content.decode()
    assert_nothing_written(dispatched)


def test_a_payment_source_of_256_characters_answers_422(client, dispatched):
    """More than 255 characters: 422 naming `payment_source`."""
    response = post_order(client, order_body(payment_source="t" * 256))

    assert response.status_code == 422
    assert error_of(response)["fields"] == {
        "payment_source": "must be a string of 1 to 255 printable characters"
    }
    assert_nothing_written(dispatched)


def test_a_payment_source_of_255_printable_characters_is_accepted(client):
    """255 printable characters (spaces and non-ASCII letters included) is the longest."""
    source = "tok é " + "x" * 249

    data = create(client, order_body(payment_source=source))

    assert Order.objects.get(pk=data["id"]).payload["payment_source"] == source
    assert data["payload"]["payment_source"] == "••••xxxx"
