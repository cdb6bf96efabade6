"""The audit trail: who re-drove an order or reset a breaker, and when; and only staff
holding the permission can.

Each test logs in a staff user who is NOT a superuser, holding exactly the permissions
named: without the change permission a re-drive or a reset is refused and leaves no
trace; with it, the action is done and on record (its own row naming the user, a status
history row for a re-drive, Django's admin log). Re-drives enqueue nothing here (a
recording fake); breaker state lives in the tests' Redis under this test's own prefix.
"""

import uuid

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dualsend_app import enqueue
from dualsend_app.models import BreakerTransition, Order, OrderStatusChange, Redrive, Send
from dualsend_app.partners.outcomes import AnswerOutcome
from dualsend_app.resilience import breaker, gate
from dualsend_app.resilience.redis_client import get_redis
from tests.factories import create_attempt, create_order, create_send, needs_attention_order
from tests.helpers import own_redis_keys

pytestmark = pytest.mark.django_db

ORDER_LIST = reverse("admin:dualsend_app_order_changelist")
BREAKERS = reverse("admin:dualsend_app_breakertransition_changelist")
ATTEMPTS = reverse("admin:dualsend_app_attempt_changelist")
REDRIVES = reverse("admin:dualsend_app_redrive_changelist")
VIEW_ORDERS = ("view_order", "view_send", "view_attempt", "view_redrive")
PARTNER = "payment"


def reset_url(partner=PARTNER):
    return reverse("admin:dualsend_app_breakertransition_reset", args=(partner,))


@pytest.fixture
def enqueued(monkeypatch):
    """The send ids handed to the broker, instead of handing them to the broker."""
    recorded = []
    monkeypatch.setattr(enqueue, "enqueue_compensations", recorded.extend)
    return recorded


def staff(*codenames, client=None):
    """A logged-in staff user, not a superuser, with exactly these dualsend_app permissions."""
    user = get_user_model().objects.create_user(f"op-{uuid.uuid4().hex[:6]}", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="dualsend_app", codename__in=codenames)
    )
    client = client or Client()
    client.force_login(user)
    return user, client


def post_redrive(client, order, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return client.post(
            ORDER_LIST,
            {"action": "redrive_compensations", "_selected_action": [str(order.pk)]},
            follow=True,
        )


# --- re-drive ------------------------------------------------------------------------------


def test_a_redrive_by_staff_without_change_order_is_refused_and_leaves_no_trace(
    enqueued, django_capture_on_commit_callbacks
):
    _, client = staff(*VIEW_ORDERS)
    order, _ = needs_attention_order()

    response = post_redrive(client, order, django_capture_on_commit_callbacks)

    assert response.status_code == 200
    assert "Re-drove" not in response.content.decode()
    order.refresh_from_db()
    assert order.status == Order.Status.NEEDS_ATTENTION
    assert order.redrive_count == 0
    assert enqueued == []
    assert not Redrive.objects.filter(order=order).exists()
    assert not OrderStatusChange.objects.filter(order=order).exists()
    assert not LogEntry.objects.exists()


def test_a_redrive_by_staff_with_change_order_is_done_and_on_record_three_times(
    enqueued, django_capture_on_commit_callbacks
):
    """A Redrive row (kind operator, the user, the time), a status history row naming
    the user, and an admin log entry for the order."""
    user, client = staff(*VIEW_ORDERS, "change_order")
    order, refund = needs_attention_order()
    before = timezone.now()

    response = post_redrive(client, order, django_capture_on_commit_callbacks)

    assert "Re-drove 1 order(s)" in response.content.decode()
    assert enqueued == [refund.pk]
    order.refresh_from_db()
    assert order.status == Order.Status.COMPENSATING
    assert order.redrive_count == 1
    (redrive,) = Redrive.objects.filter(order=order)
    assert (redrive.kind, redrive.by, redrive.by_username) == (
        Redrive.Kind.OPERATOR,
        user,
        user.username,
    )
    assert redrive.at >= before
    (change,) = OrderStatusChange.objects.filter(order=order)
    assert (change.from_status, change.to_status) == ("needs_attention", "compensating")
    assert (change.by, change.by_username) == (user, user.username)
    assert change.reason.startswith("re-driven by an operator")
    (entry,) = LogEntry.objects.all()
    assert (entry.user, entry.action_flag, entry.object_id) == (user, CHANGE, str(order.pk))
    assert entry.content_type.model == "order"
    assert entry.action_time >= before


def test_a_redrive_that_applies_settles_rules_names_the_operator_too(
    enqueued, django_capture_on_commit_callbacks
):
    """Given up before its outcome was settled (no compensation yet): settle's rules run,
    and the move they make is the operator's."""
    user, client = staff(*VIEW_ORDERS, "change_order")
    order = create_order(header_sends=False, status=Order.Status.NEEDS_ATTENTION)
    create_send(order, Send.Operation.INVENTORY_RESERVE, status=Send.Status.SUCCEEDED)
    create_send(order, Send.Operation.PAYMENT_CHARGE, status=Send.Status.PENDING, attempts=1)

    post_redrive(client, order, django_capture_on_commit_callbacks)

    (change,) = OrderStatusChange.objects.filter(order=order)
    assert (change.from_status, change.to_status) == ("needs_attention", "compensating")
    assert change.by_username == user.username
    assert Redrive.objects.get(order=order).by == user


def test_the_redrive_list_filters_by_kind_and_by_operator(
    enqueued, django_capture_on_commit_callbacks
):
    operator, operator_client = staff(*VIEW_ORDERS, "change_order")
    order, _ = needs_attention_order()
    post_redrive(operator_client, order, django_capture_on_commit_callbacks)
    Redrive.objects.create(order=order, kind=Redrive.Kind.SETTLE, detail="by the sweeper")
    _, viewer = staff(*VIEW_ORDERS)

    by_kind = viewer.get(REDRIVES, {"kind__exact": "operator"})
    by_user = viewer.get(REDRIVES, {"by__id__exact": operator.pk})
    everything = viewer.get(REDRIVES)

    assert [r.kind for r in by_kind.context["cl"].result_list] == ["operator"]
    assert [r.by_username for r in by_user.context["cl"].result_list] == [operator.username]
    assert len(everything.context["cl"].result_list) == 2
    content = everything.content.decode()
    assert reverse("admin:dualsend_app_order_change", args=(order.pk,)) in content
    assert operator.username in content


# --- the attempt list ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameter", "value", "expected"),
    [
        ("send__partner", "payment", {("payment.charge", 1), ("payment.charge", 2)}),
        ("send__operation", "inventory.reserve", {("inventory.reserve", 1)}),
        ("outcome__exact", "retry", {("payment.charge", 1)}),
        ("status_code", "503", {("payment.charge", 1)}),
        ("will_retry__exact", "0", {("inventory.reserve", 1), ("payment.charge", 2)}),
    ],
)
def test_the_attempt_list_filters_across_orders(parameter, value, expected):
    order = create_order()
    reserve, charge = (order.sends.get(operation=op) for op in Send.HEADER_OPERATIONS)
    create_attempt(reserve, 1)
    retried = {"outcome": AnswerOutcome.RETRY, "will_retry": True, "retry_in_seconds": 0.2}
    create_attempt(charge, 1, status_code=503, **retried)
    create_attempt(charge, 2)
    _, viewer = staff(*VIEW_ORDERS)

    response = viewer.get(ATTEMPTS, {parameter: value})

    assert response.status_code == 200
    listed = {(a.send.operation, a.number) for a in response.context["cl"].result_list}
    assert listed == expected
    assert reverse("admin:dualsend_app_order_change", args=(order.pk,)) in (
        response.content.decode()
    )


def test_the_attempt_and_redrive_lists_need_their_view_permission():
    """Staff who may view orders only are refused the lists of attempts and re-drives."""
    _, client = staff("view_order")

    assert client.get(ATTEMPTS).status_code == 403
    assert client.get(REDRIVES).status_code == 403


def test_attempts_and_redrives_cannot_be_added_or_changed_even_by_a_superuser(admin_client):
    order, _ = needs_attention_order()
    attempt = create_attempt(order.sends.first())

    assert admin_client.get(reverse("admin:dualsend_app_attempt_add")).status_code == 403
    assert admin_client.get(reverse("admin:dualsend_app_redrive_add")).status_code == 403
    forged = admin_client.post(
        reverse("admin:dualsend_app_attempt_change", args=(attempt.pk,)), {"status_code": 200}
    )
    assert forged.status_code == 403


# --- resetting a breaker ------------------------------------------------------------------------


@pytest.fixture
def open_breaker(settings):
    """The payment breaker open for a minute, under this test's own Redis keys."""
    with own_redis_keys(settings, "audit"):
        redis = get_redis()
        open_until_ms = int(redis.time()[0]) * 1000 + 60_000
        redis.hset(
            breaker.hash_key(PARTNER), mapping={"state": "open", "open_until": open_until_ms}
        )
        redis.zadd(f"{breaker.hash_key(PARTNER)}:failures", {"send-1": open_until_ms})
        assert gate.breaker_state(PARTNER)["state"] == "open"
        yield


def test_staff_who_may_only_view_breakers_see_no_reset_and_a_forged_one_is_refused(open_breaker):
    _, client = staff("view_breakertransition")

    page = client.get(BREAKERS)
    forged = client.post(reset_url())

    assert page.status_code == 200
    assert "breaker-reset" not in page.content.decode()
    assert forged.status_code == 403
    assert gate.breaker_state(PARTNER)["state"] == "open"
    assert not BreakerTransition.objects.exists()
    assert not LogEntry.objects.exists()


def test_staff_granted_reset_breaker_close_it_and_it_is_on_record(open_breaker):
    """dualsend_app.reset_breaker, no superuser flag: the button is there, the breaker
    closes with an empty window, a transition names the user, the admin log has it."""
    user, client = staff("view_breakertransition", "reset_breaker")
    assert reset_url() in client.get(BREAKERS).content.decode()

    response = client.post(reset_url(), follow=True)

    assert response.status_code == 200
    assert "Reset the payment breaker" in response.content.decode()
    state = gate.breaker_state(PARTNER)
    assert (state["state"], state["failures"]) == ("closed", 0)
    (transition,) = BreakerTransition.objects.all()
    assert (transition.partner, transition.from_state, transition.to_state) == (
        PARTNER,
        "open",
        "closed",
    )
    assert user.username in transition.reason
    (entry,) = LogEntry.objects.all()
    assert (entry.user, entry.action_flag) == (user, ADDITION)
    assert entry.object_id == str(transition.pk)


def test_a_reset_without_the_csrf_token_is_refused(open_breaker):
    """The button's form carries the token; a cross-site POST without it does nothing."""
    _, client = staff(
        "view_breakertransition", "reset_breaker", client=Client(enforce_csrf_checks=True)
    )

    response = client.post(reset_url())

    assert response.status_code == 403
    assert gate.breaker_state(PARTNER)["state"] == "open"
    assert not BreakerTransition.objects.exists()


def test_a_reset_is_a_post_and_names_a_known_partner(open_breaker):
    _, client = staff("view_breakertransition", "reset_breaker")

    assert client.get(reset_url()).status_code == 405
    assert client.post(reset_url("nobody")).status_code == 404
    assert gate.breaker_state(PARTNER)["state"] == "open"
