"""GET /healthz and GET /readyz (issue 9, item 5).

`/healthz` answers whenever the process does, asking nothing of anyone. `/readyz` answers
200 when the database and the broker answer, and 503 with Retry-After naming the one that
did not, within its short timeout, with no secret in the answer. Neither takes a token,
counts against a client's rate or is redirected to https; only GET and HEAD.

The answers' shapes are checked with Django's test client; the outages on real processes:
gunicorn with production settings (DJANGO_DEBUG off) on a PostgreSQL server of the test's
own, which the test stops and starts again, and on the broker through the proxy the tests
cut.
"""

import contextlib
import os
import secrets
import threading
import urllib.parse

import kombu.exceptions
import pytest
import requests

from devstack.chaos.postgres import PostgresError, PrivatePostgres, binary_dir
from dualsend_app.api import health
from tests.helpers import API_TOKEN, wait_until
from tests.processes import Gunicorn

RETRY_AFTER = "2"
READY = {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}
# The private server's password: trust authentication ignores it, the answers must not show it.
DATABASE_PASSWORD = "db-secret-do-not-show"


def assert_not_ready(response, document, *, failed):
    """503, Retry-After, no-store, and exactly the `failed` checks not ok."""
    assert response.status_code == 503, document
    assert response.headers["Retry-After"] == RETRY_AFTER
    assert response.headers["Cache-Control"] == "no-store"
    assert document["status"] == "not_ready"
    assert set(document["checks"]) == {"database", "broker"}
    not_ok = {name for name, result in document["checks"].items() if result != "ok"}
    assert not_ok == {failed}, document


# --- the answers, through Django's test client ------------------------------------------


def test_healthz_answers_without_a_token_and_touches_no_database(client):
    """No `django_db` mark here: a query would fail the request. No token needed."""
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_readyz_answers_ready_when_the_database_and_the_broker_answer(client):
    response = client.get("/readyz")

    assert response.status_code == 200, response.content
    assert response.json() == READY
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_readyz_names_the_broker_when_it_is_unreachable(client, broker_proxy):
    broker_proxy.cut()

    response = client.get("/readyz")

    assert_not_ready(response, response.json(), failed="broker")


@pytest.mark.django_db
def test_a_check_that_hangs_is_answered_as_late_within_the_timeout(client, settings, monkeypatch):
    """A database that never answers: the probe does not wait for it past
    DUALSEND_READY_TIMEOUT_SECONDS."""
    settings.DUALSEND_READY_TIMEOUT_SECONDS = 0.2
    released = threading.Event()
    monkeypatch.setattr(health, "check_database", lambda timeout: released.wait(30))
    try:
        response = client.get("/readyz")
    finally:
        released.set()

    assert_not_ready(response, response.json(), failed="database")
    assert response.json()["checks"]["database"] == "no answer within 0.2 s"


@pytest.mark.django_db
def test_a_failed_check_shows_no_exception_text_in_the_answer_or_the_log(
    client, monkeypatch, caplog
):
    """A driver's message may hold a URL with its password: the answer and the log name the
    exception's type only."""
    secret_url = "amqp://dualsend:broker-password-1234@rabbit.internal:5672//"

    def refuse(timeout):
        raise kombu.exceptions.OperationalError(f"cannot connect to {secret_url}")

    monkeypatch.setattr(health, "check_broker", refuse)

    response = client.get("/readyz")

    assert_not_ready(response, response.json(), failed="broker")
    assert response.json()["checks"]["broker"] == "failed (OperationalError)"
    assert "broker-password-1234" not in response.content.decode()
    assert "readyz: broker not ready" in caplog.text
    assert "broker-password-1234" not in caplog.text


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_only_get_and_head_are_allowed(client, path, method):
    response = getattr(client, method)(path)

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_head_answers_like_get_without_a_body(client, path):
    response = client.head(path)

    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_take_no_token_and_no_client_rate(client, settings, path):
    """A wrong token is not refused, and a client far over its rate is still answered."""
    settings.DUALSEND_CLIENT_RATE_LIMIT = "1/hour"
    answers = [
        client.get(path).status_code,
        client.get(path, headers={"Authorization": "Bearer not-a-token"}).status_code,
        client.get(path, headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code,
        client.get(path, headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code,
    ]

    assert answers == [200, 200, 200, 200]


# --- the real processes: gunicorn in production on a PostgreSQL the test stops ------------


class StoppablePostgres:
    """A PostgreSQL server of this module's own (initdb, devstack/chaos/postgres.py),
    started and stopped with pg_ctl (as the `postgres` user when the tests run as root)."""

    def __init__(self) -> None:
        self.server = PrivatePostgres.create()

    def url(self) -> str:
        """The server's `postgres` database, with a password in the URL."""
        plain = urllib.parse.urlsplit(self.server.url("postgres"))
        netloc = plain.netloc.replace("@", f":{DATABASE_PASSWORD}@", 1)
        return plain._replace(netloc=netloc).geturl()

    def start(self) -> None:
        server = self.server
        options = f"-p {server.port} -k {server.root} -c listen_addresses=127.0.0.1"
        server.run_binary(
            "pg_ctl", "start", "--pgdata", str(server.data_dir), "--wait",
            "--log", str(server.root / "server.log"), "-o", options,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self.server.run_binary(
            "pg_ctl", "stop", "--pgdata", str(self.server.data_dir), "--mode", mode, "--wait"
        )

    def remove(self) -> None:
        with contextlib.suppress(PostgresError):  # already stopped
            self.stop(mode="immediate")
        self.server.remove()


@pytest.fixture(scope="module")
def postgres():
    if binary_dir() is None:
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    server = StoppablePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


class ProductionWeb(Gunicorn):
    """gunicorn as the README runs it, with DJANGO_DEBUG off, on `database_url`; its broker
    is the test session's, through the proxy the tests cut."""

    def __init__(self, database_url: str) -> None:
        env = os.environ | {
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": database_url,
        }
        super().__init__("web-health", env)

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=10, allow_redirects=False)

    def wait_ready(self) -> None:
        wait_until(lambda: self.get("/readyz").status_code == 200, 30, "/readyz answering 200")


@pytest.fixture(scope="module")
def web(postgres):
    web = ProductionWeb(postgres.url())
    yield web
    web.stop()


@pytest.mark.integration
def test_production_answers_the_probes_over_plain_http(web):
    """DJANGO_DEBUG off redirects http:// to https://, except the probes."""
    web.wait_ready()

    redirected = web.get("/api/orders/none")
    healthz, readyz = web.get("/healthz"), web.get("/readyz")

    assert redirected.status_code == 301
    assert redirected.headers["Location"].startswith("https://")
    assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
    assert (readyz.status_code, readyz.json()) == (200, READY)


@pytest.mark.integration
def test_readyz_answers_503_with_the_database_stopped_and_200_once_it_is_back(web, postgres):
    """PostgreSQL stopped (pg_ctl stop): /readyz 503 naming the database, nothing secret;
    /healthz still 200. Started again: /readyz 200."""
    web.wait_ready()

    postgres.stop()
    try:
        stopped = web.get("/readyz")
        alive = web.get("/healthz")
    finally:
        postgres.start()

    assert_not_ready(stopped, stopped.json(), failed="database")
    assert DATABASE_PASSWORD not in stopped.text
    assert alive.status_code == 200
    web.wait_ready()
    assert web.get("/readyz").json() == READY


@pytest.mark.integration
def test_readyz_answers_503_naming_the_broker_when_it_is_cut(web, broker_proxy):
    web.wait_ready()

    broker_proxy.cut()
    cut = web.get("/readyz")
    alive = web.get("/healthz")
    broker_proxy.restore()

    assert_not_ready(cut, cut.json(), failed="broker")
    assert alive.status_code == 200
    web.wait_ready()
