"""Two real concurrent POSTs with one Idempotency-Key, the second arriving while the first
is still being created (its order inserted, its transaction not yet committed): a replay
when the first commits within the intake's lock timeout, a 409 when it does not.

No code of ours is replaced: the first request is held inside its own statement, its order
inserted and not yet committed, by a trigger that waits on an advisory lock the test holds
(the order's rows are one statement: `dualsend_app/order_rows.py`), and PostgreSQL is
asked whether the second request is waiting on the first one's row. What happens then is
what `dualsend_app/api/idempotency.py` says: the second insert waits for the first to
commit (at most DUALSEND_INTAKE_LOCK_TIMEOUT_SECONDS), fails on the unique key, reads the
first order and answers it as a replay (200); past the timeout it gives up and answers
409 idempotency_in_progress, retry shortly.
"""

import threading
import time

import pytest
from django.db import connection, connections
from django.test import Client

from dualsend_app.models import Order
from tests.helpers import order_body

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("dispatched")]

KEY = "one-key-two-requests"
FIRST, SECOND = "first-request", "second-request"
WAIT_SECONDS = 15


@pytest.fixture(autouse=True)
def postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("needs row locks between sessions: SQLite serialises whole transactions")


HOLD_LOCK = 80_08  # the advisory lock the trigger waits on
_HOLD_TRIGGER = """
CREATE FUNCTION test_hold_first_request() RETURNS trigger LANGUAGE plpgsql
SET lock_timeout = 0  -- the hold is the test's, not a wait the intake bounds
AS $$
BEGIN
    IF NEW.correlation_id = '{first}' THEN
        PERFORM pg_advisory_lock_shared({lock});
        PERFORM pg_advisory_unlock_shared({lock});
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_hold_first_request AFTER INSERT ON dualsend_app_order
    FOR EACH ROW EXECUTE FUNCTION test_hold_first_request();
"""
_DROP_TRIGGER = """
DROP TRIGGER IF EXISTS test_hold_first_request ON dualsend_app_order;
DROP FUNCTION IF EXISTS test_hold_first_request();
"""


@pytest.fixture
def first_request_held():
    """(held, release): the first request's order, once inserted, waits (uncommitted)
    until `release()`; `held()` says whether it is waiting."""
    holder = connections.create_connection("default")  # the test's own session
    with holder.cursor() as cursor:
        cursor.execute(_HOLD_TRIGGER.format(first=FIRST, lock=HOLD_LOCK))
        cursor.execute("SELECT pg_advisory_lock(%s)", [HOLD_LOCK])

    def held():
        return sessions_waiting("advisory") == 1

    def release():
        with holder.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock_all()")

    try:
        yield held, release
    finally:
        release()
        with holder.cursor() as cursor:
            cursor.execute(_DROP_TRIGGER)
        holder.close()


def post_in_thread(request_id, answers):
    def post():
        try:
            response = Client().post(
                "/api/orders",
                data=order_body(),
                content_type="application/json",
                headers={
                    "Authorization": "Bearer test-token",
                    "Idempotency-Key": KEY,
                    "X-Request-ID": request_id,
                },
            )
            answers[request_id] = response
        finally:
            connections.close_all()

    thread = threading.Thread(target=post, name=request_id)
    thread.start()
    return thread


def sessions_waiting(event):
    """Other sessions blocked on a lock of this kind ("advisory"; "transactionid": an
    uncommitted row of another session's), as PostgreSQL sees them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND wait_event_type = 'Lock' AND wait_event = %s",
            [event],
        )
        return cursor.fetchone()[0]


def wait_until(condition, what):
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_duplicate_meeting_the_first_request_uncommitted_waits_then_replays_it(
    first_request_held, dispatched
):
    """One order: 202 to the first request, 200 with the same order to the second, which
    waited on the first one's uncommitted row."""
    held, release = first_request_held
    answers = {}
    first = post_in_thread(FIRST, answers)
    wait_until(held, "the first request to insert its order")

    second = post_in_thread(SECOND, answers)
    wait_until(lambda: sessions_waiting("transactionid") == 1, "the second to block")
    assert SECOND not in answers  # it waits: nothing answered while the first is open
    release()
    first.join(timeout=WAIT_SECONDS)
    second.join(timeout=WAIT_SECONDS)

    assert answers[FIRST].status_code == 202, answers[FIRST].content
    assert answers[SECOND].status_code == 200, answers[SECOND].content
    order = Order.objects.get()
    assert answers[FIRST].json()["id"] == answers[SECOND].json()["id"] == str(order.pk)
    assert order.correlation_id == FIRST
    assert dispatched == [order.pk]


def test_a_duplicate_meeting_the_first_request_open_past_the_lock_timeout_answers_409(
    first_request_held, dispatched, settings
):
    """The first request stays open longer than the intake waits: the duplicate answers
    409 idempotency_in_progress with Retry-After (no second order), and the same request
    sent again once the first committed is a replay of it."""
    settings.DUALSEND_INTAKE_LOCK_TIMEOUT_SECONDS = 0.5
    held, release = first_request_held
    answers = {}
    first = post_in_thread(FIRST, answers)
    wait_until(held, "the first request to insert its order")

    second = post_in_thread(SECOND, answers)
    second.join(timeout=WAIT_SECONDS)
    release()
    first.join(timeout=WAIT_SECONDS)

    assert answers[SECOND].status_code == 409, answers[SECOND].content
    assert answers[SECOND].json()["error"]["code"] == "idempotency_in_progress"
    assert answers[SECOND]["Retry-After"]
    assert answers[FIRST].status_code == 202, answers[FIRST].content
    retried = {}
    post_in_thread(SECOND, retried).join(timeout=WAIT_SECONDS)
    assert retried[SECOND].status_code == 200
    assert retried[SECOND].json()["id"] == answers[FIRST].json()["id"]
    assert Order.objects.count() == 1
