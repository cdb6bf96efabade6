"""Re-driving an order is a change: staff who may only view orders cannot do it.

The tests log in as a staff user who is not a superuser, holding exactly the permissions
named; the re-drive's enqueueing is replaced by a recording fake.
"""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from dualsend_app import enqueue
from dualsend_app.models import Order, Send
from tests.factories import needs_attention_order

pytestmark = pytest.mark.django_db

ORDER_LIST = reverse("admin:dualsend_app_order_changelist")
REDRIVE = "redrive_compensations"
VIEW_ONLY = ("view_order", "view_send", "view_attempt")


@pytest.fixture
def enqueued(monkeypatch):
    """The send ids handed to the broker, instead of handing them to the broker."""
    recorded = []
    monkeypatch.setattr(enqueue, "enqueue_compensations", recorded.extend)
    return recorded


def log_in_staff(client, *codenames):
    """A staff user, not a superuser, with exactly these dualsend_app permissions."""
    user = get_user_model().objects.create_user("operator", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="dualsend_app", codename__in=codenames)
    )
    client.force_login(user)
    return user


def post_redrive(client, order):
    return client.post(
        ORDER_LIST, {"action": REDRIVE, "_selected_action": [str(order.pk)]}, follow=True
    )


def offered_actions(response):
    """The actions the order list offers (none at all: no action form)."""
    form = response.context["action_form"]
    return set() if form is None else {name for name, _ in form.fields["action"].choices}


def test_a_staff_user_who_may_only_view_is_not_offered_the_redrive(client):
    log_in_staff(client, *VIEW_ONLY)

    response = client.get(ORDER_LIST)

    assert response.status_code == 200
    assert REDRIVE not in offered_actions(response)
    assert REDRIVE not in response.content.decode()


def test_a_forged_redrive_by_a_staff_user_who_may_only_view_does_nothing(
    client, enqueued, django_capture_on_commit_callbacks
):
    """The POST the page never offered changes no row and enqueues nothing."""
    log_in_staff(client, *VIEW_ONLY)
    order, refund = needs_attention_order()

    with django_capture_on_commit_callbacks(execute=True):
        response = post_redrive(client, order)

    assert response.status_code == 200
    assert "Re-drove" not in response.content.decode()
    order.refresh_from_db()
    refund.refresh_from_db()
    assert order.status == Order.Status.NEEDS_ATTENTION
    assert refund.status == Send.Status.FAILED
    assert enqueued == []


def test_a_staff_user_granted_change_order_can_redrive(
    client, enqueued, django_capture_on_commit_callbacks
):
    """dualsend_app.change_order, and no superuser flag: offered, and it works."""
    log_in_staff(client, *VIEW_ONLY, "change_order")
    order, refund = needs_attention_order()
    assert REDRIVE in offered_actions(client.get(ORDER_LIST))

    with django_capture_on_commit_callbacks(execute=True):
        response = post_redrive(client, order)

    assert "Re-drove 1 order(s)" in response.content.decode()
    order.refresh_from_db()
    assert order.status == Order.Status.COMPENSATING
    assert enqueued == [refund.pk]
