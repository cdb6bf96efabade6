"""The live dashboard at /dashboard/ and its JSON, through Django's test client.

Staff only; every number is the database's (counts, success rates, percentiles on known
durations, both ways of computing them); the breakers read from Redis, "unknown" when it
is down; nothing secret in the JSON or the page. tests/test_dashboard_browser.py drives the
page in a real browser against the running stack.
"""

import dataclasses
import datetime
import json
import random

import pytest
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection
from django.urls import reverse
from django.utils import timezone

from devstack import free_port
from dualsend_app.dashboard import stats
from dualsend_app.models import Order, Send
from dualsend_app.partners.outcomes import AnswerOutcome
from dualsend_app.resilience import breaker
from tests.factories import create_attempt, create_order, create_send
from tests.helpers import order_body, own_redis_keys

pytestmark = pytest.mark.django_db

PAGE = reverse("dashboard:page")
DATA = reverse("dashboard:data")
ADMIN_LOGIN = reverse("admin:login")


@pytest.fixture(autouse=True)
def dashboard_redis(settings):
    """Breakers read from the tests' Redis, under keys of this test's own."""
    with own_redis_keys(settings, "dashboard") as prefix:
        yield prefix


@pytest.fixture
def staff_client(client):
    """A staff user who is not a superuser and holds no permission: staff is enough."""
    user = get_user_model().objects.create_user("watcher", is_staff=True)
    client.force_login(user)
    return client


def data(client, **params):
    response = client.get(DATA, params)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    return response.json()


def minutes_ago(minutes):
    return timezone.now() - datetime.timedelta(minutes=minutes)


def attempts_with_durations(operation, durations, *, outcome=AnswerOutcome.SUCCEEDED, **fields):
    """One send of `operation` with one attempt per duration, in that order; its order is
    from before the chart's hour, so that it does not count there."""
    send = create_send(create_order(header_sends=False, created_at=minutes_ago(90)), operation)
    fields.setdefault("started_at", minutes_ago(1))
    for number, duration in enumerate(durations, start=1):
        create_attempt(send, number, duration_ms=duration, outcome=outcome, **fields)
    return send


def calls_of(document, operation):
    (row,) = [row for row in document["calls"] if row["operation"] == operation]
    return row


# --- who may look -------------------------------------------------------------------------


@pytest.mark.parametrize("url", [PAGE, DATA])
def test_an_anonymous_visitor_is_sent_to_the_admin_login(client, url):
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"] == f"{ADMIN_LOGIN}?next={url}"


@pytest.mark.parametrize("url", [PAGE, DATA])
def test_a_user_who_is_not_staff_is_sent_to_the_admin_login(client, url):
    client.force_login(get_user_model().objects.create_user("customer", is_staff=False))

    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith(ADMIN_LOGIN)


@pytest.mark.parametrize("url", [PAGE, DATA])
def test_a_staff_user_without_any_permission_sees_it(staff_client, url):
    assert staff_client.get(url).status_code == 200


# --- orders by status ---------------------------------------------------------------------


def test_the_json_counts_the_last_hours_orders_by_minute_and_current_status(staff_client):
    """Orders of an hour ago and more are left out; each counts in its creation minute."""
    five_minutes_ago = minutes_ago(5)
    for status in (Order.Status.COMPLETED, Order.Status.COMPLETED, Order.Status.FAILED):
        create_order(status=status, created_at=five_minutes_ago)
    create_order(status=Order.Status.PENDING, created_at=minutes_ago(0.2))
    create_order(status=Order.Status.COMPLETED, created_at=minutes_ago(61))

    orders = data(staff_client)["orders"]

    assert orders["total"] == 4
    assert orders["by_status"] == {
        "completed": 2,
        "compensated": 0,
        "failed": 1,
        "needs_attention": 0,
        "compensating": 0,
        "dispatched": 0,
        "pending": 1,
    }
    assert len(orders["minutes"]) == stats.CHART_MINUTES
    bucket = five_minutes_ago.replace(second=0, microsecond=0).isoformat().replace("+00:00", "Z")
    (minute,) = [m for m in orders["minutes"] if m["start"] == bucket]
    assert minute["counts"]["completed"] == 2
    assert minute["counts"]["failed"] == 1
    assert sum(sum(m["counts"].values()) for m in orders["minutes"]) == 4


def test_the_first_view_is_rendered_whole_on_the_server(staff_client):
    """Without JavaScript the page already shows the counts, the chart's bars, the calls."""
    create_order(status=Order.Status.COMPLETED, created_at=minutes_ago(3))
    create_order(status=Order.Status.COMPLETED, created_at=minutes_ago(3))
    create_order(status=Order.Status.FAILED, created_at=minutes_ago(10))
    attempts_with_durations(Send.Operation.INVENTORY_RESERVE, [10, 30])

    page = staff_client.get(PAGE).content.decode()

    assert 'id="orders-total">3<' in page
    assert 'id="count-completed">2<' in page
    assert 'id="count-failed">1<' in page
    # One bar per minute and status that has orders: (3 minutes ago, completed), (10, failed).
    assert page.count('<rect class="status-') == 2
    assert 'data-operation="inventory.reserve"' in page
    assert "20.0 ms" in page  # the p50 of 10 and 30
    assert 'data-url="/dashboard/data.json"' in page
    assert "/static/dashboard/dashboard.js" in page


def test_the_pages_script_and_styles_are_served(staff_client):
    for path, kind in [
        ("dashboard/dashboard.js", "javascript"),
        ("dashboard/dashboard.css", "css"),
    ]:
        response = staff_client.get(f"/static/{path}")

        assert response.status_code == 200
        assert kind in response["Content-Type"]


# --- calls: success rate and latency ------------------------------------------------------

# Known data, its percentiles as PostgreSQL's percentile_cont (linear interpolation) has them.
KNOWN = {
    Send.Operation.INVENTORY_RESERVE: (
        [10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
        {"p50_ms": 55.0, "p95_ms": 95.5, "p99_ms": 99.1},
    ),
    # 101 values: every position falls exactly on a rank.
    Send.Operation.PAYMENT_CHARGE: (
        list(range(1, 102)),
        {"p50_ms": 51.0, "p95_ms": 96.0, "p99_ms": 100.0},
    ),
    Send.Operation.PAYMENT_REFUND: (
        [100, 300],
        {"p50_ms": 200.0, "p95_ms": 290.0, "p99_ms": 298.0},
    ),
    Send.Operation.INVENTORY_RELEASE: ([42], {"p50_ms": 42.0, "p95_ms": 42.0, "p99_ms": 42.0}),
}


@pytest.mark.parametrize("method", [stats.RANKS, stats.PERCENTILE_CONT])
def test_latency_percentiles_are_right_on_known_data(method):
    """Both ways of asking the database give percentile_cont's answers (rows inserted out
    of order: the database sorts them)."""
    if method == stats.PERCENTILE_CONT and connection.vendor != "postgresql":
        pytest.skip("percentile_cont is PostgreSQL's; run with DATABASE_URL on PostgreSQL")
    shuffled = random.Random(7)
    for operation, (durations, _) in KNOWN.items():
        attempts_with_durations(operation, shuffled.sample(durations, len(durations)))

    calls = stats.calls_by_operation(900, timezone.now(), method=method)

    for row in calls:
        durations, expected = KNOWN[row.operation]
        assert row.calls == len(durations)
        for name, value in expected.items():
            assert getattr(row, name) == pytest.approx(value), (row.operation, name)


def test_the_json_gives_each_operations_success_rate_and_percentiles(staff_client):
    """Success rate = attempts that succeeded / all attempts, whatever the others were."""
    attempts_with_durations(Send.Operation.INVENTORY_RESERVE, [10, 20, 30])
    attempts_with_durations(
        Send.Operation.INVENTORY_RESERVE, [500], outcome=AnswerOutcome.RETRY, status_code=503
    )
    attempts_with_durations(
        Send.Operation.PAYMENT_CHARGE, [40], outcome=AnswerOutcome.FAILED, status_code=402
    )

    document = data(staff_client)

    reserve = calls_of(document, "inventory.reserve")
    assert reserve == {
        "partner": "inventory",
        "operation": "inventory.reserve",
        "calls": 4,
        "succeeded": 3,
        "success_rate": 0.75,
        "p50_ms": 25.0,
        "p95_ms": 429.5,
        "p99_ms": 485.9,
    }
    charge = calls_of(document, "payment.charge")
    assert (charge["calls"], charge["success_rate"]) == (1, 0.0)
    refund = calls_of(document, "payment.refund")
    assert refund == {
        "partner": "payment",
        "operation": "payment.refund",
        "calls": 0,
        "succeeded": 0,
        "success_rate": None,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
    }
    expected_method = "percentile_cont" if connection.vendor == "postgresql" else "ranks"
    assert document["percentile_method"] == expected_method


def test_the_window_chooses_the_attempts_counted(staff_client):
    attempts_with_durations(Send.Operation.INVENTORY_RESERVE, [10], started_at=minutes_ago(1))
    attempts_with_durations(Send.Operation.INVENTORY_RESERVE, [20], started_at=minutes_ago(10))
    attempts_with_durations(Send.Operation.INVENTORY_RESERVE, [30], started_at=minutes_ago(120))

    counted = {
        seconds: calls_of(data(staff_client, window=seconds), "inventory.reserve")["calls"]
        for seconds in stats.WINDOWS
    }

    assert counted == {300: 1, 900: 2, 3600: 2, 86400: 3}
    assert data(staff_client, window=300)["window"]["label"] == "5 min"


@pytest.mark.parametrize("window", ["60", "soon", ""])
def test_a_window_not_offered_is_refused(staff_client, window):
    response = staff_client.get(DATA, {"window": window})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_window"


# --- breakers -----------------------------------------------------------------------------


def test_each_breaker_shows_its_state_in_redis(staff_client, settings):
    """An inventory breaker that opens after 2 failed calls, opened; payment's untouched."""
    inventory = settings.DUALSEND_PARTNERS["inventory"]
    tripping = dataclasses.replace(
        inventory.breaker, min_calls=2, failure_rate=0.5, open_seconds=60
    )
    settings.DUALSEND_PARTNERS = settings.DUALSEND_PARTNERS | {
        "inventory": dataclasses.replace(inventory, breaker=tripping)
    }
    for _ in range(2):
        breaker.record_call("inventory", health=breaker.CallHealth.FAILURE, slow=False)

    breakers = {b["partner"]: b for b in data(staff_client)["breakers"]}

    assert breakers["inventory"]["state"] == "open"
    assert breakers["inventory"]["open_until"] is not None
    assert breakers["payment"]["state"] == "closed"
    page = staff_client.get(PAGE).content.decode()
    assert 'class="breaker-state state-open"' in page


def test_redis_down_shows_the_breakers_as_unknown_and_nothing_fails(staff_client, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    create_order(status=Order.Status.COMPLETED)

    document = data(staff_client)
    page = staff_client.get(PAGE)

    assert {b["state"] for b in document["breakers"]} == {"unknown"}
    assert all("Redis unreachable" in b["detail"] for b in document["breakers"])
    assert document["orders"]["total"] == 1
    assert page.status_code == 200
    assert 'class="breaker-state state-unknown"' in page.content.decode()


def test_the_database_down_answers_503_with_retry_after(staff_client, monkeypatch):
    def unreachable(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(stats, "snapshot", unreachable)

    for url in (DATA, PAGE):
        response = staff_client.get(url)

        assert response.status_code == 503
        assert response["Retry-After"] == "2"


# --- failures and orders needing attention ------------------------------------------------


def test_the_latest_failed_calls_come_newest_first_linked_to_their_order(staff_client):
    """Newest by when the call started, whatever order the rows were written in."""
    send = create_send(create_order(header_sends=False), Send.Operation.PAYMENT_CHARGE)
    for number in random.Random(3).sample(range(1, 26), 25):
        create_attempt(
            send,
            number,
            started_at=minutes_ago(30 - number),
            duration_ms=50,
            outcome=AnswerOutcome.RETRY,
            status_code=503,
            error="unavailable",
            will_retry=True,
        )
    attempts_with_durations(Send.Operation.INVENTORY_RESERVE, [10, 10])  # succeeded

    failures = data(staff_client)["failures"]

    assert len(failures) == stats.LATEST_FAILURES
    assert [f["number"] for f in failures] == list(range(25, 5, -1))
    assert {f["operation"] for f in failures} == {"payment.charge"}
    order_page = reverse("admin:dualsend_app_order_change", args=[send.order_id])
    assert failures[0]["admin_url"] == order_page
    assert failures[0] | {"started_at": None, "attempt": None} == {
        "attempt": None,
        "order": str(send.order_id),
        "operation": "payment.charge",
        "number": 25,
        "started_at": None,
        "duration_ms": 50,
        "status_code": 503,
        "error": "unavailable",
        "outcome": "retry",
        "will_retry": True,
        "admin_url": order_page,
    }


def test_every_order_needing_attention_is_listed_with_its_admin_link(admin_client):
    waiting = [
        create_order(status=Order.Status.NEEDS_ATTENTION, created_at=minutes_ago(n))
        for n in (30, 1, 3000)
    ]
    create_order(status=Order.Status.COMPENSATED)

    listed = data(admin_client)["needs_attention"]

    assert listed["total"] == 3
    assert [o["id"] for o in listed["orders"]] == [str(waiting[i].id) for i in (1, 0, 2)]
    for order in listed["orders"]:
        assert admin_client.get(order["admin_url"]).status_code == 200
    assert admin_client.get(listed["admin_list_url"]).status_code == 200


def test_neither_the_json_nor_the_page_shows_a_card_token(staff_client):
    token = "tok_dashboard_secret_zqxv"
    order = create_order(
        header_sends=False,
        status=Order.Status.NEEDS_ATTENTION,
        payload=order_body(payment_source=token),
    )
    charge = create_send(order, Send.Operation.PAYMENT_CHARGE)
    assert token in charge.request_body  # the row does hold it
    create_attempt(charge, outcome=AnswerOutcome.FAILED, status_code=402, error="card_declined")

    document = json.dumps(data(staff_client))
    page = staff_client.get(PAGE).content.decode()

    assert str(order.id) in document
    for shown in (document, page):
        assert token not in shown
        assert "zqxv" not in shown  # nor its last characters
