"""Inventory API (API A): reserve stock for an order, release it as compensation."""

from .http import BearerAuth, canonical_json

PARTNER = "inventory"


def auth(credential):
    return BearerAuth(credential)


def reserve_request(order):
    body = {"order_id": str(order.id), "items": order.payload["items"]}
    return "POST", "/v1/reservations", canonical_json(body)


def release_request(order):
    return "DELETE", f"/v1/reservations/{order.id}", ""


def remote_id(answer):
    """The reservation id of a 2xx answer ('' for a release, which returns none)."""
    body = answer.body if isinstance(answer.body, dict) else {}
    return str(body.get("reservation_id", ""))
