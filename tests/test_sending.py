"""One attempt's bookkeeping, directly on the database: claims, leases and fencing."""

import datetime

import pytest
from django.utils import timezone

from dualsend_app import sending
from dualsend_app.models import Attempt, Order, Send
from dualsend_app.partners import clients, http
from tests.factories import create_order

Op = Send.Operation


@pytest.fixture
def charge(db):
    """The pending charge of a dispatched order."""
    order = create_order(status=Order.Status.DISPATCHED)
    return order.sends.get(operation=Op.PAYMENT_CHARGE)


def answered(send, status_code, body=None):
    return clients.interpret(send, http.WireAnswer(status_code=status_code, body=body or {}))


def made(send, result, attempt_number):
    """The call a delivery made with claim number `attempt_number`."""
    return sending.CallMade(
        send=send, result=result, started_at=timezone.now(), attempt_number=attempt_number
    )


def expire_lease(send):
    Send.objects.filter(pk=send.pk).update(
        lease_expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )


def test_only_one_of_two_deliveries_claims(charge):
    """The claim is a conditional update: the second delivery finds it in flight."""
    now = timezone.now()
    assert sending.claim(charge, now)
    assert not sending.claim(charge, now)
    charge.refresh_from_db()
    assert (charge.status, charge.attempts) == (Send.Status.IN_FLIGHT, 1)


def test_an_expired_lease_can_be_claimed_again(charge):
    """A worker died mid-call: past its lease, another delivery takes the send over."""
    sending.claim(charge, timezone.now())
    expire_lease(charge)

    assert sending.claim(charge, timezone.now())
    charge.refresh_from_db()
    assert charge.attempts == 2


def test_a_stale_delivery_cannot_overwrite_a_newer_claim(charge):
    """Attempt 1 answers after attempt 2 took over: logged, but the send is attempt 2's."""
    sending.claim(charge, timezone.now())
    expire_lease(charge)
    sending.claim(charge, timezone.now())
    send = Send.objects.select_related("order").get(pk=charge.pk)

    step = sending.record_attempt(made(send, answered(send, 503), attempt_number=1))

    assert not step.should_retry
    send.refresh_from_db()
    assert (send.status, send.attempts) == (Send.Status.IN_FLIGHT, 2)
    assert Attempt.objects.filter(send=send, number=1, status_code=503).exists()

    sending.record_attempt(made(send, answered(send, 201, {"charge_id": "ch_1"}), 2))
    send.refresh_from_db()
    assert (send.status, send.remote_id) == (Send.Status.SUCCEEDED, "ch_1")


def test_a_kept_answer_is_recorded_without_calling_again(charge):
    """The answer carried across a database outage is recorded as the attempt it was."""
    sending.claim(charge, timezone.now())
    send = Send.objects.select_related("order").get(pk=charge.pk)
    kept = sending.keep_answer(made(send, answered(send, 201, {"charge_id": "ch_9"}), 1))

    sending.record_kept_answer(charge.pk, kept)

    send.refresh_from_db()
    assert (send.status, send.remote_id, send.attempts) == (Send.Status.SUCCEEDED, "ch_9", 1)
    assert send.attempt_rows.count() == 1


def test_a_delivery_that_read_the_send_before_another_claimed_it_cannot_claim(charge):
    """Two deliveries read the send at attempt 0; one claims, its lease runs out. The
    other's claim would count attempt 1 again: the attempt count it read is its fence."""
    stale = Send.objects.select_related("order").get(pk=charge.pk)
    assert sending.claim(charge, timezone.now())
    expire_lease(charge)

    assert not sending.claim(stale, timezone.now())
    charge.refresh_from_db()
    assert (charge.status, charge.attempts) == (Send.Status.IN_FLIGHT, 1)


def test_the_claim_starts_the_deadline_once_and_updates_the_send_it_was_given(charge):
    """The first claim sets started_at; a later one keeps it. The in-memory send matches
    its row, so the call that follows needs no second read."""
    first = timezone.now()
    assert sending.claim(charge, first)
    assert (charge.status, charge.attempts, charge.started_at) == (Send.Status.IN_FLIGHT, 1, first)
    expire_lease(charge)
    charge.refresh_from_db()

    assert sending.claim(charge, first + datetime.timedelta(seconds=5))

    row = Send.objects.get(pk=charge.pk)
    assert (row.attempts, row.started_at, row.lease_expires_at) == (
        2,
        first,
        charge.lease_expires_at,
    )


def test_a_charge_answered_for_good_forgets_its_card_token_in_the_same_write(charge):
    """A charge that succeeded or was declined is never sent again: its stored request
    loses the token as the answer is recorded, not only once the order settles."""
    assert '"source":"tok_visa"' in charge.request_body
    sending.claim(charge, timezone.now())

    step = sending.record_attempt(made(charge, answered(charge, 402), attempt_number=1))

    assert step.status == Send.Status.FAILED
    charge.refresh_from_db()
    assert "tok_visa" not in charge.request_body
    assert '"source":""' in charge.request_body
    assert charge.attempt_rows.get().status_code == 402


def test_a_charge_that_will_be_retried_keeps_its_exact_bytes(charge):
    """A retry must send byte-identical requests (the partner's idempotency compares
    bodies): a transient answer leaves the stored request as it was."""
    before = charge.request_body
    sending.claim(charge, timezone.now())

    step = sending.record_attempt(made(charge, answered(charge, 503), attempt_number=1))

    assert step.should_retry
    charge.refresh_from_db()
    assert charge.request_body == before
    assert (charge.status, charge.attempt_rows.get().will_retry) == (Send.Status.PENDING, True)
