"""Payment API (API B): charge the card for an order, refund it as compensation."""

from requests.auth import HTTPBasicAuth

from .http import canonical_json

PARTNER = "payment"


def auth(credential):
    # The key is the user name, the password is empty.
    return HTTPBasicAuth(credential, "")


def charge_request(order):
    body = {
        "order_id": str(order.id),
        "amount": order.payload["amount"],
        "currency": order.payload["currency"],
        "source": order.payload["payment_source"],
    }
    return "POST", "/v1/charges", canonical_json(body)


def refund_request(order):
    body = {"order_id": str(order.id), "amount": order.payload["amount"]}
    return "POST", "/v1/refunds", canonical_json(body)


def remote_id(answer):
    """The charge or refund id of a 2xx answer."""
    body = answer.body if isinstance(answer.body, dict) else {}
    return str(body.get("charge_id") or body.get("refund_id") or "")
