"""GET /api/orders: the calling client's orders, newest first, filtered, a page at a time
(dualsend_app/api/listing.py).

Through Django's test client and the full middleware, on orders saved with the ORM: the
list only reads, so no worker is needed. tests/test_openapi.py runs it on gunicorn.
"""

import datetime
import urllib.parse
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dualsend_app.api import listing
from dualsend_app.models import Order
from project.api_clients import parse_api_clients
from tests.factories import create_order
from tests.helpers import order_body, own_redis_keys

pytestmark = pytest.mark.django_db

TOKEN, OTHER_TOKEN = "test-token", "other-test-token"
CLIENT, OTHER_CLIENT = (client.id for client in parse_api_clients(f"{TOKEN},{OTHER_TOKEN}"))
ORDERS_URL = "/api/orders"
T0 = datetime.datetime(2025, 1, 31, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture(autouse=True)
def api_settings(settings):
    """Two known tokens and a rate no test here reaches, its keys in Redis of this test's own."""
    settings.DUALSEND_API_CLIENTS = parse_api_clients(f"{TOKEN},{OTHER_TOKEN}")
    settings.DUALSEND_CLIENT_RATE_LIMIT = "1000/second"
    with own_redis_keys(settings, "order-list"):
        yield settings


def orders_at(*moments, client=CLIENT, status=Order.Status.PENDING):
    """Saved orders (no sends) created at `moments`, in one INSERT; their ids as strings."""
    orders = Order.objects.bulk_create(
        Order(
            client=client,
            request_fingerprint="f" * 64,
            payload=order_body(),
            correlation_id=f"list-{index}",
            created_at=moment,
            status=status,
        )
        for index, moment in enumerate(moments)
    )
    return [str(order.pk) for order in orders]


def seconds(*offsets):
    return [T0 + datetime.timedelta(seconds=offset) for offset in offsets]


def newest_first(ids_and_moments):
    """Ids sorted as the list must show them: created_at, then id, both descending."""
    return [
        order_id
        for order_id, _ in sorted(
            ids_and_moments, key=lambda pair: (pair[1], uuid.UUID(pair[0])), reverse=True
        )
    ]


def list_orders(client, query="", *, token=TOKEN):
    url = query if query.startswith(ORDERS_URL) else f"{ORDERS_URL}{query}"
    return client.get(url, headers={"Authorization": f"Bearer {token}"})


def page(client, query="", *, token=TOKEN):
    response = list_orders(client, query, token=token)
    assert response.status_code == 200, response.content
    document = response.json()
    return [order["id"] for order in document["results"]], document["next"]


def walk(client, query="", *, token=TOKEN):
    """Every id over every page, following `next`; and the number of pages."""
    ids, pages, url = [], 0, f"{ORDERS_URL}{query}"
    while url:
        found, url = page(client, url, token=token)
        ids += found
        pages += 1
    return ids, pages


def invalid_fields(response):
    assert response.status_code == 422, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_fields"
    return error["fields"]


def cursor_of(next_url):
    return urllib.parse.parse_qs(urllib.parse.urlsplit(next_url).query)["cursor"][0]


# --- scoping -------------------------------------------------------------------------------


def test_a_client_lists_its_own_orders_only(client):
    """Each token sees the orders it created and none of the other client's."""
    mine = orders_at(*seconds(1, 2, 3))
    theirs = orders_at(*seconds(4, 5), client=OTHER_CLIENT)

    assert sorted(page(client)[0]) == sorted(mine)
    assert sorted(page(client, token=OTHER_TOKEN)[0]) == sorted(theirs)


def test_a_cursor_made_for_one_client_shows_another_nothing_of_it(client):
    """B presenting A's next link gets 422 naming `cursor`, and no order of A's: the cursor
    grants nothing, whatever it holds."""
    mine = orders_at(*seconds(1, 2, 3))
    orders_at(*seconds(0), client=OTHER_CLIENT)
    _, next_url = page(client, "?limit=1")

    response = list_orders(client, next_url, token=OTHER_TOKEN)

    assert set(invalid_fields(response)) == {"cursor"}
    assert not any(order_id in response.content.decode() for order_id in mine)


def test_without_a_valid_token_the_list_is_401(client):
    orders_at(*seconds(1))

    response = list_orders(client, token="not-a-token")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


# --- order and representation --------------------------------------------------------------


def test_orders_come_newest_first_and_equal_instants_by_id(client):
    """created_at descending; orders of one instant by id descending, the cursor's order."""
    moments = seconds(5, 1, 3, 3, 3, 9)
    ids = orders_at(*moments)

    assert page(client)[0] == newest_first(zip(ids, moments, strict=True))


def test_each_order_is_shown_as_its_own_get_shows_it_with_no_secret(client):
    """An item of the list is exactly GET /api/orders/<id>'s answer: sends included,
    payment_source masked, no token anywhere."""
    order = create_order(client=CLIENT, payload=order_body(payment_source="tok_visa_4242"))

    response = list_orders(client)
    detail = client.get(f"{ORDERS_URL}/{order.pk}", headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.json()["results"] == [detail.json()]
    assert len(detail.json()["sends"]) == 2
    assert response.json()["results"][0]["payload"]["payment_source"] == "••••4242"
    body = response.content.decode()
    assert "tok_visa_4242" not in body and TOKEN not in body


# --- filters -------------------------------------------------------------------------------


def test_status_filters_one_status_or_several(client):
    completed = orders_at(*seconds(1, 2), status=Order.Status.COMPLETED)
    failed = orders_at(*seconds(3), status=Order.Status.FAILED)
    orders_at(*seconds(4), status=Order.Status.PENDING)

    assert sorted(page(client, "?status=completed")[0]) == sorted(completed)
    assert sorted(page(client, "?status=completed&status=failed")[0]) == sorted(completed + failed)


@pytest.mark.parametrize("query", ["?status=done", "?status=", "?status=completed&status=Failed"])
def test_an_unknown_status_is_422_naming_status(client, query):
    fields = invalid_fields(list_orders(client, query))

    assert set(fields) == {"status"}
    assert "completed" in fields["status"]  # the message lists the allowed values


def test_created_after_is_inclusive_and_created_before_exclusive(client):
    """[created_after, created_before): windows side by side neither overlap nor leave a gap."""
    ids = orders_at(*seconds(0, 10, 20, 30))
    at_10 = urllib.parse.quote((T0 + datetime.timedelta(seconds=10)).isoformat())
    at_30 = urllib.parse.quote((T0 + datetime.timedelta(seconds=30)).isoformat())

    assert page(client, f"?created_after={at_10}&created_before={at_30}")[0] == [ids[2], ids[1]]
    assert page(client, f"?created_before={at_10}")[0] == [ids[0]]
    assert page(client, "?created_after=2025-01-31T12:00:30Z")[0] == [ids[3]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?created_after=yesterday", "created_after"),
        ("?created_after=2025-01-31T12:00:00", "created_after"),  # no UTC offset
        ("?created_before=2025-01-31", "created_before"),  # a date: no time, no offset
        ("?created_before=2025-01-31T12:00:00 01:00", "created_before"),  # + sent unencoded
        (
            "?created_after=2025-01-31T12:00:00Z&created_before=2025-01-31T11:00:00Z",
            "created_before",
        ),
    ],
)
def test_a_bad_date_or_range_is_422_naming_the_parameter(client, query, field):
    assert set(invalid_fields(list_orders(client, query))) == {field}


# --- pages ---------------------------------------------------------------------------------


def test_a_page_holds_50_by_default_and_200_at_most(client):
    orders_at(*seconds(*range(201)))

    default, default_next = page(client)
    largest, largest_next = page(client, "?limit=200")
    rest, rest_next = page(client, largest_next)

    assert len(default) == listing.DEFAULT_LIMIT == 50 and default_next is not None
    assert len(largest) == listing.MAX_LIMIT == 200 and largest_next is not None
    assert len(rest) == 1 and rest_next is None


@pytest.mark.parametrize("limit", ["201", "0", "-1", "ten", "1.5", "", "²"])
def test_a_limit_outside_1_to_200_is_422_naming_limit(client, limit):
    fields = invalid_fields(list_orders(client, f"?limit={urllib.parse.quote(limit)}"))

    assert fields == {"limit": "must be an integer from 1 to 200"}


def test_walking_next_links_shows_every_order_once_even_with_equal_instants(client):
    """Pages of 4 over 23 matching orders, most sharing their created_at with others, and
    orders of another status and another client in between: each shown once, newest first."""
    moments = seconds(*[offset // 5 for offset in range(23)])  # 5 orders per instant
    ids = orders_at(*moments, status=Order.Status.FAILED)
    orders_at(*moments[:7], status=Order.Status.COMPLETED)
    orders_at(*moments[:7], client=OTHER_CLIENT, status=Order.Status.FAILED)

    seen, pages = walk(client, "?status=failed&limit=4")

    assert seen == newest_first(zip(ids, moments, strict=True))
    assert pages == 6


def test_next_keeps_the_filters_and_limit(client):
    orders_at(*seconds(1, 2, 3), status=Order.Status.FAILED)
    query = "?status=failed&status=completed&created_after=2025-01-31T00:00:00Z&limit=2"

    _, next_url = page(client, query)

    assert next_url.startswith(f"{ORDERS_URL}?")
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(next_url).query)
    assert params["status"] == ["failed", "completed"]
    assert params["created_after"] == ["2025-01-31T00:00:00Z"]
    assert params["limit"] == ["2"]
    assert len(params["cursor"]) == 1


def test_the_last_page_and_an_empty_list_have_no_next(client):
    assert page(client) == ([], None)
    ids = orders_at(*seconds(1, 2))

    assert page(client, "?limit=2") == ([ids[1], ids[0]], None)


def test_an_order_created_during_a_walk_is_not_on_a_later_page(client):
    """A newer order belongs to a new first page: the walk neither repeats nor gains one."""
    ids = orders_at(*seconds(1, 2, 3, 4))
    first, next_url = page(client, "?limit=2")
    newer = orders_at(timezone.now())

    rest, _ = walk(client, next_url[len(ORDERS_URL) :])

    assert first + rest == [ids[3], ids[2], ids[1], ids[0]]
    assert page(client, "?limit=1")[0] == newer


@pytest.mark.parametrize("edit", ["flip", "garbage", "forged"])
def test_a_cursor_not_given_by_the_api_is_422_naming_cursor(client, edit):
    ids = orders_at(*seconds(1, 2, 3))
    _, next_url = page(client, "?limit=1")
    cursor = cursor_of(next_url)
    edited = {
        "flip": cursor[:-1] + ("A" if cursor[-1] != "A" else "B"),
        "garbage": "not-a-cursor",
        # Well formed, naming a real order, but not signed by this server.
        "forged": f"{ids[0]}:{ids[1]}",
    }[edit]

    response = list_orders(client, f"?limit=1&cursor={urllib.parse.quote(edited)}")

    assert set(invalid_fields(response)) == {"cursor"}


@pytest.mark.parametrize(
    ("query", "field"),
    [("?stauts=failed", "stauts"), ("?limit=1&limit=2", "limit"), ("?page=2", "page")],
)
def test_an_unknown_or_repeated_parameter_is_422_naming_it(client, query, field):
    """A misspelt filter never silently widens the list."""
    assert set(invalid_fields(list_orders(client, query))) == {field}


def test_a_page_is_one_query_for_the_orders_and_one_for_their_sends(client):
    """Keyset, not OFFSET, and no COUNT: the cost of a page does not grow with the pages
    before it."""
    for _ in range(3):
        create_order(client=CLIENT)
    _, next_url = page(client, "?limit=1")

    with CaptureQueriesContext(connection) as queries:
        found, _ = page(client, next_url)

    assert len(found) == 1
    statements = [query["sql"].upper() for query in queries.captured_queries]
    assert len(statements) == 2, statements
    assert all("COUNT(" not in sql and "OFFSET" not in sql for sql in statements)
    assert "LIMIT 2" in statements[0]
