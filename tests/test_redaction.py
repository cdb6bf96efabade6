"""No partner credential in a stored error: a partner may echo our Authorization header, an
exception may quote a URL with user:password@. The partners are faked with `responses`."""

import base64
from urllib.parse import quote

import pytest
import requests
import responses
from django.conf import settings
from django.utils import timezone

from dualsend_app import sending
from dualsend_app.models import Attempt, Order, Send
from dualsend_app.partners.redaction import REDACTED, scrub
from tests.factories import create_order

Op = Send.Operation
INVENTORY = settings.DUALSEND_PARTNERS["inventory"]
PAYMENT = settings.DUALSEND_PARTNERS["payment"]


def basic_form(key):
    """The payment partner's Authorization: Basic value (the key is the user name)."""
    return base64.b64encode(f"{key}:".encode()).decode()


@pytest.fixture
def order(db):
    return create_order(status=Order.Status.DISPATCHED)


def stored_attempt(send):
    """Claim the send, make one call (answered by `responses`), record it: the Attempt."""
    assert sending.claim(send, timezone.now())
    call = sending.attempt(send)
    sending.record_attempt(call)
    return Attempt.objects.get(send=send, number=call.attempt_number)


def partner_error(message, code="unauthorized"):
    return {"error": {"code": code, "message": message}}


@responses.activate
def test_a_payment_partner_echoing_our_basic_header_leaves_no_key_in_the_attempt(order):
    """The key, raw and in its Basic form, is blanked from the stored error."""
    charge = order.sends.get(operation=Op.PAYMENT_CHARGE)
    echoed = (
        f"key {PAYMENT.credential} refused (Authorization: Basic {basic_form(PAYMENT.credential)})"
    )
    responses.add("POST", PAYMENT.base_url + charge.path, status=401, json=partner_error(echoed))

    error = stored_attempt(charge).error

    assert PAYMENT.credential not in error
    assert basic_form(PAYMENT.credential) not in error
    assert error.startswith("unauthorized: key [redacted] refused")


@responses.activate
def test_a_partner_error_code_echoing_a_credential_leaves_none_in_the_send(order):
    """The send's own error (the decision's reason, built from the partner's error code)
    is as clean as the attempt's."""
    charge = order.sends.get(operation=Op.PAYMENT_CHARGE)
    code = f"bad_key_{PAYMENT.credential}"
    responses.add(
        "POST", PAYMENT.base_url + charge.path, status=401, json=partner_error("no", code)
    )

    stored_attempt(charge)

    charge.refresh_from_db()
    assert charge.status == Send.Status.FAILED
    assert PAYMENT.credential not in charge.error
    assert charge.error == f"http 401 bad_key_{REDACTED}"


@responses.activate
def test_an_inventory_partner_echoing_our_bearer_token_leaves_no_token_in_the_attempt(order):
    reserve = order.sends.get(operation=Op.INVENTORY_RESERVE)
    echoed = f"{{'Authorization': 'Bearer {INVENTORY.credential}'}} is not allowed here"
    responses.add(
        "POST", INVENTORY.base_url + reserve.path, status=503, json=partner_error(echoed, "busy")
    )

    attempt = stored_attempt(reserve)

    assert INVENTORY.credential not in attempt.error
    assert attempt.error == f"busy: {{'Authorization': 'Bearer {REDACTED}'}} is not allowed here"


@responses.activate
def test_an_exception_quoting_a_url_with_user_info_leaves_no_credential_in_the_attempt(order):
    """No answer at all: the exception's text is stored, its URL's user info blanked."""
    reserve = order.sends.get(operation=Op.INVENTORY_RESERVE)
    token = INVENTORY.credential
    failure = requests.ConnectionError(
        f"cannot reach https://dualsend:{token}@inventory.example/v1/reservations"
    )
    responses.add("POST", INVENTORY.base_url + reserve.path, body=failure)

    attempt = stored_attempt(reserve)

    assert attempt.status_code is None
    assert token not in attempt.error
    assert "dualsend:" not in attempt.error
    assert attempt.error == (
        f"ConnectionError: cannot reach https://{REDACTED}@inventory.example/v1/reservations"
    )


# --- the scrubber itself -----------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        "s3cret/key+value",
        quote("s3cret/key+value", safe=""),
        basic_form("s3cret/key+value"),
        base64.b64encode(b"s3cret/key+value").decode(),
    ],
)
def test_every_wire_form_of_a_credential_is_blanked(form):
    assert scrub(f"partner said: {form}.", ["s3cret/key+value"]) == f"partner said: {REDACTED}."


def test_any_echoed_authorization_token_is_blanked_even_a_foreign_one():
    text = 'headers: {"authorization": "Bearer abc.def-123"}, Authorization=Basic Zm9vOg=='

    assert scrub(text, []) == (
        f'headers: {{"authorization": "Bearer {REDACTED}"}}, Authorization=Basic {REDACTED}'
    )


def test_an_ordinary_error_is_kept_as_it_is():
    """Only secrets go: the partner's words, a URL without user info, stay readable."""
    text = "out_of_stock: SKU-1 has 0 left; see https://partner.example/docs (Bearer auth)"

    assert scrub(text, ["s3cret-key"]) == text


def test_a_very_short_credential_does_not_blank_ordinary_words():
    """A 'secret' of a few characters would blank half the message; none of ours is one."""
    assert scrub("the key was refused", ["key"]) == "the key was refused"
