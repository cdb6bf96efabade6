"""How `payment_source` is shown: never whole, in any answer of the API or page of the admin.

    "tok_visa"               → "••••visa"
    "pm_1Nq8XYZ2eZvKYlo2"    → "••••Ylo2"
    "tok_1"  (under 8)       → "••••"       (showing 4 would show most of it)
    ""       (blanked)       → ""

At most the last 4 characters show, and only when at least as many stay hidden; the mask
is always four dots, so it does not tell the length either. Only what is shown is masked:
the stored order and the charge's request body keep the source (the charge's retries
send the very same bytes) until the order is final and the source is blanked.
"""

import json
from typing import Any

from .models import Send

MASK = "••••"
SHOWN_CHARACTERS = 4
# Shorter sources are masked whole: their last 4 characters would be half of them or more.
MIN_LENGTH_TO_SHOW_END = 2 * SHOWN_CHARACTERS
# The charge's request body names the source this way (partners/payment.py).
CHARGE_SOURCE_FIELD = "source"
HIDDEN_BODY = "(hidden: it holds a payment source)"


def mask_payment_source(source: Any) -> str:
    """The source as it may be shown: its last 4 characters at most, behind a mask."""
    if not isinstance(source, str):
        return MASK if source else ""
    if not source:
        return ""
    if len(source) < MIN_LENGTH_TO_SHOW_END:
        return MASK
    return MASK + source[-SHOWN_CHARACTERS:]


def masked_payload(payload: Any) -> Any:
    """A copy of an order's payload with `payment_source` masked (other fields as they are)."""
    if not isinstance(payload, dict) or "payment_source" not in payload:
        return payload
    return payload | {"payment_source": mask_payment_source(payload["payment_source"])}


def masked_request_body(operation: str, body: str) -> str:
    """A send's request body as it may be shown: a charge's `source` masked.

    Same layout as the stored bytes (compact JSON, sorted keys) but for the masked value;
    a charge body that is not the JSON object we build is hidden whole.
    """
    if operation != Send.Operation.PAYMENT_CHARGE or not body:
        return body
    try:
        document = json.loads(body)
    except ValueError:
        return HIDDEN_BODY
    if not isinstance(document, dict):
        return HIDDEN_BODY
    if CHARGE_SOURCE_FIELD in document:
        document[CHARGE_SOURCE_FIELD] = mask_payment_source(document[CHARGE_SOURCE_FIELD])
    return json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
