"""Dispatching orders leaves no result subscriptions behind.

When orders were a chord, Celery's Redis backend subscribed the publishing process to every
header task's result channel and kept a result object for each; with our send tasks
storing no result, neither ever went away: two channels and two objects per order, for the
life of the web process. Orders are no chord now; this holds that nothing else brings the
leak back. `AsyncResult.get()` still subscribes and gets its result (tests/test_flow.py
waits on a task that way). This test places orders through the API in this process, on
the real worker.

Nor does publishing subscribe at all: a process publishing a task by name does not know
that it stores no result, and Celery's `send_task` SUBSCRIBEs to the result channel of
each task it publishes unless told (`enqueue.order_task` tells it), then UNSUBSCRIBEs
when the result object goes: two Redis round trips per task for nothing.
"""

import pytest

from dualsend_app.models import Order
from project.celery import app
from tests.helpers import new_request_id, place_order, wait_final

pytestmark = [pytest.mark.integration]

ORDERS = 3


def held_by_this_process() -> tuple[set[str], int]:
    """The result channels this process subscribes to, and the results it waits for."""
    backend = app.backend
    concrete, weak = backend._pending_results
    return set(backend.result_consumer.subscribed_to), len(concrete) + len(weak)


def test_placing_orders_subscribes_to_no_result(live, client):
    channels_before, pending_before = held_by_this_process()

    order_ids = [place_order(client, new_request_id()) for _ in range(ORDERS)]
    for order_id in order_ids:
        assert wait_final(order_id).status == Order.Status.COMPLETED

    channels_after, pending_after = held_by_this_process()
    assert channels_after - channels_before == set()
    assert pending_after == pending_before


def test_publishing_an_orders_tasks_subscribes_to_nothing(live, client, monkeypatch):
    """`send_task` asks the backend to watch a task's result (Redis: SUBSCRIBE) through
    `on_task_call`, for every task published without `ignore_result`."""
    backend = app.backend
    watched: list[str] = []
    original = backend.on_task_call

    def on_task_call(producer: object, task_id: str) -> None:
        watched.append(task_id)
        original(producer, task_id)

    monkeypatch.setattr(backend, "on_task_call", on_task_call)

    order_ids = [place_order(client, new_request_id()) for _ in range(ORDERS)]
    for order_id in order_ids:
        assert wait_final(order_id).status == Order.Status.COMPLETED

    assert watched == []
