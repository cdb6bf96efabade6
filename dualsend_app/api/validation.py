"""Reading and checking a request: media type, size, JSON syntax, then the fields.

The checks of POST /api/orders run in the order users rely on, and the first that fails
answers: media type (415), size (413), JSON syntax (400), fields (422, every invalid field
named). `read_json_object` covers the first three, `validate_order` the fourth.
"""

import json
import math
import re
from typing import Any, NoReturn

from django.http import HttpRequest

from . import errors

JSON_MEDIA_TYPE = "application/json"
UTF8_CHARSETS = ("utf-8", "utf8")

MAX_ITEMS = 100
MAX_SKU_LENGTH = 64
MAX_QUANTITY = 1000
# The largest integer every JSON parser (JavaScript's included) reads exactly.
MAX_AMOUNT = 2**53 - 1
ORDER_FIELDS = ("items", "amount", "currency", "payment_source")
ITEM_FIELDS = ("sku", "quantity")
CURRENCY = re.compile(r"[A-Za-z]{3}")
MAX_PAYMENT_SOURCE_LENGTH = 255

REQUIRED = "is required"
UNKNOWN = "is not an allowed field"
ITEMS_MESSAGE = f"must be a list of 1 to {MAX_ITEMS} items"
ITEM_MESSAGE = "must be an object with sku and quantity"
SKU_MESSAGE = f"must be a non-empty string of at most {MAX_SKU_LENGTH} characters"
QUANTITY_MESSAGE = f"must be an integer from 1 to {MAX_QUANTITY}"
AMOUNT_MESSAGE = f"must be a positive integer in minor units (at most {MAX_AMOUNT})"
CURRENCY_MESSAGE = "must be 3 ASCII letters (an ISO 4217 code such as usd)"
PAYMENT_SOURCE_MESSAGE = (
    f"must be a string of 1 to {MAX_PAYMENT_SOURCE_LENGTH} printable characters"
)
WAIT_MESSAGE = "must be a number of seconds, 0 or more"


class DuplicateKeyError(ValueError):
    pass


def read_json_object(request: HttpRequest, *, max_bytes: int) -> dict[str, Any]:
    """The body as a dict, after the media type (415), size (413) and syntax (400) checks."""
    _check_media_type(request)
    raw = _read_body(request, max_bytes=max_bytes)
    try:
        document = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_object_without_duplicate_keys,
            parse_constant=_reject_constant,
        )
    except UnicodeDecodeError as exc:
        raise errors.invalid_json("the body is not UTF-8") from exc
    except RecursionError as exc:
        raise errors.invalid_json("the body is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, a duplicate key, NaN, a giant number
        raise errors.invalid_json(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise errors.invalid_json("the body must be a JSON object")
    return document


def _check_media_type(request: HttpRequest) -> None:
    if request.content_type != JSON_MEDIA_TYPE:
        raise errors.unsupported_media_type(f"Content-Type must be {JSON_MEDIA_TYPE}")
    charset = request.content_params.get("charset")
    if charset is not None and charset.lower() not in UTF8_CHARSETS:
        raise errors.unsupported_media_type("JSON must be sent as UTF-8")


def _read_body(request: HttpRequest, *, max_bytes: int) -> bytes:
    """Refuse on the announced Content-Length first, then on what actually arrives.

    Content-Length can be absent or understated (chunked uploads), so at most one byte
    past the limit is read: an oversize body is refused without being held in memory.
    """
    try:
        announced = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        announced = 0
    if announced > max_bytes:
        raise errors.payload_too_large(max_bytes)
    raw = request.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise errors.payload_too_large(max_bytes)
    return raw


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # {"amount": 1, "amount": 1000} means different things to different parsers, and
    # "the same body" must not depend on which one wins: refuse it as invalid JSON.
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise DuplicateKeyError(f"duplicate key {key!r}")
        document[key] = value
    return document


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def validate_order(document: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """(normalized payload, {field: message}); the payload is None when a field is invalid.

    Every invalid field is named, items by position (`items[2].quantity`). The normalized
    payload holds exactly the known fields, with `currency` lower-cased.
    """
    problems = {name: UNKNOWN for name in document if name not in ORDER_FIELDS}
    problems |= {name: REQUIRED for name in ORDER_FIELDS if name not in document}

    items = document.get("items")
    if "items" in document:
        problems |= _item_problems(items)
    amount = document.get("amount")
    if "amount" in document and not (_is_int(amount) and 1 <= amount <= MAX_AMOUNT):
        problems["amount"] = AMOUNT_MESSAGE
    currency = document.get("currency")
    if "currency" in document and not (isinstance(currency, str) and CURRENCY.fullmatch(currency)):
        problems["currency"] = CURRENCY_MESSAGE
    source = document.get("payment_source")
    if "payment_source" in document and not _is_payment_source(source):
        problems["payment_source"] = PAYMENT_SOURCE_MESSAGE

    if problems:
        return None, problems
    payload = {
        "items": [{"sku": item["sku"], "quantity": item["quantity"]} for item in items],
        "amount": amount,
        "currency": currency.lower(),
        "payment_source": source,
    }
    return payload, {}


def _item_problems(items: Any) -> dict[str, str]:
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        return {"items": ITEMS_MESSAGE}
    problems = {}
    for index, item in enumerate(items):
        name = f"items[{index}]"
        if not isinstance(item, dict):
            problems[name] = ITEM_MESSAGE
            continue
        problems |= {f"{name}.{key}": UNKNOWN for key in item if key not in ITEM_FIELDS}
        sku = item.get("sku")
        if not (isinstance(sku, str) and 1 <= len(sku) <= MAX_SKU_LENGTH):
            problems[f"{name}.sku"] = SKU_MESSAGE if "sku" in item else REQUIRED
        quantity = item.get("quantity")
        if not (_is_int(quantity) and 1 <= quantity <= MAX_QUANTITY):
            problems[f"{name}.quantity"] = QUANTITY_MESSAGE if "quantity" in item else REQUIRED
    return problems


def _is_payment_source(value: Any) -> bool:
    # Printable: no control, format or separator characters (a newline, a NUL, a
    # zero-width space), which a card token never holds and a log or a page would render.
    return (
        isinstance(value, str)
        and 1 <= len(value) <= MAX_PAYMENT_SOURCE_LENGTH
        and value.isprintable()
    )


def _is_int(value: Any) -> bool:
    # JSON true is a Python bool, which is an int: it is not a quantity nor an amount.
    return isinstance(value, int) and not isinstance(value, bool)


def parse_wait(raw: str | None, *, cap: float) -> float:
    """?wait=N: seconds as a float, 0 when absent, capped; ApiError 422 naming `wait`."""
    if raw is None:
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise errors.invalid_fields({"wait": WAIT_MESSAGE})
    return min(seconds, cap)


# --- POST /api/orders/batch: the envelope around the orders ------------------------------

MAX_BATCH_ORDERS = 100
BATCH_FIELDS = ("orders",)
BATCH_ORDERS_MESSAGE = f"must be a list of 1 to {MAX_BATCH_ORDERS} orders"


def validate_batch(document: dict[str, Any]) -> list[Any]:
    """The `orders` list of a batch body; ApiError 422 naming what is wrong with it.

    Only the envelope is checked here: `orders` present, a list, 1 to MAX_BATCH_ORDERS
    long, and no other top-level field. Each order is checked on its own by the caller
    (`validate_order`), and answered on its own.
    """
    problems = {name: UNKNOWN for name in document if name not in BATCH_FIELDS}
    orders = document.get("orders")
    if "orders" not in document:
        problems["orders"] = f"{REQUIRED}: {BATCH_ORDERS_MESSAGE}"
    elif not isinstance(orders, list):
        problems["orders"] = f"is a JSON {_json_type(orders)}; {BATCH_ORDERS_MESSAGE}"
    elif not orders:
        problems["orders"] = f"is empty; {BATCH_ORDERS_MESSAGE}"
    elif len(orders) > MAX_BATCH_ORDERS:
        problems["orders"] = f"holds {len(orders)} orders; {BATCH_ORDERS_MESSAGE}"
    if problems:
        raise errors.invalid_fields(problems)
    return orders


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"
