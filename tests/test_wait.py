"""GET /api/orders/<id>?wait=N woken by settle's message, not by polling.

Settle publishes on Redis once the order's final status has committed (`order_events`);
the waiting request wakes then. The slow poll is set far beyond each test's wait, so an
order is seen final within the wait only if the message woke the request; the tests
that take the message away (lost, Redis down) show the poll still gets there.
"""

import threading
import time

import pytest
import redis
from django.db import connections
from django.test import Client

from devstack import free_port
from dualsend_app import order_events, orders
from dualsend_app.models import Order, Send
from project.api_clients import parse_api_clients
from tests.factories import create_order
from tests.helpers import own_redis_keys

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "test-token"
# Longer than any wait below: only the message can end one early.
NEVER = 60.0


@pytest.fixture(autouse=True)
def wait_settings(settings, monkeypatch):
    """The test's client and its own key prefix in the tests' Redis; the slow poll
    pushed out of reach."""
    settings.DUALSEND_API_CLIENTS = parse_api_clients(f"shop:{TOKEN}")
    settings.DUALSEND_CLIENT_RATE_LIMIT = "1000/second"
    settings.DUALSEND_MAX_WAIT_SECONDS = 30.0
    monkeypatch.setattr(order_events, "FALLBACK_POLL_SECONDS", NEVER)
    with own_redis_keys(settings, "wait"):
        yield settings


def dispatched_order():
    """An order whose two sends both succeeded, waiting for its settle."""
    order = create_order(client="shop", status=Order.Status.DISPATCHED)
    order.sends.update(status=Send.Status.SUCCEEDED)
    return order


def settle_in(seconds, order, settle=orders.settle):
    """Settle the order from another thread after `seconds`, as the worker would."""

    def run():
        try:
            time.sleep(seconds)
            settle(order.pk)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_through_a_settle(after):
    """GET ?wait=10 on an order that another thread settles `after` seconds in."""
    order = dispatched_order()
    settler = settle_in(after, order)
    response = get_waiting(order, wait=10)
    settler.join()
    return response


def get_waiting(order, wait):
    return Client().get(f"/api/orders/{order.pk}?wait={wait}", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


def test_settle_wakes_the_waiting_request():
    """Settled 0.3 s into a 10 s wait, with no poll due for a minute: only settle's
    message can have ended the wait with the completed order."""
    response = wait_through_a_settle(after=0.3)

    assert response.status_code == 200
    assert response.json()["status"] == Order.Status.COMPLETED


def test_waits_in_a_row_share_one_redis_connection(monkeypatch):
    """Each wait subscribes and unsubscribes on its thread's connection, kept between
    waits: after the first, this thread opens no new TCP connection to Redis."""
    assert wait_through_a_settle(after=0.1).json()["status"] == Order.Status.COMPLETED
    waiting_thread = threading.get_ident()
    opened_here = []
    real_connect = redis.connection.Connection._connect

    def counting_connect(self):
        if threading.get_ident() == waiting_thread:  # not the settling threads'
            opened_here.append(self.port)
        return real_connect(self)

    monkeypatch.setattr(redis.connection.Connection, "_connect", counting_connect)
    statuses = [wait_through_a_settle(after=0.2).json()["status"] for _ in range(3)]

    assert statuses == [Order.Status.COMPLETED] * 3
    assert opened_here == []


def test_a_lost_message_costs_one_slow_poll(monkeypatch):
    """Settle's message never sent: the slow poll still finds the order final."""
    monkeypatch.setattr(order_events, "FALLBACK_POLL_SECONDS", 0.5)
    monkeypatch.setattr(orders.order_events, "publish_final", lambda order_id: None)
    response = wait_through_a_settle(after=0.2)

    assert response.json()["status"] == Order.Status.COMPLETED


def test_with_redis_down_the_wait_polls_and_still_sees_the_order_settle(settings):
    """Nobody listening on REDIS_URL: no subscription, no message; the wait polls."""
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = wait_through_a_settle(after=0.3)

    assert response.status_code == 200
    assert response.json()["status"] == Order.Status.COMPLETED


def test_an_order_settled_before_the_wait_subscribed_is_seen_at_once(monkeypatch):
    """The order settles between the view's first read and its subscription: the look
    after subscribing sees it, though its message went to nobody."""
    order = dispatched_order()
    listening = order_events.listening

    def settle_then_listen(order_id):
        orders.settle(order_id)
        return listening(order_id)

    monkeypatch.setattr(order_events, "listening", settle_then_listen)

    response = get_waiting(order, wait=10)

    assert response.json()["status"] == Order.Status.COMPLETED


def test_settle_publishes_only_after_its_transaction_commits(monkeypatch):
    """A waiter woken by the message must find the order final: the message goes out
    on commit, never before."""
    seen = []

    def publish(order_id):
        # Read as a waiter would: on a connection of its own, outside settle's transaction.
        def look():
            try:
                seen.append(Order.objects.get(pk=order_id).status)
            finally:
                connections.close_all()

        reader = threading.Thread(target=look)
        reader.start()
        reader.join()

    monkeypatch.setattr(orders.order_events, "publish_final", publish)
    order = dispatched_order()

    orders.settle(order.pk)

    assert seen == [Order.Status.COMPLETED]


def test_a_get_reads_the_order_and_its_sends_once(django_assert_num_queries):
    """An order already final: one query for the order with its sends, none again."""
    order = dispatched_order()
    orders.settle(order.pk)

    with django_assert_num_queries(1):
        response = get_waiting(order, wait=10)

    assert response.json()["status"] == Order.Status.COMPLETED
    assert len(response.json()["sends"]) == 2
