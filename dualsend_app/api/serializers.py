"""An order, its status and every send, as the JSON of GET /api/orders/<id>.

Datetimes are ISO 8601 with their UTC offset, or null. `payment_source` is masked.
"""

import datetime
from collections.abc import Iterable
from typing import Any

from dualsend_app.masking import mask_payment_source
from dualsend_app.models import Order, Send


def order_to_dict(order: Order, sends: Iterable[Send] | None = None) -> dict[str, Any]:
    """The order and its sends (`sends`, else `order.sends`: prefetch them to read them in
    one query)."""
    if sends is None:
        sends = order.sends.all()
    return {
        "id": str(order.pk),
        "status": order.status,
        "status_reason": order.status_reason,
        "correlation_id": order.correlation_id,
        "created_at": _iso(order.created_at),
        "dispatched_at": _iso(order.dispatched_at),
        "settled_at": _iso(order.settled_at),
        "payload": {
            "items": order.payload["items"],
            "amount": order.payload["amount"],
            "currency": order.payload["currency"],
            # Never whole: the last 4 characters at most (masking.py).
            "payment_source": mask_payment_source(order.payload.get("payment_source")),
        },
        "url": order.get_absolute_url(),
        "sends": [send_to_dict(send) for send in sends],
    }


def send_to_dict(send: Send) -> dict[str, Any]:
    return {
        "operation": send.operation,
        "status": send.status,
        "failure_kind": send.failure_kind,
        # The number of HTTP calls made for this send.
        "attempts": send.attempts,
        "last_status_code": send.last_status_code,
        "remote_id": send.remote_id,
        "error": send.error,
        "idempotency_key": str(send.idempotency_key),
        "first_attempt_at": _iso(send.first_attempt_at),
        "last_attempt_at": _iso(send.last_attempt_at),
        "finished_at": _iso(send.finished_at),
    }


def _iso(moment: datetime.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
