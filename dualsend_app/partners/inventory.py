"""Inventory API (API A): reserve stock for an order, release it as compensation."""

from ..models import Order
from .http import BearerAuth, WireAnswer, canonical_json

PARTNER = "inventory"


def auth(credential: str) -> BearerAuth:
    return BearerAuth(credential)


def reserve_request(order: Order) -> tuple[str, str, str]:
    body = {"order_id": str(order.id), "items": order.payload["items"]}
    return "POST", "/v1/reservations", canonical_json(body)


def release_request(order: Order) -> tuple[str, str, str]:
    return "DELETE", f"/v1/reservations/{order.id}", ""


def remote_id(answer: WireAnswer) -> str:
    """The reservation id of a 2xx answer ('' for a release, which returns none)."""
    body = answer.body if isinstance(answer.body, dict) else {}
    return str(body.get("reservation_id", ""))
