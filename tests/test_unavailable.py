"""A bad day answers 503, never 500 (issue 7, item 4).

A dependency that is down, the database or the broker, or a process whose every pooled
database connection is in use, answers `503 service_unavailable` with `Retry-After` in the
usual error shape, naming the dependency and nothing more; and a client that retries with
the same Idempotency-Key gets its order exactly once. Only what we cannot name is a 500.

The database outage runs on real processes: gunicorn as the README runs it, reaching
PostgreSQL through a proxy this test cuts, and the session's worker settling the order.
"""

import json
import threading
import time
import urllib.parse

import kombu.exceptions
import psycopg.errors
import pytest
import redis
import requests
from django.db import OperationalError, connection, connections
from django.test import Client
from psycopg_pool import PoolTimeout

from dualsend_app.models import Order
from tests.helpers import API_TOKEN, new_request_id, order_body, wait_final
from tests.processes import Gunicorn, database_url
from tests.tcp_proxy import TcpProxy

ORDERS_URL = "/api/orders"
RETRY_AFTER = "2"


def post_order(client, *, key, request_id=None):
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Idempotency-Key": key}
    if request_id:
        headers["X-Request-ID"] = request_id
    return client.post(
        ORDERS_URL, data=json.dumps(order_body()), content_type="application/json", headers=headers
    )


def assert_service_unavailable(status, headers, document, *, naming):
    """503, Retry-After, and the one error shape naming the dependency: nothing else."""
    assert status == 503, document
    assert headers["Retry-After"] == RETRY_AFTER
    assert set(document) == {"error"}
    error = document["error"]
    assert set(error) == {"code", "message"}
    assert error["code"] == "service_unavailable"
    assert naming in error["message"] and error["message"].endswith("; retry shortly")


def in_a_thread(call):
    """`call()` in a thread of its own (a request thread of its own, with its own database
    connection, closed after); its result."""
    results = []

    def run():
        try:
            results.append(call())
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert results, "the request did not answer"
    return results[0]


@pytest.fixture
def dispatched(monkeypatch):
    """What would have been handed to the broker on commit: nothing leaves the process."""
    calls = []
    monkeypatch.setattr(
        "dualsend_app.enqueue.dispatch_order", lambda order_id, sends=None: calls.append(1)
    )
    return calls


# --- the database down, on real processes ----------------------------------------------


class Web(Gunicorn):
    """gunicorn with gthread, as the README's production layout runs it, whose way to the
    test database is `db_proxy`."""

    def __init__(self, env):
        super().__init__("web-unavailable", env)

    def post(self, key, request_id=None):
        headers = {"Authorization": f"Bearer {API_TOKEN}", "Idempotency-Key": key}
        if request_id:
            headers["X-Request-ID"] = request_id
        return requests.post(
            f"{self.url}{ORDERS_URL}", json=order_body(), headers=headers, timeout=30
        )

    def get(self, order_id):
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        return requests.get(f"{self.url}{ORDERS_URL}/{order_id}", headers=headers, timeout=30)


@pytest.fixture
def web(live, stack_env):
    """The web process on PostgreSQL through a proxy of its own (the worker's stays up);
    its pool waits 1 s for a connection before the request answers 503."""
    url = database_url()
    if url.startswith("sqlite"):
        pytest.skip("the database cannot go down under SQLite; run on PostgreSQL")
    parsed = urllib.parse.urlsplit(url)
    proxy = TcpProxy(parsed.hostname, parsed.port or 5432)
    credentials = parsed.netloc.rpartition("@")[0]
    proxied = parsed._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}").geturl()
    env, _ = stack_env
    web = Web(env | {"DATABASE_URL": proxied, "DATABASE_POOL_TIMEOUT": "1"})
    web.db_proxy = proxy
    yield web
    proxy.ensure_up()
    web.stop()


def retry_while_unavailable(call, timeout=30):
    """What a client does: on 503, wait Retry-After and send the same request again."""
    deadline = time.monotonic() + timeout
    while True:
        response = call()
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(float(response.headers["Retry-After"]))


@pytest.mark.integration
def test_database_down_post_and_get_answer_503_and_the_retry_creates_the_order_once(web, live):
    """PostgreSQL unreachable: POST and GET answer 503 with Retry-After within seconds; once
    it is back, the client's retry with the same key creates the order, exactly once, and
    it is reserved and charged once."""
    earlier = web.post(key=f"earlier-{new_request_id()}")
    assert earlier.status_code == 202, earlier.text
    key, request_id = f"key-{new_request_id()}", new_request_id()

    web.db_proxy.cut()
    started = time.monotonic()
    refused = web.post(key, request_id)
    unreadable = web.get(earlier.json()["id"])
    waited = time.monotonic() - started

    for response in (refused, unreadable):
        assert_service_unavailable(
            response.status_code, response.headers, response.json(), naming="the database"
        )
    assert refused.headers["X-Request-ID"] == request_id
    assert waited < 10  # each waited the pool's 1 s, and connecting is bounded too
    assert not Order.objects.filter(idempotency_key=key).exists()

    web.db_proxy.restore()
    created = retry_while_unavailable(lambda: web.post(key, request_id))
    replayed = web.post(key, request_id)

    assert created.status_code == 202, created.text
    assert replayed.status_code == 200 and replayed.json()["id"] == created.json()["id"]
    assert Order.objects.filter(idempotency_key=key).count() == 1
    order = wait_final(created.json()["id"], timeout=30)
    assert order.status == Order.Status.COMPLETED
    assert live.ledger(str(order.pk))["charged"] == 1
    assert live.ledger(str(order.pk))["reserved"] == 1


# --- every pooled connection in use ------------------------------------------------------


@pytest.fixture
def pool_of_one(transactional_db):
    """This process's pool shrunk to one connection, waited for 0.5 s at most."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no connection pool")
    options = connection.settings_dict["OPTIONS"]
    configured = options["pool"]
    connection.close()
    connection.close_pool()
    options["pool"] = configured | {"min_size": 1, "max_size": 1, "timeout": 0.5}
    yield
    connection.close()
    connection.close_pool()
    options["pool"] = configured


def test_a_saturated_pool_answers_503_and_the_retry_creates_the_order_once(pool_of_one, dispatched):
    """The only pooled connection is held by another thread: the request waits the pool's
    timeout, answers 503 (not 500) and writes nothing; once it is free, the same key
    creates the order, once."""
    assert not Order.objects.exists()  # this thread now holds the pool's one connection

    refused = in_a_thread(lambda: post_order(Client(), key="k-1"))

    assert_service_unavailable(refused.status_code, refused, refused.json(), naming="the database")
    assert not Order.objects.exists()

    connection.close()  # given back to the pool
    created = in_a_thread(lambda: post_order(Client(), key="k-1"))
    replayed = in_a_thread(lambda: post_order(Client(), key="k-1"))

    assert created.status_code == 202, created.content
    assert replayed.status_code == 200
    assert Order.objects.filter(idempotency_key="k-1").count() == 1
    assert len(dispatched) == 1


# --- what each dependency's error answers ----------------------------------------------


def raising(exc):
    def create_or_replay(**kwargs):
        raise exc

    return create_or_replay


def wrapped_database_error(cause):
    """A driver error as Django raises it: wrapped, the original kept as __cause__."""
    error = OperationalError(str(cause))
    error.__cause__ = cause
    return error


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("exc", "naming"),
    [
        (OperationalError("connection to server failed"), "the database is unreachable"),
        (
            wrapped_database_error(PoolTimeout("couldn't get a connection after 3.00 sec")),
            "the database is unreachable or every connection is busy",
        ),
        (
            wrapped_database_error(psycopg.errors.QueryCanceled("statement timeout")),
            "the database did not answer in time",
        ),
        (kombu.exceptions.OperationalError("Error 111 connecting"), "the broker is unreachable"),
        (redis.exceptions.TimeoutError("Timeout reading from socket"), "Redis is unreachable"),
        (redis.exceptions.ConnectionError("Error 111 connecting"), "Redis is unreachable"),
    ],
)
def test_a_dependency_that_is_down_answers_503_naming_it(client, monkeypatch, exc, naming):
    """Each dependency's own error answers 503 naming it, never the driver's text."""
    monkeypatch.setattr("dualsend_app.api.idempotency.create_or_replay", raising(exc))

    response = post_order(client, key="k-2")

    assert_service_unavailable(response.status_code, response, response.json(), naming=naming)
    assert str(exc) not in response.content.decode()
