"""What each partner operation does to the ledger (stage 6 of a request), and the table
of operations: how each one's body is validated and what it does.

Each effect returns the definite answer and whether the ledger changed. A business
decline (out of stock, card declined) is a definite answer too, and changes nothing.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devstack.simulators.answers import Answer, error_answer, new_id
from devstack.simulators.ledger import Ledger
from devstack.simulators.validation import validate_charge, validate_refund, validate_reservation


def reserve(ledger: Ledger, payload: dict[str, Any], decline: bool) -> tuple[Answer, bool]:
    order_id, items = payload["order_id"], payload["items"]
    missing = next((item["sku"] for item in items if item["sku"].startswith("OOS")), None)
    if missing is None and decline:
        missing = items[0]["sku"]
    if missing is not None:
        return error_answer(409, "out_of_stock", f"{missing} has 0 left"), False
    ledger.record_effect(order_id, "reserved")
    body = {
        "reservation_id": new_id("res"),
        "order_id": order_id,
        "status": "reserved",
        "items": items,
    }
    return Answer(201, body), True


def release(ledger: Ledger, payload: dict[str, Any], decline: bool) -> tuple[Answer, bool]:
    order_id = payload["order_id"]
    if not ledger.order(order_id).reservation_standing:
        return error_answer(404, "not_found", f"no reservation for order {order_id}"), False
    ledger.record_effect(order_id, "released")
    return Answer(200, {"order_id": order_id, "status": "released"}), True


def charge(ledger: Ledger, payload: dict[str, Any], decline: bool) -> tuple[Answer, bool]:
    if payload["source"] == "tok_chargeDeclined" or decline:
        return error_answer(402, "card_declined", "the card was declined"), False
    ledger.record_effect(payload["order_id"], "charged")
    body = {
        "charge_id": new_id("ch"),
        "order_id": payload["order_id"],
        "status": "captured",
        "amount": payload["amount"],
        "currency": payload["currency"],
    }
    return Answer(201, body), True


def refund(ledger: Ledger, payload: dict[str, Any], decline: bool) -> tuple[Answer, bool]:
    order_id = payload["order_id"]
    if not ledger.order(order_id).charge_standing:
        return error_answer(404, "not_found", f"no charge for order {order_id}"), False
    ledger.record_effect(order_id, "refunded")
    return Answer(
        201, {"refund_id": new_id("re"), "order_id": order_id, "status": "refunded"}
    ), True


@dataclass(frozen=True)
class Operation:
    name: str
    validate: Callable[[dict[str, Any]], dict[str, Any]] | None  # None: order_id in the path
    act: Callable[[Ledger, dict[str, Any], bool], tuple[Answer, bool]]
    can_decline: bool = False


RESERVE = Operation("reserve", validate_reservation, reserve, can_decline=True)
RELEASE = Operation("release", None, release)
CHARGE = Operation("charge", validate_charge, charge, can_decline=True)
REFUND = Operation("refund", validate_refund, refund)
