"""Payment API (API B): charge the card for an order, refund it as compensation."""

from requests.auth import HTTPBasicAuth

from ..models import Order
from .http import WireAnswer, canonical_json

PARTNER = "payment"


def auth(credential: str) -> HTTPBasicAuth:
    # The key is the user name, the password is empty.
    return HTTPBasicAuth(credential, "")


def charge_request(order: Order) -> tuple[str, str, str]:
    body = {
        "order_id": str(order.id),
        "amount": order.payload["amount"],
        "currency": order.payload["currency"],
        "source": order.payload["payment_source"],
    }
    return "POST", "/v1/charges", canonical_json(body)


def refund_request(order: Order) -> tuple[str, str, str]:
    body = {"order_id": str(order.id), "amount": order.payload["amount"]}
    return "POST", "/v1/refunds", canonical_json(body)


def remote_id(answer: WireAnswer) -> str:
    """The charge or refund id of a 2xx answer."""
    body = answer.body if isinstance(answer.body, dict) else {}
    return str(body.get("charge_id") or body.get("refund_id") or "")
