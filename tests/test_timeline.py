"""An order's timeline on its admin page: one bar per Attempt row, in its send's row, in
the order the calls were made, with the waits between them and the settle marked.

The SVG is read back with the standard library's HTML parser, by its classes and data
attributes (`dualsend_app/timeline_svg.py` names them). The first tests draw orders made
of factory rows; the last one draws an order that ran through the live worker, the
simulators failing its charge once and declining its stock, seen by a staff user.
"""

import datetime
import itertools
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from dualsend_app import timeline_svg
from dualsend_app.models import Attempt, Order, OrderStatusChange, Send
from dualsend_app.partners.outcomes import AnswerOutcome
from tests.factories import create_attempt, create_order, create_send
from tests.helpers import new_request_id, order_body, place_order, wait_final

Op = Send.Operation
T0 = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def at(ms):
    return T0 + datetime.timedelta(milliseconds=ms)


# --- reading the SVG back ----------------------------------------------------------------


@dataclass
class Element:
    tag: str
    attrs: dict
    row: str | None  # the data-operation of the send-row it is in
    text: list = field(default_factory=list)

    @property
    def classes(self):
        return set((self.attrs.get("class") or "").split())

    def x(self):
        return float(self.attrs.get("x", self.attrs.get("x1")))


class TimelineReader(HTMLParser):
    """Every element inside the page's <svg class="order-timeline">, with its row."""

    def __init__(self):
        super().__init__()
        self.stack = []
        self.elements = []
        self.svgs = 0

    def handle_starttag(self, tag, attrs):
        element = self._element(tag, attrs)
        self.stack.append(element)

    def handle_startendtag(self, tag, attrs):
        self._element(tag, attrs)

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop().tag == tag:
                break

    def handle_data(self, data):
        if self.stack and self._in_timeline():
            self.stack[-1].text.append(data)

    def _in_timeline(self):
        return any("order-timeline" in e.classes for e in self.stack)

    def _element(self, tag, attrs):
        element = Element(tag, dict(attrs), self._row())
        if tag == "svg" and "order-timeline" in element.classes:
            self.svgs += 1
        if self._in_timeline() or "order-timeline" in element.classes:
            self.elements.append(element)
        return element

    def _row(self):
        for element in reversed(self.stack):
            if element.tag == "g" and "send-row" in element.classes:
                return element.attrs["data-operation"]
        return None

    def having(self, css_class, tag=None):
        return [
            e for e in self.elements if css_class in e.classes and (tag is None or e.tag == tag)
        ]


def read_timeline(html):
    reader = TimelineReader()
    reader.feed(str(html))
    assert reader.svgs == 1, "exactly one timeline"
    return reader


def bars_by_row(reader):
    """{operation: [(number, x), ...]} in document order."""
    rows = {}
    for bar in reader.having("attempt", "rect"):
        assert bar.row == bar.attrs["data-send"], "a bar sits in its own send's row"
        rows.setdefault(bar.row, []).append((int(bar.attrs["data-number"]), bar.x()))
    return rows


def assert_one_bar_per_attempt_in_order(reader, order):
    """The attempts as rows say them, drawn one bar each, x growing with the number."""
    expected = {}
    for attempt in Attempt.objects.filter(send__order=order).select_related("send"):
        expected.setdefault(attempt.send.operation, []).append(attempt.number)
    drawn = bars_by_row(reader)
    assert {op: sorted(n for n, _ in bars) for op, bars in drawn.items()} == {
        op: sorted(numbers) for op, numbers in expected.items()
    }
    for bars in drawn.values():
        by_number = [x for _, x in sorted(bars)]
        assert by_number == sorted(by_number) and len(set(by_number)) == len(by_number)


# --- from factory rows ---------------------------------------------------------------------


def attempt(send, number, start_ms, *, status_code, will_retry=False, error="", duration=40):
    outcome = AnswerOutcome.RETRY if will_retry else AnswerOutcome.SUCCEEDED
    return create_attempt(
        send,
        number,
        started_at=at(start_ms),
        duration_ms=duration,
        status_code=status_code,
        outcome=outcome,
        error=error,
        will_retry=will_retry,
        retry_in_seconds=0.2 if will_retry else None,
    )


def history(order, *moves):
    """Status history rows: (at_ms, from, to, reason)."""
    for at_ms, from_status, to_status, reason in moves:
        OrderStatusChange.objects.create(
            order=order, at=at(at_ms), from_status=from_status, to_status=to_status, reason=reason
        )


def completed_after_retries():
    """Reserve at once; the charge 503, then no answer, then 201; completed at 1.5 s."""
    order = create_order(
        header_sends=False,
        status=Order.Status.COMPLETED,
        created_at=T0,
        dispatched_at=at(5),
        settled_at=at(1500),
    )
    reserve = create_send(order, Op.INVENTORY_RESERVE, status=Send.Status.SUCCEEDED, created_at=T0)
    charge = create_send(order, Op.PAYMENT_CHARGE, status=Send.Status.SUCCEEDED, created_at=T0)
    attempt(reserve, 1, 10, status_code=201)
    attempt(charge, 1, 10, status_code=503, will_retry=True, error="service_unavailable")
    attempt(charge, 2, 300, status_code=None, will_retry=True, error="ReadTimeout", duration=900)
    attempt(charge, 3, 1400, status_code=201)
    history(
        order,
        (0, "", "pending", "accepted"),
        (5, "pending", "dispatched", "the sends are with the broker"),
        (1500, "dispatched", "completed", "both partners succeeded"),
    )
    return order


@pytest.mark.django_db
def test_each_attempt_is_one_bar_in_its_sends_row_in_call_order():
    order = completed_after_retries()

    reader = read_timeline(timeline_svg.order_timeline_svg(order))

    assert_one_bar_per_attempt_in_order(reader, order)
    rows = [g.attrs["data-operation"] for g in reader.having("send-row", "g")]
    assert rows == [Op.INVENTORY_RESERVE, Op.PAYMENT_CHARGE]


@pytest.mark.django_db
def test_calls_made_at_the_same_time_are_drawn_at_the_same_place():
    """Both sends' first calls started together: the reader sees they ran in parallel."""
    order = completed_after_retries()

    drawn = bars_by_row(read_timeline(timeline_svg.order_timeline_svg(order)))

    assert drawn[Op.INVENTORY_RESERVE][0][1] == drawn[Op.PAYMENT_CHARGE][0][1]


@pytest.mark.django_db
def test_the_wait_after_a_retried_call_is_a_gap_with_its_reason():
    order = completed_after_retries()

    reader = read_timeline(timeline_svg.order_timeline_svg(order))

    waits = {
        int(w.attrs["data-after"]): w.attrs["data-reason"]
        for w in reader.having("wait", "rect")
        if w.row == Op.PAYMENT_CHARGE
    }
    assert "backoff: retry planned in 0.20 s" in waits[1]
    assert "held longer" not in waits[1]  # no deferral: nothing else to blame
    bars = dict(bars_by_row(reader)[Op.PAYMENT_CHARGE])
    gap = next(w for w in reader.having("wait", "rect") if w.attrs.get("data-after") == "1")
    assert bars[1] < gap.x() < bars[2]


@pytest.mark.django_db
def test_a_settled_order_has_its_settle_marked_with_its_final_status_after_every_call():
    order = completed_after_retries()

    reader = read_timeline(timeline_svg.order_timeline_svg(order))

    (settle,) = reader.having("settle", "line")
    assert settle.attrs["data-status"] == "completed"
    assert all(settle.x() >= x for bars in bars_by_row(reader).values() for _, x in bars)
    assert not reader.having("now", "line")
    lane = [s.attrs["data-status"] for s in reader.having("status-span", "rect")]
    assert lane == ["pending", "dispatched", "completed"]


@pytest.mark.django_db
def test_compensations_get_rows_after_the_header_sends_and_an_open_order_is_drawn_to_now():
    order = create_order(header_sends=False, status=Order.Status.COMPENSATING, created_at=T0)
    refund = create_send(order, Op.PAYMENT_REFUND, created_at=at(200))
    charge = create_send(order, Op.PAYMENT_CHARGE, status=Send.Status.SUCCEEDED, created_at=T0)
    reserve = create_send(order, Op.INVENTORY_RESERVE, status=Send.Status.FAILED, created_at=T0)
    attempt(reserve, 1, 10, status_code=409)
    attempt(charge, 1, 12, status_code=201)
    attempt(refund, 1, 250, status_code=503, will_retry=True)

    reader = read_timeline(timeline_svg.order_timeline_svg(order))

    rows = [g.attrs["data-operation"] for g in reader.having("send-row", "g")]
    assert rows == [Op.INVENTORY_RESERVE, Op.PAYMENT_CHARGE, Op.PAYMENT_REFUND]
    assert not reader.having("settle", "line")
    (now,) = reader.having("now", "line")
    assert now.attrs["data-status"] == "compensating"
    assert_one_bar_per_attempt_in_order(reader, order)


@pytest.mark.django_db
def test_texts_are_escaped_and_the_card_token_never_shows():
    """An error quoting markup or the card token: escaped, and the token masked."""
    token = f"tok_secret_{uuid.uuid4().hex[:8]}"
    order = create_order(
        header_sends=False,
        created_at=T0,
        payload=order_body(payment_source=token),
        status=Order.Status.DISPATCHED,
    )
    charge = create_send(order, Op.PAYMENT_CHARGE, created_at=T0)
    attempt(charge, 1, 10, status_code=None, will_retry=True, error=f"<script>x</script> {token}")

    svg = str(timeline_svg.order_timeline_svg(order))

    assert token not in svg
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg


# --- a real order, through the live worker, on the admin page -------------------------------


def staff_viewer():
    """A staff user who may view orders (not a superuser), logged in on a client."""
    user = get_user_model().objects.create_user(f"viewer-{uuid.uuid4().hex[:6]}", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="dualsend_app",
            codename__in=("view_order", "view_send", "view_attempt", "view_redrive"),
        )
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.integration
def test_a_live_order_with_a_retry_and_a_refund_is_drawn_as_it_ran(live, client):
    """Stock declined, the charge failing once with 503 then made, then refunded: three
    rows, one bar per Attempt row, the backoff as a gap, the settle marked compensated,
    and the status history on the same page."""
    rid = new_request_id()
    live.script(rid, "charge", [{"status": 503}])
    order_id = place_order(client, rid, items=[{"sku": "OOS-1", "quantity": 1}])
    order = wait_final(order_id)
    assert order.status == Order.Status.COMPENSATED

    page = staff_viewer().get(reverse("admin:dualsend_app_order_change", args=(order.pk,)))

    assert page.status_code == 200
    reader = read_timeline(page.content.decode())
    assert_one_bar_per_attempt_in_order(reader, order)
    drawn = bars_by_row(reader)
    assert list(drawn) == [Op.INVENTORY_RESERVE, Op.PAYMENT_CHARGE, Op.PAYMENT_REFUND]
    assert [n for n, _ in drawn[Op.PAYMENT_CHARGE]] == [1, 2]
    codes = [
        a.attrs["data-status-code"] for a in reader.having("attempt") if a.row == Op.PAYMENT_CHARGE
    ]
    assert codes == ["503", "201"]
    backoff = [
        w
        for w in reader.having("wait", "rect")
        if w.row == Op.PAYMENT_CHARGE and w.attrs["data-after"] == "1"
    ]
    assert len(backoff) == 1 and "retry planned" in backoff[0].attrs["data-reason"]
    (settle,) = reader.having("settle", "line")
    assert settle.attrs["data-status"] == "compensated"
    # The status history, a chain from pending to compensated, shown on the page too.
    changes = list(order.status_changes.values_list("from_status", "to_status"))
    assert changes[0] == ("", "pending") and changes[-1][1] == "compensated"
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(changes))
    assert ("dispatched", "compensating") in changes or ("pending", "compensating") in changes
    assert page.content.decode().count('<tr class="status-change">') == len(changes)
