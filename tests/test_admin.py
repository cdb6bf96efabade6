"""The admin shows the whole record of an order and never lets anyone corrupt it.

Records are created directly with the ORM: no worker, broker or partner is involved.
The re-drive action's enqueueing is replaced by a recording fake.
"""

import datetime
import uuid

import pytest
from django.urls import reverse

from dualsend_app import enqueue
from dualsend_app.models import Order, Redrive, Send
from dualsend_app.partners.outcomes import AnswerOutcome
from project.api_clients import parse_api_clients
from tests.factories import create_attempt, create_order, create_send
from tests.helpers import order_body

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
ORDER_LIST = reverse("admin:dualsend_app_order_changelist")
SEND_LIST = reverse("admin:dualsend_app_send_changelist")


# --- factories -------------------------------------------------------------------------


def make_order(status=Order.Status.COMPLETED, *, settled_after_ms=1234, **fields):
    """An order with a client key, created at T0 and, once final, settled `settled_after_ms`
    later; its sends are made one by one."""
    settled = status in Order.FINAL_STATUSES
    defaults = {
        "idempotency_key": f"client-key-{uuid.uuid4()}",
        "status": status,
        "created_at": T0,
        "dispatched_at": T0 + datetime.timedelta(milliseconds=5),
        "settled_at": T0 + datetime.timedelta(milliseconds=settled_after_ms) if settled else None,
    }
    return create_order(header_sends=False, **(defaults | fields))


def make_send(order, operation, status=Send.Status.SUCCEEDED, **fields):
    """A send attempted once, at T0 + 10 ms, and finished at T0 + 90 ms."""
    defaults = {
        "status": status,
        "attempts": 1,
        "first_attempt_at": T0 + datetime.timedelta(milliseconds=10),
        "last_attempt_at": T0 + datetime.timedelta(milliseconds=10),
        "finished_at": T0 + datetime.timedelta(milliseconds=90),
    }
    return create_send(order, operation, **(defaults | fields))


def make_attempt(send, number, *, status_code=201, error="", will_retry=False):
    """Attempt `number`, started at T0 + number * 10 ms, taking 40 + number ms."""
    return create_attempt(
        send,
        number,
        started_at=T0 + datetime.timedelta(milliseconds=10 * number),
        duration_ms=40 + number,
        status_code=status_code,
        error=error,
        outcome=AnswerOutcome.RETRY if will_retry else AnswerOutcome.SUCCEEDED,
        will_retry=will_retry,
        retry_in_seconds=0.5 if will_retry else None,
    )


def make_completed_order():
    order = make_order(Order.Status.COMPLETED)
    reserve = make_send(order, Send.Operation.INVENTORY_RESERVE, remote_id="res_abc", attempts=2)
    make_attempt(reserve, 1, status_code=503, error="service_unavailable", will_retry=True)
    make_attempt(reserve, 2)
    charge = make_send(order, Send.Operation.PAYMENT_CHARGE, remote_id="ch_xyz")
    make_attempt(charge, 1)
    return order


def make_needs_attention_order():
    """Charged, stock declined, and the refund ran out of retries."""
    order = make_order(Order.Status.NEEDS_ATTENTION, status_reason="refund did not succeed")
    make_send(
        order,
        Send.Operation.INVENTORY_RESERVE,
        Send.Status.FAILED,
        failure_kind=Send.FailureKind.DECLINED,
        last_status_code=409,
    )
    make_send(order, Send.Operation.PAYMENT_CHARGE, remote_id="ch_paid")
    refund = make_send(
        order,
        Send.Operation.PAYMENT_REFUND,
        Send.Status.FAILED,
        failure_kind=Send.FailureKind.UNKNOWN,
        attempts=10,
        last_status_code=503,
        error="service_unavailable",
    )
    return order, refund


def change_url(obj):
    return reverse(f"admin:dualsend_app_{obj._meta.model_name}_change", args=(obj.pk,))


def listed_orders(response):
    return {str(order.pk) for order in response.context["cl"].result_list}


# --- the index ------------------------------------------------------------------------------


def test_index_links_to_orders_sends_and_breaker_transitions(admin_client):
    """The admin's front page leads to every record dualsend keeps."""
    response = admin_client.get(reverse("admin:index"))

    content = response.content.decode()
    assert ORDER_LIST in content
    assert SEND_LIST in content
    assert reverse("admin:dualsend_app_breakertransition_changelist") in content


# --- the order list ---------------------------------------------------------------------


def test_order_list_shows_each_order_with_its_end_to_end_duration(admin_client):
    """The list names every order, its status and settled minus created in milliseconds."""
    order = make_completed_order()

    response = admin_client.get(ORDER_LIST)

    assert response.status_code == 200
    assert listed_orders(response) == {str(order.pk)}
    content = response.content.decode()
    assert "end to end (ms)" in content.lower()
    assert "1234" in content
    assert order.correlation_id in content


def test_status_filter_lists_only_orders_in_that_status(admin_client):
    """?status__exact=X lists the orders in status X and no other."""
    completed = make_completed_order()
    stuck, _ = make_needs_attention_order()

    response = admin_client.get(ORDER_LIST, {"status__exact": "needs_attention"})

    assert listed_orders(response) == {str(stuck.pk)}
    assert str(completed.pk) not in listed_orders(response)


@pytest.mark.parametrize("term", ["order_id", "order_key", "send_key", "correlation_id"])
def test_search_finds_the_order_by_id_key_or_correlation_id(admin_client, term):
    """Search by the order id, the client's key, any send's key or the correlation id."""
    order = make_completed_order()
    make_completed_order()  # a decoy that must not match
    terms = {
        "order_id": str(order.pk),
        "order_key": order.idempotency_key,
        "send_key": order.sends.get(operation=Send.Operation.PAYMENT_CHARGE).idempotency_key,
        "correlation_id": order.correlation_id,
    }

    response = admin_client.get(ORDER_LIST, {"q": terms[term]})

    assert response.status_code == 200
    assert listed_orders(response) == {str(order.pk)}


def test_search_with_a_term_that_is_not_a_uuid_finds_nothing_and_does_not_fail(admin_client):
    """A free-text search term is not an error, even though order ids are UUIDs."""
    make_completed_order()

    response = admin_client.get(ORDER_LIST, {"q": "not-a-uuid"})

    assert response.status_code == 200
    assert listed_orders(response) == set()


# --- the order page -----------------------------------------------------------------------


def test_order_page_shows_its_sends_and_every_attempt(admin_client):
    """Each send (operation, remote id, key) and each HTTP call of the order is on its page."""
    order = make_completed_order()
    reserve = order.sends.get(operation=Send.Operation.INVENTORY_RESERVE)

    response = admin_client.get(change_url(order))

    assert response.status_code == 200
    content = response.content.decode()
    for expected in ("inventory.reserve", "payment.charge", "res_abc", "ch_xyz"):
        assert expected in content
    assert reserve.idempotency_key in content
    assert "service_unavailable" in content  # the first, retried attempt
    assert "in 0.50 s" in content
    assert change_url(reserve) in content  # the send row links to the send's page


def test_order_page_shows_each_redrive_of_the_sweeper(admin_client):
    """The sweeper's re-drives are on the order's page, with their reason, and counted."""
    order = make_completed_order()
    Redrive.objects.create(order=order, kind=Redrive.Kind.SETTLE, detail="settle enqueued again")
    Order.objects.filter(pk=order.pk).update(redrive_count=1)

    content = admin_client.get(change_url(order)).content.decode()

    assert "settle enqueued again" in content
    assert "Recovery" in content


def test_send_page_lists_its_attempts_with_durations(admin_client):
    """A send's page shows each attempt: number, duration, status code, error, retry."""
    order = make_completed_order()
    reserve = order.sends.get(operation=Send.Operation.INVENTORY_RESERVE)

    response = admin_client.get(change_url(reserve))

    assert response.status_code == 200
    attempts = response.context["inline_admin_formsets"][0]
    assert [form.original.number for form in attempts] == [1, 2]
    content = response.content.decode()
    assert "503" in content
    assert "service_unavailable" in content
    assert "41" in content  # duration_ms of attempt 1


@pytest.mark.parametrize(
    ("parameter", "value", "operation"),
    [
        ("partner", "inventory", Send.Operation.INVENTORY_RESERVE),
        ("operation__exact", "payment.refund", Send.Operation.PAYMENT_REFUND),
        ("status__exact", "succeeded", Send.Operation.PAYMENT_CHARGE),
        ("failure_kind__exact", "declined", Send.Operation.INVENTORY_RESERVE),
    ],
)
def test_send_list_filters_by_partner_operation_status_and_failure_kind(
    admin_client, parameter, value, operation
):
    """Each filter of the send list keeps only the sends that match it."""
    order, _ = make_needs_attention_order()

    response = admin_client.get(SEND_LIST, {parameter: value})

    assert response.status_code == 200
    listed = {send.operation for send in response.context["cl"].result_list}
    assert listed == {operation}
    assert all(send.order_id == order.pk for send in response.context["cl"].result_list)


# --- nothing can corrupt the record ---------------------------------------------------


@pytest.mark.parametrize("model", ["order", "send"])
def test_adding_is_refused(admin_client, model):
    """No order or send can be created by hand."""
    response = admin_client.get(reverse(f"admin:dualsend_app_{model}_add"))

    assert response.status_code == 403


def test_deleting_is_refused_and_the_delete_action_is_absent(admin_client):
    """An order cannot be deleted, one by one or in bulk."""
    order = make_completed_order()

    response = admin_client.post(
        reverse("admin:dualsend_app_order_delete", args=(order.pk,)), {"post": "yes"}
    )
    listing = admin_client.get(ORDER_LIST)

    assert response.status_code == 403
    assert Order.objects.filter(pk=order.pk).exists()
    assert "delete_selected" not in listing.content.decode()


def test_order_page_is_read_only_and_a_forged_change_is_refused(admin_client):
    """The page has no input for any field; a POST to it changes nothing."""
    order = make_completed_order()

    page = admin_client.get(change_url(order))
    forged = admin_client.post(change_url(order), {"status": "failed", "client": "x"})

    content = page.content.decode()
    assert 'name="status"' not in content
    assert 'name="_save"' not in content
    assert forged.status_code == 403
    order.refresh_from_db()
    assert order.status == Order.Status.COMPLETED


def test_send_page_is_read_only(admin_client):
    """A send's page shows its fields as text, never as inputs, and refuses a POST."""
    order = make_completed_order()
    send = order.sends.first()

    page = admin_client.get(change_url(send))
    forged = admin_client.post(change_url(send), {"status": "failed"})

    assert 'name="status"' not in page.content.decode()
    assert forged.status_code == 403
    send.refresh_from_db()
    assert send.status == Send.Status.SUCCEEDED


# --- re-drive ---------------------------------------------------------------------------


@pytest.fixture
def enqueued(monkeypatch):
    """The send ids handed to the broker, instead of handing them to the broker."""
    recorded = []
    monkeypatch.setattr(enqueue, "enqueue_compensations", recorded.extend)
    return recorded


def redrive(admin_client, *orders_to_redrive):
    return admin_client.post(
        ORDER_LIST,
        {
            "action": "redrive_compensations",
            "_selected_action": [str(order.pk) for order in orders_to_redrive],
        },
        follow=True,
    )


def test_redrive_moves_a_needs_attention_order_back_to_compensating(
    admin_client, enqueued, django_capture_on_commit_callbacks
):
    """The order is compensating again, its failed refund pending with a fresh budget,
    the same idempotency key, and enqueued once the transaction commits."""
    order, refund = make_needs_attention_order()
    key = refund.idempotency_key

    with django_capture_on_commit_callbacks(execute=True):
        response = redrive(admin_client, order)

    order.refresh_from_db()
    refund.refresh_from_db()
    assert order.status == Order.Status.COMPENSATING
    assert order.settled_at is None
    assert refund.status == Send.Status.PENDING
    assert refund.failure_kind == Send.FailureKind.NONE
    assert refund.attempts_in_budget == 0
    assert refund.idempotency_key == key
    assert enqueued == [refund.pk]
    assert "Re-drove 1 order(s): 1 compensation send(s)" in response.content.decode()


def test_redrive_leaves_an_order_that_is_not_needs_attention_alone_and_says_so(
    admin_client, enqueued, django_capture_on_commit_callbacks
):
    """A completed order selected with a stuck one is skipped, named in the message."""
    stuck, _ = make_needs_attention_order()
    completed = make_completed_order()

    with django_capture_on_commit_callbacks(execute=True):
        response = redrive(admin_client, stuck, completed)

    completed.refresh_from_db()
    assert completed.status == Order.Status.COMPLETED
    assert completed.settled_at is not None
    assert all(send.status == Send.Status.SUCCEEDED for send in completed.sends.all())
    content = response.content.decode()
    assert "Re-drove 1 order(s)" in content
    assert (
        f"Did not re-drive 1 order(s): {completed.pk}: the order is completed, "
        "not needs_attention"
    ) in content
    assert len(enqueued) == 1


def test_redrive_of_only_settled_orders_enqueues_nothing(
    admin_client, enqueued, django_capture_on_commit_callbacks
):
    """Re-driving a completed order does nothing and reports it skipped."""
    completed = make_completed_order()

    with django_capture_on_commit_callbacks(execute=True):
        response = redrive(admin_client, completed)

    assert enqueued == []
    assert "Re-drove" not in response.content.decode()
    assert "Did not re-drive 1 order(s)" in response.content.decode()
    completed.refresh_from_db()
    assert completed.status == Order.Status.COMPLETED


# --- the payment source is never shown whole; the client is shown, never its token --------

SOURCE = "pm_card_4242_secret_9f3k"
SHOP_TOKEN = "shop-secret-token-123"


def make_order_paid_with(source):
    order = make_order(Order.Status.COMPLETED, payload=order_body(payment_source=source))
    charge = make_send(order, Send.Operation.PAYMENT_CHARGE, remote_id="ch_masked")
    return order, charge


def test_order_page_masks_the_payment_source_in_the_payload(admin_client):
    """The order's payload shows the source's last 4 characters behind a mask only."""
    order, _ = make_order_paid_with(SOURCE)

    content = admin_client.get(change_url(order)).content.decode()

    assert SOURCE not in content
    assert "••••9f3k" in content
    assert "SKU-1" in content  # the rest of the payload is shown as it is


def test_send_page_masks_the_payment_source_in_a_charge_request_body(admin_client):
    """A payment.charge's page shows its request body with the source masked."""
    _, charge = make_order_paid_with(SOURCE)
    assert SOURCE in charge.request_body  # stored whole: retries send the same bytes

    content = admin_client.get(change_url(charge)).content.decode()

    assert SOURCE not in content
    assert "••••9f3k" in content
    assert str(charge.order_id) in content


def test_no_admin_page_of_the_order_shows_the_source_whole(admin_client):
    """The order list, the send list and the refund's page never show it either."""
    order, charge = make_order_paid_with(SOURCE)
    refund = make_send(order, Send.Operation.PAYMENT_REFUND)

    for url in (ORDER_LIST, SEND_LIST, change_url(order), change_url(charge), change_url(refund)):
        assert SOURCE not in admin_client.get(url).content.decode(), url


def test_the_admin_lists_every_clients_orders_and_names_the_client(admin_client, settings):
    """Orders of all clients are listed; a named client by its name, never its token."""
    settings.DUALSEND_API_CLIENTS = parse_api_clients(f"shop:{SHOP_TOKEN},plain-token")
    plain_id = settings.DUALSEND_API_CLIENTS[1].id
    shop_order = make_order(client="shop")
    plain_order = make_order(client=plain_id)

    listing = admin_client.get(ORDER_LIST)
    page = admin_client.get(change_url(shop_order)).content.decode()

    assert listed_orders(listing) == {str(shop_order.pk), str(plain_order.pk)}
    content = listing.content.decode()
    assert "shop" in content
    assert f"{plain_id} (unnamed token)" in content
    assert ">shop<" in page
    for text in (content, page):
        assert SHOP_TOKEN not in text
        assert "plain-token" not in text


def test_an_order_of_a_client_no_longer_configured_shows_its_id(admin_client, settings):
    """A removed client's orders stay visible, under the id they were stored with."""
    settings.DUALSEND_API_CLIENTS = parse_api_clients(f"shop:{SHOP_TOKEN}")
    order = make_order(client="retired")

    content = admin_client.get(change_url(order)).content.decode()

    assert "retired (not configured now)" in content
