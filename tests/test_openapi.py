"""The API's contract (GET /api/schema, dualsend_app/api/openapi.py) holds for its real answers.

A real gunicorn, a real worker and the simulators answer real requests; every answer is
validated (status, headers, JSON body) with openapi-core against the document that very
gunicorn serves. Answers that need a fault (429, 500, 503) come from Django's test client
through the full middleware, and are validated the same way. A documented answer no test
gives, or a route under /api/ the document does not describe, fails the module: the
document and the API cannot drift apart.
"""

import contextlib
import json
import re
import urllib.parse
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser

import openapi_schema_validator
import pytest
import requests
from django.db import OperationalError, connection, transaction
from django.urls import URLPattern, URLResolver, get_resolver
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_spec_validator import validate as validate_spec
from werkzeug.datastructures import Headers

from dualsend_app.models import Order
from project.api_clients import parse_api_clients
from tests.helpers import order_body, own_redis_keys, wait_final
from tests.processes import Gunicorn

pytestmark = pytest.mark.integration

TOKEN, OTHER_TOKEN = "test-token", "other-test-token"
CLIENT = parse_api_clients(TOKEN)[0].id
ORDERS, BATCH, DETAIL = "/api/orders", "/api/orders/batch", "/api/orders/{order_id}"
SCHEMA, DOCS = "/api/schema", "/api/docs"
# Small enough for a cheap 413 of the batch call (its default is 2 MiB).
BATCH_MAX_BODY_BYTES = 64 * 1024

# Which test gives each documented answer: (method, path, status) → test. 405 is the
# answer of any undocumented method on a path ("*"). Each test is checked, when it passes,
# to have validated every answer listed for it; the list, to name every documented answer.
EXERCISED_BY = {
    ("post", ORDERS, "202"): "test_an_order_is_created_replayed_read_and_waited_for",
    ("post", ORDERS, "200"): "test_an_order_is_created_replayed_read_and_waited_for",
    ("get", DETAIL, "200"): "test_an_order_is_created_replayed_read_and_waited_for",
    ("post", ORDERS, "400"): "test_a_refused_order_answers_as_documented",
    ("post", ORDERS, "401"): "test_a_refused_order_answers_as_documented",
    ("post", ORDERS, "413"): "test_a_refused_order_answers_as_documented",
    ("post", ORDERS, "415"): "test_a_refused_order_answers_as_documented",
    ("post", ORDERS, "422"): "test_a_refused_order_answers_as_documented",
    ("post", ORDERS, "409"): "test_a_key_still_being_created_answers_409",
    ("get", DETAIL, "401"): "test_reading_an_order_refused_answers_as_documented",
    ("get", DETAIL, "404"): "test_reading_an_order_refused_answers_as_documented",
    ("get", DETAIL, "422"): "test_reading_an_order_refused_answers_as_documented",
    ("get", ORDERS, "200"): "test_the_list_filters_and_pages_as_documented",
    ("get", ORDERS, "401"): "test_the_list_filters_and_pages_as_documented",
    ("get", ORDERS, "422"): "test_the_list_filters_and_pages_as_documented",
    ("post", BATCH, "207"): "test_a_batch_answers_each_order_as_documented",
    ("post", BATCH, "400"): "test_a_refused_batch_answers_as_documented",
    ("post", BATCH, "401"): "test_a_refused_batch_answers_as_documented",
    ("post", BATCH, "413"): "test_a_refused_batch_answers_as_documented",
    ("post", BATCH, "415"): "test_a_refused_batch_answers_as_documented",
    ("post", BATCH, "422"): "test_a_refused_batch_answers_as_documented",
    ("get", SCHEMA, "200"): "test_the_schema_and_its_page_are_public_and_self_contained",
    ("get", DOCS, "200"): "test_the_schema_and_its_page_are_public_and_self_contained",
    **{
        (method, path, code): test
        for method, path in (("post", ORDERS), ("get", ORDERS), ("get", DETAIL), ("post", BATCH))
        for code, test in (
            ("429", "test_a_client_over_its_rate_gets_429_on_every_call"),
            ("500", "test_an_unnamed_fault_is_500_on_every_call"),
            ("503", "test_the_database_down_is_503_on_every_call"),
        )
    },
    **{
        ("*", path, "405"): "test_each_path_serves_exactly_its_documented_methods"
        for path in (ORDERS, BATCH, DETAIL, SCHEMA, DOCS)
    },
}
# Needs row locks between two sessions, which SQLite does not have.
POSTGRESQL_ONLY = {("post", ORDERS, "409")}


# --- the validator --------------------------------------------------------------------------


@dataclass
class ContractRequest:
    """What openapi-core needs of a request to find the operation an answer belongs to."""

    method: str
    path: str
    host_url: str = "http://127.0.0.1"
    content_type: str = ""
    body: bytes | None = None
    parameters: RequestParameters = field(default_factory=RequestParameters)


@dataclass
class ContractResponse:
    status_code: int
    headers: Headers
    content_type: str
    data: bytes


class Contract:
    """The document one gunicorn serves, and the answers validated against it."""

    def __init__(self, document):
        self.document = document
        self.openapi = OpenAPI.from_dict(document)
        self.validated = set()

    def check(self, method, template, response, *, path=None):
        """Validate `response` (requests' or Django's) as the answer of `method template`."""
        status, headers, data = answer_of(response)
        request = ContractRequest(method, path or template)
        content_type = headers.get("Content-Type", "").lower()
        self.openapi.validate_response(
            request, ContractResponse(status, headers, content_type, data)
        )
        self.validated.add((method, template, str(status)))
        return response

    def check_405(self, template, response, allowed):
        """405 is no operation's answer: checked against components.responses.MethodNotAllowed."""
        status, headers, data = answer_of(response)
        assert status == 405, data
        assert headers["Allow"] == ", ".join(allowed)
        assert headers["X-Request-ID"]
        media = self.document["components"]["responses"]["MethodNotAllowed"]["content"]
        self.validate_instance(json.loads(data), media["application/json"]["schema"])
        self.validated.add(("*", template, "405"))

    def validate_instance(self, instance, schema):
        """`instance` against `schema`, whose $refs point into the document's components."""
        root = {"components": self.document["components"], "allOf": [schema]}
        openapi_schema_validator.validate(
            instance, root, cls=openapi_schema_validator.OAS31Validator
        )


def answer_of(response):
    """(status, headers, body) of a `requests` answer or of Django's test client's."""
    if isinstance(response, requests.Response):
        return response.status_code, Headers(list(response.headers.items())), response.content
    return response.status_code, Headers(list(response.items())), response.content


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(stack_env):
    """The web process as production runs it, on the tests' database and broker."""
    env, _ = stack_env
    overrides = {
        # The ?wait and list walks send bursts; the 429 is given in process, on purpose.
        "DUALSEND_CLIENT_RATE_LIMIT": "1000/second",
        # A duplicate meeting an open first request gives up after 0.5 s: a cheap 409.
        "DUALSEND_INTAKE_LOCK_TIMEOUT_SECONDS": "0.5",
        "DUALSEND_BATCH_MAX_BODY_BYTES": str(BATCH_MAX_BODY_BYTES),
    }
    web = Gunicorn("web-openapi", env | overrides)
    yield web
    web.stop()


@pytest.fixture(scope="module")
def contract(web):
    """The document gunicorn serves at /api/schema, ready to validate answers."""
    response = requests.get(f"{web.url}{SCHEMA}", timeout=10)
    assert response.status_code == 200, response.text
    return Contract(response.json())


@pytest.fixture(autouse=True)
def exercised(request):
    """A test that passed gave every answer EXERCISED_BY lists for it."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before or "contract" not in request.fixturenames:
        return
    contract = request.getfixturevalue("contract")
    claimed = {key for key, test in EXERCISED_BY.items() if test == request.node.originalname}
    if connection.vendor != "postgresql":
        claimed -= POSTGRESQL_ONLY
    assert claimed <= contract.validated, f"not given: {sorted(claimed - contract.validated)}"


class Api:
    """requests to the gunicorn under test, with the tests' token by default."""

    def __init__(self, url):
        self.url = url

    def call(self, method, path, *, token=TOKEN, headers=None, **kwargs):
        sent = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.request(
            method, f"{self.url}{path}", headers=sent | (headers or {}), timeout=30, **kwargs
        )

    def post_order(self, body=None, *, key=None, **kwargs):
        headers = {"Idempotency-Key": key} if key else {}
        return self.call("POST", ORDERS, json=body or order_body(), headers=headers, **kwargs)


@pytest.fixture
def api(web, live):
    return Api(web.url)


# --- the document ---------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(contract):
    assert contract.document["openapi"].startswith("3.1.")
    validate_spec(contract.document)


def test_every_example_in_the_document_matches_its_schema(contract):
    """Examples are what readers copy: each one is a valid instance of its schema."""
    checked = 0
    for media in media_types(contract.document):
        examples = [media["example"]] if "example" in media else []
        examples += [example["value"] for example in media.get("examples", {}).values()]
        for example in examples:
            contract.validate_instance(example, media["schema"])
            checked += 1
    assert checked >= 20


def media_types(document):
    operations = [op for path in document["paths"].values() for op in path.values()]
    for operation in operations:
        yield from operation.get("requestBody", {}).get("content", {}).values()
        for answer in operation["responses"].values():
            yield from answer.get("content", {}).values()
    for answer in document["components"]["responses"].values():
        yield from answer["content"].values()


def test_every_route_under_api_is_documented_and_nothing_else(contract):
    """No undocumented operation: each route of project/urls.py under /api/ is a path of the
    document, and each path of the document a route."""
    routes = {openapi_path(route) for route in routes_of(get_resolver())}

    assert {route for route in routes if route.startswith("/api/")} == set(
        contract.document["paths"]
    )


def routes_of(resolver, prefix=""):
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            yield from routes_of(pattern, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern)


def openapi_path(route):
    """Django's `api/orders/<str:order_id>` as OpenAPI's `/api/orders/{order_id}`."""
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def test_each_path_serves_exactly_its_documented_methods(api, contract):
    """A method the document does not list answers 405, and Allow lists exactly the
    documented ones: no path serves an operation the document leaves out."""
    for template, operations in contract.document["paths"].items():
        path = template.replace("{order_id}", str(uuid.uuid4()))
        documented = sorted(method.upper() for method in operations)
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - set(documented):
            contract.check_405(template, api.call(method, path), documented)


def test_every_documented_answer_is_given_by_a_test(contract):
    """EXERCISED_BY names each (operation, status) of the document, and each test it names
    exists; the `exercised` fixture holds each test to its part."""
    document = contract.document
    documented = {
        (method, path, code)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for code in operation["responses"]
    } | {("*", path, "405") for path in document["paths"]}

    assert set(EXERCISED_BY) == documented
    missing = {test for test in EXERCISED_BY.values() if not callable(globals().get(test))}
    assert missing == set()


# --- POST /api/orders and GET /api/orders/{order_id} -----------------------------------------


def test_an_order_is_created_replayed_read_and_waited_for(api, contract):
    """202 with Location, the same key and body 200 with the same order, GET 200, and
    ?wait until it completed: each answer as documented."""
    created = contract.check("post", ORDERS, api.post_order(key="contract-1"))
    replayed = contract.check("post", ORDERS, api.post_order(key="contract-1"))
    order_id = created.json()["id"]
    path = f"{ORDERS}/{order_id}"
    read = contract.check("get", DETAIL, api.call("GET", path), path=path)
    waited = contract.check("get", DETAIL, api.call("GET", f"{path}?wait=15"), path=path)

    assert created.status_code == 202 and created.headers["Location"] == path
    assert replayed.status_code == 200 and replayed.json()["id"] == order_id
    assert read.status_code == 200
    assert waited.json()["status"] == Order.Status.COMPLETED
    assert "tok_visa" not in waited.text


def test_a_refused_order_answers_as_documented(api, contract):
    """401, 415, 413, 400, 422 invalid fields and 422 key reused: each documented, and
    nothing created."""
    answers = {
        "401": api.post_order(token=None),
        "415": api.call("POST", ORDERS, data="items=1", headers={"Content-Type": "text/plain"}),
        "413": api.call(
            "POST",
            ORDERS,
            data=b"[" + b" " * 70_000 + b"]",
            headers={"Content-Type": "application/json"},
        ),
        "400": api.call(
            "POST", ORDERS, data=b'{"items": [', headers={"Content-Type": "application/json"}
        ),
        "422": api.post_order(order_body(amount=0, currency="dollars")),
    }
    api.post_order(key="contract-2")
    reused = api.post_order(order_body(amount=1), key="contract-2")

    for code, response in [*answers.items(), ("422", reused)]:
        contract.check("post", ORDERS, response)
        assert str(response.status_code) == code, response.text
    assert set(answers["422"].json()["error"]["fields"]) == {"amount", "currency"}
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert Order.objects.count() == 1


def test_a_key_still_being_created_answers_409(api, contract):
    """The first request with a key holds its row (here: this test, in an open transaction)
    past the intake's lock timeout: the duplicate answers 409 with Retry-After."""
    if connection.vendor != "postgresql":
        pytest.skip("needs row locks between sessions: SQLite serialises whole transactions")
    with transaction.atomic():
        held_order(key="contract-held")
        response = contract.check("post", ORDERS, api.post_order(key="contract-held"))
        transaction.set_rollback(True)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_in_progress"


def held_order(key):
    """An order row with `key`, inserted in this test's open transaction: another session's
    insert of the same key waits on it."""
    return Order.objects.create(
        client=CLIENT,
        idempotency_key=key,
        request_fingerprint="f" * 64,
        payload=order_body(),
        correlation_id="held-by-the-test",
    )


def test_reading_an_order_refused_answers_as_documented(api, contract):
    """401 without a token; 404 for an unknown id, a malformed one and another client's
    order alike; 422 naming `wait`."""
    order_id = api.post_order().json()["id"]
    path = f"{ORDERS}/{order_id}"
    answers = [
        ("401", path, api.call("GET", path, token=None)),
        ("404", path, api.call("GET", path, token=OTHER_TOKEN)),
        ("404", f"{ORDERS}/{uuid.uuid4()}", None),
        ("404", f"{ORDERS}/not-an-id", None),
        ("422", f"{path}?wait=-1", None),
    ]
    for code, url, response in answers:
        if response is None:  # (a Response's truth is "status under 400")
            response = api.call("GET", url)
        contract.check("get", DETAIL, response, path=urllib.parse.urlsplit(url).path)
        assert str(response.status_code) == code, response.text


# --- GET /api/orders ------------------------------------------------------------------------


def test_the_list_filters_and_pages_as_documented(api, contract):
    """Filters and pages of 2 over 5 orders, following `next`: every page validates, each
    order once, newest first; 401 without a token, 422 naming a bad parameter."""
    created = [api.post_order(key=f"contract-list-{n}").json()["id"] for n in range(5)]
    for order_id in created:
        wait_final(order_id)
    url, seen = (
        f"{ORDERS}?status=completed&status=failed&created_after=2000-01-01T00:00:00Z&limit=2",
        [],
    )
    while url:
        page = contract.check("get", ORDERS, api.call("GET", url)).json()
        seen += [order["id"] for order in page["results"]]
        url = page["next"]
    refused = contract.check("get", ORDERS, api.call("GET", f"{ORDERS}?limit=500&status=x"))
    anonymous = contract.check("get", ORDERS, api.call("GET", ORDERS, token=None))

    assert seen == created[::-1]
    assert set(refused.json()["error"]["fields"]) == {"limit", "status"}
    assert anonymous.status_code == 401


# --- POST /api/orders/batch -----------------------------------------------------------------


def batch_order(key, **overrides):
    return {"idempotency_key": key} | order_body(**overrides)


def test_a_batch_answers_each_order_as_documented(api, contract):
    """207 with one result per order: created, replayed, not an object, invalid fields,
    key reused and (PostgreSQL) key still being created, each in its documented shape."""
    for key in ("contract-batch-old", "contract-batch-other"):  # single calls' keys
        api.post_order(key=key)
    orders = [
        batch_order("contract-batch-new"),
        batch_order("contract-batch-old"),
        "not an object",
        batch_order("contract-batch-bad", amount=-5),
        batch_order("contract-batch-other", amount=5),
    ]
    expected = [202, 200, 400, 422, 422]
    # On SQLite a transaction of the test would lock out the web process's writes.
    held = connection.vendor == "postgresql"
    with transaction.atomic() if held else contextlib.nullcontext():
        if held:
            held_order(key="contract-batch-held")
            orders.append(batch_order("contract-batch-held"))
            expected.append(409)
        response = contract.check("post", BATCH, api.call("POST", BATCH, json={"orders": orders}))
        if held:
            transaction.set_rollback(True)

    assert response.status_code == 207
    assert [result["status"] for result in response.json()["results"]] == expected
    assert response.json()["results"][4]["error"]["code"] == "idempotency_key_reused"
    assert "tok_visa" not in response.text


def test_a_refused_batch_answers_as_documented(api, contract):
    json_type = {"Content-Type": "application/json"}
    answers = {
        "401": api.call("POST", BATCH, token=None, json={"orders": [batch_order("k")]}),
        "415": api.call("POST", BATCH, data="orders", headers={"Content-Type": "text/plain"}),
        "413": api.call("POST", BATCH, data=b" " * (BATCH_MAX_BODY_BYTES + 1), headers=json_type),
        "400": api.call("POST", BATCH, data=b"[1, 2]", headers=json_type),
        "422": api.call("POST", BATCH, json={"orders": []}),
    }
    for code, response in answers.items():
        contract.check("post", BATCH, response)
        assert str(response.status_code) == code, response.text


# --- the schema and its page ----------------------------------------------------------------


class Assets(HTMLParser):
    """Every src and href of a page."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_the_schema_and_its_page_are_public_and_self_contained(web, contract):
    """Both answer without a token; the page's scripts and styles all come from dualsend
    itself (no CDN), and each of them is served."""
    schema = contract.check("get", SCHEMA, requests.get(f"{web.url}{SCHEMA}", timeout=10))
    page = contract.check("get", DOCS, requests.get(f"{web.url}{DOCS}", timeout=10))
    assets = Assets()
    assets.feed(page.text)

    assert schema.json() == contract.document
    assert page.headers["Content-Type"].startswith("text/html")
    assert any(url.endswith("swagger-ui-bundle.js") for url in assets.urls)
    assert all(url.startswith("/") and not url.startswith("//") for url in assets.urls)
    for url in assets.urls:
        assert requests.get(f"{web.url}{url}", timeout=10).status_code == 200, url


# --- answers that need a fault: Django's test client, the full middleware -------------------


def every_call(client, token=TOKEN):
    """(method, path template, answer) of each operation with a token, valid requests."""
    headers = {"Authorization": f"Bearer {token}"}
    order_id = uuid.uuid4()
    batch = json.dumps({"orders": [batch_order("fault-1")]})
    return [
        (
            "post",
            ORDERS,
            client.post(ORDERS, json.dumps(order_body()), "application/json", headers=headers),
        ),
        ("get", ORDERS, client.get(ORDERS, headers=headers)),
        ("get", DETAIL, client.get(f"{ORDERS}/{order_id}", headers=headers)),
        ("post", BATCH, client.post(BATCH, batch, "application/json", headers=headers)),
    ]


@pytest.fixture
def in_process(transactional_db, settings, contract):
    """Django's test client's world: the tests' tokens, Redis keys of this test's own."""
    settings.DUALSEND_API_CLIENTS = parse_api_clients(f"{TOKEN},{OTHER_TOKEN}")
    with own_redis_keys(settings, "openapi"):
        yield settings


def test_a_client_over_its_rate_gets_429_on_every_call(client, in_process, contract):
    """One request fills a rate of 1/minute: every call then answers 429 with Retry-After."""
    in_process.DUALSEND_CLIENT_RATE_LIMIT = "1/minute"
    assert client.get(ORDERS, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200

    for method, template, response in every_call(client):
        contract.check(method, template, response, path=response.wsgi_request.path)
        assert response.status_code == 429, response.content


def test_an_unnamed_fault_is_500_on_every_call(client, in_process, contract, monkeypatch):
    """A fault we cannot name (here, in the rate check every call makes) is 500
    internal_error in the one error shape, never a page or a traceback."""

    def broken(*args, **kwargs):
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr("dualsend_app.api.client_limits.check_rate", broken)
    for method, template, response in every_call(client):
        contract.check(method, template, response, path=response.wsgi_request.path)
        assert response.status_code == 500, response.content
        assert b"a bug of ours" not in response.content


def test_the_database_down_is_503_on_every_call(client, in_process, contract, monkeypatch):
    """Every statement fails as a database that went away fails: 503 with Retry-After."""

    def unreachable(*args, **kwargs):
        raise OperationalError("connection to server at 127.0.0.1 failed")

    # Undone before the test database is flushed, which needs the database.
    with monkeypatch.context() as patch:
        patch.setattr("django.db.backends.utils.CursorWrapper.execute", unreachable)
        answers = every_call(client)
    for method, template, response in answers:
        contract.check(method, template, response, path=response.wsgi_request.path)
        assert response.status_code == 503, response.content
