"""One client cannot starve the others: its own inbound rate, and a cap on ?wait holders.

The rate limit lives in the tests' real Redis, under a key prefix of each test's own
(removed afterwards), so tests never see each other's counts. "Another web process" is
another Python process started with `subprocess`, talking to the same Redis. The chord is
dispatched on commit: `dispatch_order` is a recording fake here, as in tests/test_api.py.
"""

import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest
from django.db import connections
from django.test import Client

from dualsend_app.api import client_limits
from dualsend_app.models import Order
from project.api_clients import parse_api_clients
from tests import environment
from tests.helpers import order_body, own_redis_keys, wait_until
from tests.processes import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "limited-token"
OTHER_TOKEN = "unaffected-token"
RATE = "3/minute"  # a minute: nothing leaves the window while a test runs


@pytest.fixture(autouse=True)
def limit_settings(settings):
    """Two named clients, a tiny rate, Redis keys of this test's own."""
    settings.DUALSEND_API_CLIENTS = parse_api_clients(f"shop:{TOKEN},other:{OTHER_TOKEN}")
    settings.DUALSEND_CLIENT_RATE_LIMIT = RATE
    settings.DUALSEND_MAX_WAITERS = 8
    settings.DUALSEND_MAX_WAIT_SECONDS = 30.0
    with own_redis_keys(settings, "client-limits"):
        yield settings


@pytest.fixture(autouse=True)
def dispatched(monkeypatch):
    """Nothing goes to a broker: the order ids `dispatch_order` would have sent."""
    calls = []

    def fake_dispatch_order(order_id, sends=None):
        calls.append(str(order_id))
        return True

    monkeypatch.setattr("dualsend_app.enqueue.dispatch_order", fake_dispatch_order)
    return calls


def post(client, token=TOKEN, body=None, content_type="application/json"):
    raw = json.dumps(order_body()) if body is None else body
    return client.post(
        "/api/orders",
        data=raw,
        content_type=content_type,
        headers={"Authorization": f"Bearer {token}"},
    )


def get(client, order_id, token=TOKEN, query=""):
    return client.get(
        f"/api/orders/{order_id}{query}", headers={"Authorization": f"Bearer {token}"}
    )


def use_up_the_rate(client, token=TOKEN):
    for _ in range(3):
        assert post(client, token).status_code == 202


# --- the per-client rate ---------------------------------------------------------------


def test_a_client_over_its_rate_gets_429_with_retry_after(client):
    """Past DUALSEND_CLIENT_RATE_LIMIT: 429 `rate_limited`, Retry-After in whole seconds."""
    use_up_the_rate(client)

    response = post(client)

    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert error["message"]
    retry_after = response["Retry-After"]
    assert retry_after.isdigit()
    assert 1 <= int(retry_after) <= 60
    assert response["X-Request-ID"]
    assert Order.objects.count() == 3


def test_another_client_is_unaffected_by_a_client_over_its_rate(client):
    """One client refused with 429 takes nothing from another: it still creates and reads."""
    use_up_the_rate(client)
    assert post(client).status_code == 429

    created = post(client, OTHER_TOKEN)

    assert created.status_code == 202
    assert get(client, created.json()["id"], OTHER_TOKEN).status_code == 200


def test_reads_count_against_the_rate_too(client):
    """GET is a request like any other: a client over its rate gets 429 on GET as well."""
    order_id = post(client).json()["id"]
    assert get(client, order_id).status_code == 200
    assert get(client, order_id).status_code == 200

    response = get(client, order_id)

    assert response.status_code == 429
    assert response["Retry-After"]


def test_the_rate_answers_right_after_the_token(client):
    """Over its rate, a client's broken request is 429, not 415 or 400; a bad token is 401."""
    use_up_the_rate(client)

    assert post(client, body="{broken").status_code == 429
    assert post(client, content_type="text/plain").status_code == 429
    assert post(client, token="wrong-token").status_code == 401


def test_requests_with_a_wrong_token_take_nothing_from_any_client(client):
    """A 401 is answered before the rate is counted: it uses no client's budget."""
    for _ in range(5):
        assert post(client, token="wrong-token").status_code == 401

    use_up_the_rate(client)


def test_the_rate_is_shared_by_every_web_process(client, limit_settings, tmp_path):
    """Requests counted by another process (same Redis) use up the same client's rate."""
    other_process = (
        "import django; django.setup()\n"
        "from dualsend_app.api import client_limits\n"
        "for _ in range(3):\n"
        "    client_limits.check_rate('shop')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", other_process],
        cwd=ROOT,
        env=os.environ
        | {
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'other.sqlite3'}",
            "REDIS_URL": environment.REDIS_URL,
            "DUALSEND_RESILIENCE_KEY_PREFIX": limit_settings.DUALSEND_RESILIENCE_KEY_PREFIX,
            "DUALSEND_CLIENT_RATE_LIMIT": RATE,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    assert post(client).status_code == 429
    assert post(client, OTHER_TOKEN).status_code == 202


def test_with_redis_unreachable_requests_go_ahead_with_one_warning(
    client, limit_settings, caplog, monkeypatch
):
    """Redis down: fail open (202, never 500), and one warning, not one per request."""
    limit_settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    monkeypatch.setattr(client_limits.unreachable_warnings, "last", float("-inf"))
    caplog.set_level(logging.WARNING, logger="dualsend_app.api.client_limits")

    statuses = [post(client).status_code for _ in range(5)]

    assert statuses == [202] * 5
    warnings = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(warnings) == 1
    assert TOKEN not in caplog.text


# --- the cap on ?wait holders ------------------------------------------------------------


def test_past_the_cap_a_wait_is_answered_at_once_as_the_order_stands(client, limit_settings):
    """With DUALSEND_MAX_WAITERS holders waiting, one more ?wait answers 200 at once."""
    limit_settings.DUALSEND_CLIENT_RATE_LIMIT = "100/second"
    limit_settings.DUALSEND_MAX_WAITERS = 1
    order_id = post(client).json()["id"]
    held = []

    def hold_the_only_slot():
        try:
            held.append(get(Client(), order_id, query="?wait=3"))
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_only_slot)
    holder.start()
    wait_until(lambda: client_limits.wait_slots.held == 1, timeout=5, what="a holder")

    started = time.monotonic()
    response = get(client, order_id, query="?wait=3")
    elapsed = time.monotonic() - started
    holder.join()

    assert response.status_code == 200
    assert response.json()["status"] == Order.Status.PENDING
    assert elapsed < 1.5
    assert held[0].status_code == 200
    assert client_limits.wait_slots.held == 0


def test_a_wait_after_the_holders_left_waits_again(client, limit_settings):
    """Slots are given back: once the holder answered, the next ?wait waits."""
    limit_settings.DUALSEND_CLIENT_RATE_LIMIT = "100/second"
    limit_settings.DUALSEND_MAX_WAITERS = 1
    order_id = post(client).json()["id"]
    assert get(client, order_id, query="?wait=0.2").status_code == 200

    started = time.monotonic()
    get(client, order_id, query="?wait=0.5")

    assert time.monotonic() - started >= 0.4


def test_a_cap_of_zero_answers_every_wait_at_once(client, limit_settings):
    """DUALSEND_MAX_WAITERS=0 turns long polls off: ?wait answers as the order stands."""
    limit_settings.DUALSEND_MAX_WAITERS = 0
    order_id = post(client).json()["id"]

    started = time.monotonic()
    response = get(client, order_id, query="?wait=5")

    assert response.status_code == 200
    assert response.json()["status"] == Order.Status.PENDING
    assert time.monotonic() - started < 2
