"""POST /api/orders/batch: up to 100 orders, each answered as the single call would (207).

Against the real database and the tests' real Redis (the client rate). The chord is
dispatched on commit: here `dispatch_order` is a recording fake, except in the tests
marked `integration`, which run a real worker and the simulators and see the orders settle.
"""

import json
import threading

import pytest
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext

from dualsend_app.api import batch
from dualsend_app.models import Order, Send
from project.api_clients import parse_api_clients
from tests.helpers import (
    API_TOKEN,
    BATCH_URL,
    ORDER_FIELDS,
    batch_order,
    new_request_id,
    order_body,
    own_redis_keys,
    post_batch,
    wait_final,
)

pytestmark = pytest.mark.django_db(transaction=True)

OTHER_TOKEN = "other-test-token"
SOURCE = "pm_card_4242_secret_9f3k"


@pytest.fixture(autouse=True)
def api_settings(settings):
    """Two known tokens, the default limits, client-rate keys of this test's own."""
    settings.DUALSEND_API_CLIENTS = parse_api_clients(f"{API_TOKEN},{OTHER_TOKEN}")
    settings.DUALSEND_MAX_BODY_BYTES = 64 * 1024
    settings.DUALSEND_BATCH_MAX_BODY_BYTES = 2 * 1024 * 1024
    settings.DUALSEND_CLIENT_RATE_LIMIT = "1000/second"
    with own_redis_keys(settings, "batch"):
        yield settings


@pytest.fixture(autouse=True)
def dispatched(request, monkeypatch):
    """The order ids a batch handed to `dispatch_orders` (on commit), instead of a broker;
    the integration tests dispatch for real."""
    calls = []
    if request.node.get_closest_marker("integration") is None:
        monkeypatch.setattr(
            "dualsend_app.enqueue.dispatch_orders",
            lambda orders: calls.extend(str(order.pk) for order in orders),
        )
    return calls


def results_of(response):
    assert response.status_code == 207, response.content
    results = response.json()["results"]
    assert [result["index"] for result in results] == list(range(len(results)))
    return results


def assert_nothing_written(dispatched):
    assert Order.objects.count() == 0
    assert Send.objects.count() == 0
    assert dispatched == []


# --- the happy path ------------------------------------------------------------------------


def test_a_batch_answers_207_with_each_order_created_in_request_order(client, dispatched):
    """Each new order: 202, its order as GET shows it, its location; dispatched on commit."""
    orders = [batch_order(f"order-{n}", amount=100 + n) for n in (3, 1, 2)]

    results = results_of(post_batch(client, orders, request_id="batch-1"))

    assert [result["status"] for result in results] == [202, 202, 202]
    for result, sent in zip(results, orders, strict=True):
        order = Order.objects.get(pk=result["order"]["id"])
        assert set(result["order"]) == ORDER_FIELDS
        assert result["order"]["payload"]["amount"] == sent["amount"]
        assert result["location"] == result["order"]["url"] == order.get_absolute_url()
        assert order.idempotency_key == sent["idempotency_key"]
        assert order.correlation_id == f"batch-1.{result['index']}"
        assert len(result["order"]["sends"]) == 2
    assert Send.objects.count() == 6
    assert sorted(dispatched) == sorted(result["order"]["id"] for result in results)


def test_a_mixed_batch_is_answered_order_by_order(client, dispatched):
    """New, invalid, replayed, reused, not an object, keyless: each its single-call answer."""
    first = results_of(post_batch(client, [batch_order("old"), batch_order("old-2")]))
    old_id = first[0]["order"]["id"]
    dispatched.clear()

    results = results_of(
        post_batch(
            client,
            [
                batch_order("new"),
                batch_order("bad", amount=0, currency="dollars"),
                batch_order("old"),
                batch_order("old-2", amount=5),
                ["not", "an", "order"],
                order_body(),
                batch_order("new-2", currency="EUR"),
            ],
        )
    )

    assert [result["status"] for result in results] == [202, 422, 200, 422, 400, 422, 202]
    assert results[1]["error"] == {
        "code": "invalid_fields",
        "message": "some fields are invalid",
        "fields": {
            "amount": "must be a positive integer in minor units (at most 9007199254740991)",
            "currency": "must be 3 ASCII letters (an ISO 4217 code such as usd)",
        },
    }
    assert results[2]["order"]["id"] == old_id
    assert results[2]["location"] == f"/api/orders/{old_id}"
    assert results[3]["error"]["code"] == "idempotency_key_reused"
    assert "fields" not in results[3]["error"]
    assert results[4]["error"]["code"] == "invalid_json"
    assert set(results[5]["error"]["fields"]) == {"idempotency_key"}
    assert results[6]["order"]["payload"]["currency"] == "eur"
    assert Order.objects.count() == 4
    assert sorted(dispatched) == sorted([results[0]["order"]["id"], results[6]["order"]["id"]])


def test_the_same_batch_sent_again_replays_every_order(client, dispatched):
    """A client unsure whether its batch arrived sends it again: all 200, nothing new."""
    orders = [batch_order(f"order-{n}") for n in range(5)]
    created = results_of(post_batch(client, orders))
    dispatched.clear()

    replayed = results_of(post_batch(client, orders))

    assert [result["status"] for result in replayed] == [200] * 5
    assert [r["order"]["id"] for r in replayed] == [r["order"]["id"] for r in created]
    assert Order.objects.count() == 5
    assert dispatched == []


def test_an_order_of_the_single_call_is_replayed_by_its_key(client, dispatched):
    """A key first used with POST /api/orders is the same key in a batch, for this client."""
    single = client.post(
        "/api/orders",
        data=json.dumps(order_body(currency="USD")),
        content_type="application/json",
        headers={"Authorization": f"Bearer {API_TOKEN}", "Idempotency-Key": "from-single"},
    )
    assert single.status_code == 202

    replayed = results_of(post_batch(client, [batch_order("from-single")]))[0]
    reused = results_of(post_batch(client, [batch_order("from-single", amount=1)]))[0]

    assert (replayed["status"], replayed["order"]["id"]) == (200, single.json()["id"])
    assert (reused["status"], reused["error"]["code"]) == (422, "idempotency_key_reused")
    assert Order.objects.count() == 1


def test_the_same_key_twice_in_a_batch_refuses_the_later_ones(client, dispatched):
    """The first order with a key is taken; each later one is 422 naming idempotency_key."""
    orders = [
        batch_order("twice"),
        batch_order("other"),
        batch_order("twice"),
        batch_order("twice"),
    ]

    results = results_of(post_batch(client, orders))

    assert [result["status"] for result in results] == [202, 202, 422, 422]
    for result in results[2:]:
        assert result["error"]["code"] == "invalid_fields"
        assert result["error"]["fields"] == {
            "idempotency_key": "is already used by order 0 of this batch"
        }
    assert Order.objects.count() == 2


@pytest.mark.parametrize(
    "key",
    ["k" * 256, "", "   ", "tab\tkey", 42, None],
    ids=["long", "empty", "blank", "tab", "int", "null"],
)
def test_an_unusable_key_is_422_naming_it(client, dispatched, key):
    """The header's rules, for the field: 1 to 255 printable ASCII characters."""
    orders = [batch_order("fine"), order_body() | {"idempotency_key": key}]

    results = results_of(post_batch(client, orders))

    assert [result["status"] for result in results] == [202, 422]
    assert set(results[1]["error"]["fields"]) == {"idempotency_key"}
    assert Order.objects.count() == 1


def test_a_key_of_255_characters_is_accepted(client):
    assert results_of(post_batch(client, [batch_order("k" * 255)]))[0]["status"] == 202


def test_100_orders_are_accepted(client, dispatched):
    """The largest batch: 100 orders, one transaction, 100 dispatches."""
    results = results_of(post_batch(client, [batch_order(f"o-{n}") for n in range(100)]))

    assert {result["status"] for result in results} == {202}
    assert Order.objects.count() == 100
    assert len(dispatched) == 100


def test_concurrent_batches_sharing_keys_create_each_order_once(dispatched, monkeypatch):
    """Two batches with the same keys in opposite orders, at once: no deadlock, one order
    per key, and every answer for a key names that order (202, 200, or 409 retry)."""
    # Two web processes: one process writes its batches in turn.
    monkeypatch.setattr(batch, "_WRITING_TURNS", threading.BoundedSemaphore(2))
    keys = [f"shared-{n:02}" for n in range(20)]
    barrier = threading.Barrier(2)
    answers = [None, None]

    def send(slot, order_keys):
        try:
            barrier.wait(timeout=10)
            answers[slot] = post_batch(Client(), [batch_order(key) for key in order_keys])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=a) for a in enumerate((keys, keys[::-1]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert [response.status_code for response in answers] == [207, 207]
    assert Order.objects.count() == len(keys)
    by_key = dict(Order.objects.values_list("idempotency_key", "pk"))
    for response, order_keys in zip(answers, (keys, keys[::-1]), strict=True):
        for result, key in zip(results_of(response), order_keys, strict=True):
            assert result["status"] in {200, 202, 409}
            if result["status"] != 409:
                assert result["order"]["id"] == str(by_key[key])
    assert sorted(dispatched) == sorted(str(pk) for pk in by_key.values())


def test_a_batch_reads_its_keys_once_and_no_order_back(client, dispatched):
    """Five new orders: one look-up of the five keys, and the 202s made from the rows
    written (as the single call's 202), not read back; a replay is read as it stands."""
    with CaptureQueriesContext(connection) as new_orders:
        results = results_of(post_batch(client, [batch_order(f"new-{n}") for n in range(5)]))
    with CaptureQueriesContext(connection) as replays:
        replayed = results_of(post_batch(client, [batch_order("new-0"), batch_order("new-5")]))

    reads = [q["sql"] for q in new_orders.captured_queries if q["sql"].startswith("SELECT")]
    assert len(reads) == 1 and "idempotency_key" in reads[0]
    assert [result["order"]["status"] for result in results] == ["pending"] * 5
    assert all(len(result["order"]["sends"]) == 2 for result in results)
    assert [result["status"] for result in replayed] == [200, 202]
    assert replayed[0]["order"]["id"] == results[0]["order"]["id"]
    assert len(replayed[0]["order"]["sends"]) == 2
    reads = [q["sql"] for q in replays.captured_queries if q["sql"].startswith("SELECT")]
    assert len(reads) == 3  # the keys; the replayed order and its sends (prefetched)


def test_a_batch_waits_while_another_is_written_then_is_written(client, dispatched):
    """While this process writes a batch, the next one waits for its turn, then goes."""
    answers = []

    def send():
        try:
            answers.append(post_batch(Client(), [batch_order("after-turn")]))
        finally:
            connections.close_all()

    assert batch._WRITING_TURNS.acquire(timeout=5)  # a batch being written
    waiting = threading.Thread(target=send)
    try:
        waiting.start()
        waiting.join(timeout=1)
        assert answers == [] and Order.objects.count() == 0
    finally:
        batch._WRITING_TURNS.release()
    waiting.join(timeout=30)

    assert [result["status"] for result in results_of(answers[0])] == [202]
    assert Order.objects.count() == 1


def test_a_batch_whose_turn_does_not_come_is_503_and_writes_nothing(
    client, dispatched, monkeypatch
):
    monkeypatch.setattr(batch, "BATCH_TURN_WAIT_SECONDS", 0.2)
    assert batch._WRITING_TURNS.acquire(timeout=5)
    try:
        response = post_batch(client, [batch_order("no-turn")])
    finally:
        batch._WRITING_TURNS.release()

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert "busy writing other batches" in response.json()["error"]["message"]
    assert_nothing_written(dispatched)


# --- keys are per client ---------------------------------------------------------------


def test_another_client_cannot_replay_your_key_into_your_order(client, dispatched):
    """The same key and body from another token is that client's own new order."""
    mine = results_of(post_batch(client, [batch_order("shared")]))[0]

    theirs = results_of(post_batch(client, [batch_order("shared")], token=OTHER_TOKEN))[0]

    assert theirs["status"] == 202
    assert theirs["order"]["id"] != mine["order"]["id"]
    assert (
        Order.objects.get(pk=theirs["order"]["id"]).client
        != Order.objects.get(pk=mine["order"]["id"]).client
    )
    foreign = client.get(mine["location"], headers={"Authorization": f"Bearer {OTHER_TOKEN}"})
    assert foreign.status_code == 404
    again = results_of(post_batch(client, [batch_order("shared")]))[0]
    assert (again["status"], again["order"]["id"]) == (200, mine["order"]["id"])


# --- payment_source ------------------------------------------------------------------------


def test_the_payment_source_is_masked_in_created_and_replayed_orders(client):
    orders = [batch_order("masked", payment_source=SOURCE)]

    for response in (post_batch(client, orders), post_batch(client, orders)):
        result = results_of(response)[0]
        assert result["order"]["payload"]["payment_source"] == "••••9f3k"
        assert SOURCE not in response.content.decode()
    assert Order.objects.get().payload["payment_source"] == SOURCE


def test_an_invalid_payment_source_is_not_echoed(client):
    source = "tok_secret_with_newline\n"

    response = post_batch(client, [batch_order("nl", payment_source=source)])

    assert results_of(response)[0]["error"]["fields"] == {
        "payment_source": "must be a string of 1 to 255 printable characters"
    }
    assert "tok_secret" not in response.content.decode()


# --- whole-request checks: one answer for the batch, nothing written ----------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "is required: must be a list of 1 to 100 orders"),
        (
            {"orders": {"idempotency_key": "k"}},
            "is a JSON object; must be a list of 1 to 100 orders",
        ),
        ({"orders": None}, "is a JSON null; must be a list of 1 to 100 orders"),
        ({"orders": "o"}, "is a JSON string; must be a list of 1 to 100 orders"),
        ({"orders": []}, "is empty; must be a list of 1 to 100 orders"),
        (
            {"orders": [batch_order(f"o-{n}") for n in range(101)]},
            "holds 101 orders; must be a list of 1 to 100 orders",
        ),
    ],
    ids=["missing", "object", "null", "string", "empty", "101"],
)
def test_a_bad_orders_list_answers_422_for_the_whole_batch(client, dispatched, document, message):
    response = post_batch(client, None, raw=json.dumps(document))

    assert response.status_code == 422
    assert response.json()["error"]["fields"] == {"orders": message}
    assert_nothing_written(dispatched)


def test_another_top_level_field_answers_422_naming_it(client, dispatched):
    raw = json.dumps({"orders": [batch_order("k")], "priority": "high"})

    response = post_batch(client, None, raw=raw)

    assert response.status_code == 422
    assert response.json()["error"]["fields"] == {"priority": "is not an allowed field"}
    assert_nothing_written(dispatched)


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"token": None}, 401, "unauthorized"),
        ({"token": "wrong"}, 401, "unauthorized"),
        ({"content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"raw": b"{broken"}, 400, "invalid_json"),
        ({"raw": b'[{"idempotency_key": "k"}]'}, 400, "invalid_json"),
        ({"raw": b'{"orders": [], "orders": [1]}'}, 400, "invalid_json"),
    ],
    ids=["no-token", "wrong-token", "media-type", "broken-json", "not-an-object", "dup-key"],
)
def test_a_request_level_problem_answers_the_whole_batch(client, dispatched, kwargs, status, code):
    response = post_batch(client, [batch_order("k")], **kwargs)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response["X-Request-ID"]
    assert_nothing_written(dispatched)


def test_the_batch_has_its_own_body_limit(client, api_settings, dispatched):
    """Over DUALSEND_MAX_BODY_BYTES is fine; over DUALSEND_BATCH_MAX_BODY_BYTES is 413."""
    orders = [batch_order(f"o-{n}") for n in range(20)]
    size = len(json.dumps({"orders": orders}).encode())
    api_settings.DUALSEND_MAX_BODY_BYTES = size // 4
    api_settings.DUALSEND_BATCH_MAX_BODY_BYTES = size - 1

    too_large = post_batch(client, orders)

    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "payload_too_large"
    assert_nothing_written(dispatched)
    api_settings.DUALSEND_BATCH_MAX_BODY_BYTES = size
    assert {r["status"] for r in results_of(post_batch(client, orders))} == {202}


def test_the_checks_run_in_the_single_calls_order(client, api_settings):
    """Token before rate before media type before size before syntax before the list."""
    api_settings.DUALSEND_CLIENT_RATE_LIMIT = "1/minute"
    api_settings.DUALSEND_BATCH_MAX_BODY_BYTES = 10
    assert post_batch(client, [], token="wrong", content_type="text/plain").status_code == 401
    assert post_batch(client, [], content_type="text/plain").status_code == 415
    assert post_batch(client, [], content_type="text/plain").status_code == 429
    api_settings.DUALSEND_CLIENT_RATE_LIMIT = "1000/minute"
    assert post_batch(client, [], raw=b"{" * 50, content_type="text/plain").status_code == 415
    assert post_batch(client, [], raw=b"{" * 50).status_code == 413
    api_settings.DUALSEND_BATCH_MAX_BODY_BYTES = 1000
    assert post_batch(client, [], raw=b"{" * 50).status_code == 400
    assert post_batch(client, []).status_code == 422


def test_get_is_not_allowed(client):
    response = client.get(BATCH_URL, headers={"Authorization": f"Bearer {API_TOKEN}"})

    assert response.status_code == 405
    assert response["Allow"] == "POST"


# --- the client's rate counts every order ------------------------------------------------


def test_each_order_of_a_batch_counts_against_the_clients_rate(client, api_settings, dispatched):
    """At 5/minute: a batch of 3 fits; a second batch of 3 does not (429, nothing written)."""
    api_settings.DUALSEND_CLIENT_RATE_LIMIT = "5/minute"
    assert len(results_of(post_batch(client, [batch_order(f"a-{n}") for n in range(3)]))) == 3

    refused = post_batch(client, [batch_order(f"b-{n}") for n in range(3)])

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert Order.objects.count() == 3
    # The refused batch's request counted one, as any request does: one single order left.
    assert results_of(post_batch(client, [batch_order("c")]))[0]["status"] == 202
    assert post_batch(client, [batch_order("d")]).status_code == 429
    other = post_batch(client, [batch_order(f"e-{n}") for n in range(5)], token=OTHER_TOKEN)
    assert {result["status"] for result in results_of(other)} == {202}


def test_a_batch_larger_than_the_rate_allows_at_once_is_422(client, api_settings, dispatched):
    """Waiting would never let 6 orders through a 5/minute rate: 422 naming orders, not 429."""
    api_settings.DUALSEND_CLIENT_RATE_LIMIT = "5/minute"

    response = post_batch(client, [batch_order(f"o-{n}") for n in range(6)])

    assert response.status_code == 422
    assert response.json()["error"]["fields"] == {
        "orders": "holds 6 orders, more than this client's rate of 5/minute allows at once; "
        "send at most 5 per batch"
    }
    assert_nothing_written(dispatched)


# --- one transaction: the database refusing the Nth order writes nothing -----------------


@pytest.fixture
def refused_key():
    """A trigger that makes PostgreSQL refuse the insert of the order with a given key."""
    if connection.vendor != "postgresql":
        pytest.skip("the refusing trigger is PostgreSQL's; run on PostgreSQL")
    table = Order._meta.db_table
    state = {}

    def refuse(key, errcode):
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                CREATE OR REPLACE FUNCTION test_batch_refuse() RETURNS trigger AS $$
                BEGIN
                  IF NEW.idempotency_key = '{key}' THEN
                    RAISE EXCEPTION 'refused by the test' USING ERRCODE = '{errcode}';
                  END IF;
                  RETURN NEW;
                END $$ LANGUAGE plpgsql;
                CREATE TRIGGER test_batch_refuse BEFORE INSERT ON {table}
                  FOR EACH ROW EXECUTE FUNCTION test_batch_refuse();
                """
            )
        state["on"] = True

    yield refuse
    if state:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER IF EXISTS test_batch_refuse ON {table}")
            cursor.execute("DROP FUNCTION IF EXISTS test_batch_refuse()")


@pytest.mark.parametrize(
    ("errcode", "status", "code"),
    [("57014", 503, "service_unavailable"), ("P0001", 500, "internal_error")],
    ids=["statement-timeout", "raise-exception"],
)
def test_the_database_refusing_the_nth_order_writes_nothing_of_the_batch(
    client, dispatched, refused_key, errcode, status, code
):
    """The 4th insert (keys are created in sorted order) fails: the three before it are
    rolled back with it, nothing is dispatched, and the batch is answered as a whole."""
    refused_key("order-4", errcode)
    orders = [batch_order(f"order-{n}") for n in (6, 2, 4, 1, 5, 3)]

    response = post_batch(client, orders)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    if status == 503:
        assert response["Retry-After"] == "2"
    assert "refused by the test" not in response.content.decode()
    assert_nothing_written(dispatched)


def test_a_refused_batch_sent_again_creates_every_order_once(client, dispatched, refused_key):
    """After the 503 the client sends the same batch again: each order is created once."""
    refused_key("order-2", "57014")
    orders = [batch_order(f"order-{n}") for n in range(1, 4)]
    assert post_batch(client, orders).status_code == 503
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER test_batch_refuse ON {Order._meta.db_table}")

    results = results_of(post_batch(client, orders))

    assert [result["status"] for result in results] == [202, 202, 202]
    assert Order.objects.count() == 3
    assert len(dispatched) == 3


# --- on real processes: dispatched on commit, settled by a real worker ---------------------


@pytest.mark.integration
def test_a_batchs_orders_are_dispatched_and_settle_on_a_real_worker(live, client):
    """A batch of three: each dispatched on commit and settled by the worker, one effect per
    partner; the out-of-stock one compensated. A replay of the batch changes nothing."""
    rid = new_request_id()
    orders = [
        batch_order("live-1"),
        batch_order("live-2", items=[{"sku": "OOS-1", "quantity": 1}]),
        batch_order("live-3", amount=4200),
    ]

    results = results_of(post_batch(client, orders, request_id=rid))

    assert [result["status"] for result in results] == [202, 202, 202]
    ids = [result["order"]["id"] for result in results]
    final = [wait_final(order_id) for order_id in ids]
    assert [order.status for order in final] == [
        Order.Status.COMPLETED,
        Order.Status.COMPENSATED,
        Order.Status.COMPLETED,
    ]
    assert all(order.dispatched_at is not None for order in final)
    for order_id in (ids[0], ids[2]):
        ledger = live.ledger(order_id)
        assert (ledger["reserved"], ledger["charged"]) == (1, 1)
    assert live.ledger(ids[1])["charged"] == live.ledger(ids[1])["refunded"] == 1
    logged = live.requests_log(request_id=f"{rid}.0")
    assert {entry["path"].split("/")[2] for entry in logged} == {"reservations", "charges"}

    replayed = results_of(post_batch(client, orders))
    assert [result["status"] for result in replayed] == [200, 200, 200]
    assert [result["order"]["status"] for result in replayed] == [o.status for o in final]
    assert live.ledger(ids[0])["charged"] == 1


@pytest.mark.integration
def test_broker_down_a_batch_is_accepted_and_dispatched_later(live, client, broker_proxy):
    """As the single call: the broker unreachable at commit, each order 202 and pending;
    the sweeper dispatches them once it is back."""
    broker_proxy.cut()
    orders = [batch_order(f"down-{n}") for n in range(3)]

    results = results_of(post_batch(client, orders))

    assert [result["status"] for result in results] == [202, 202, 202]
    assert {result["order"]["status"] for result in results} == {Order.Status.PENDING}
    broker_proxy.restore()
    for result in results:
        assert wait_final(result["order"]["id"], timeout=30).status == Order.Status.COMPLETED
