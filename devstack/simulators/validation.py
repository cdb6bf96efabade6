"""The request bodies the partner API contract accepts (stage 3 of a request).

Each ``validate_*`` takes the parsed JSON object and returns the fields the effect
needs, or raises ``ValueError`` with a message fit for a 422 ``invalid_request``.
"""

from typing import Any


def _non_empty_string(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _positive_int(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer")
    return value


def _items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    items = payload.get("items")
    if not isinstance(items, list) or not items:
        raise ValueError("items must be a non-empty list")
    cleaned = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"items[{index}] must be an object")
        try:
            cleaned.append(
                {"sku": _non_empty_string(item, "sku"), "quantity": _positive_int(item, "quantity")}
            )
        except ValueError as exc:
            raise ValueError(f"items[{index}].{exc}") from None
    return cleaned


def _currency(payload: dict[str, Any]) -> str:
    value = payload.get("currency")
    if not (isinstance(value, str) and len(value) == 3 and value.isascii() and value.isalpha()):
        raise ValueError("currency must be a 3-letter code")
    return value


def validate_reservation(payload: dict[str, Any]) -> dict[str, Any]:
    return {"order_id": _non_empty_string(payload, "order_id"), "items": _items(payload)}


def validate_charge(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "order_id": _non_empty_string(payload, "order_id"),
        "amount": _positive_int(payload, "amount"),
        "currency": _currency(payload),
        "source": _non_empty_string(payload, "source"),
    }


def validate_refund(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "order_id": _non_empty_string(payload, "order_id"),
        "amount": _positive_int(payload, "amount"),
    }
