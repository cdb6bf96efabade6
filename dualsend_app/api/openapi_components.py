"""The reusable parts of the OpenAPI document (openapi.py): schemas, parameters, headers and
the error answers every operation shares.

Limits and enumerations come from the code that enforces them (validation.py, listing.py,
the models' choices), so the document cannot state a limit the API does not keep. Every
schema of an answer forbids fields it does not name: a field added to an answer and not
to the document fails tests/test_openapi.py.
"""

from typing import Any

from dualsend_app.models import Order, Send

from . import errors, idempotency, listing, validation

JSON = "application/json"
SCHEMAS = "#/components/schemas/"
NULLABLE_DATETIME = {"type": ["string", "null"], "format": "date-time"}

# Every `error.code` the API answers with, and what it means.
ERROR_CODES = {
    "unauthorized": "401: no bearer token, or not one of DUALSEND_API_TOKENS",
    "rate_limited": "429: the client is over its rate; retry after Retry-After seconds",
    "unsupported_media_type": "415: the body is not application/json in UTF-8",
    "payload_too_large": "413: the body is over the size limit",
    "invalid_json": "400: the body is not a JSON object (or not JSON at all)",
    "invalid_fields": "422: `fields` names every invalid field or query parameter",
    "idempotency_key_reused": "422: this Idempotency-Key was used with another body",
    "idempotency_in_progress": "409: the first request with this key is still being created",
    "not_found": "404: no such order for this client",
    "method_not_allowed": "405: the path does not serve this method; see Allow",
    "internal_error": "500: a fault of ours that has no name yet; see the server log",
    "service_unavailable": "503: a dependency (database, broker, Redis) is down; retry",
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"{SCHEMAS}{name}"}


def error_schema(*codes: str) -> dict[str, Any]:
    """The one error shape, with `error.code` narrowed to `codes`."""
    return {
        "allOf": [
            ref("Error"),
            {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}},
        ]
    }


def error_example(code: str, message: str, fields: dict[str, str] | None = None) -> Any:
    return {"value": {"error": errors.error_body(code, message, fields=fields)}}


def headers(*names: str) -> dict[str, Any]:
    """X-Request-ID (on every answer) and the headers `names`."""
    return {name: {"$ref": f"#/components/headers/{name}"} for name in ("X-Request-ID", *names)}


def error_response(
    description: str, codes: tuple[str, ...], examples: dict[str, Any], *header_names: str
) -> dict[str, Any]:
    return {
        "description": description,
        "headers": headers(*header_names),
        "content": {JSON: {"schema": error_schema(*codes), "examples": examples}},
    }


def schemas() -> dict[str, Any]:
    item = {
        "type": "object",
        "additionalProperties": False,
        "required": list(validation.ITEM_FIELDS),
        "properties": {
            "sku": {"type": "string", "minLength": 1, "maxLength": validation.MAX_SKU_LENGTH},
            "quantity": {"type": "integer", "minimum": 1, "maximum": validation.MAX_QUANTITY},
        },
    }
    amount = {
        "type": "integer",
        "minimum": 1,
        "maximum": validation.MAX_AMOUNT,
        "description": "In minor units (cents).",
    }
    order_fields = {
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": validation.MAX_ITEMS,
            "items": ref("Item"),
        },
        "amount": amount,
        "currency": {
            "type": "string",
            "pattern": "^[A-Za-z]{3}$",
            "description": "ISO 4217, any case; stored and shown lower-case.",
        },
        "payment_source": {
            "type": "string",
            "minLength": 1,
            "maxLength": validation.MAX_PAYMENT_SOURCE_LENGTH,
            "description": "The card token for the payment partner (printable characters). "
            "Never shown back whole.",
        },
    }
    return {
        "Item": item,
        "OrderRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": list(validation.ORDER_FIELDS),
            "properties": order_fields,
        },
        "BatchOrder": {
            "type": "object",
            "additionalProperties": False,
            "required": [*validation.ORDER_FIELDS, "idempotency_key"],
            "properties": order_fields
            | {"idempotency_key": ref_key("this order's key, required, unique in the batch")},
        },
        "BatchRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["orders"],
            "properties": {
                "orders": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": validation.MAX_BATCH_ORDERS,
                    "description": "At most as many orders as the client's rate allows at "
                    "once (50 at the default 50/second): a batch of n orders counts n requests.",
                    "items": ref("BatchOrder"),
                }
            },
        },
        "ShownPayload": {
            "type": "object",
            "additionalProperties": False,
            "required": list(validation.ORDER_FIELDS),
            "properties": order_fields
            | {
                "currency": {"type": "string", "pattern": "^[a-z]{3}$"},
                "payment_source": {
                    "type": "string",
                    "pattern": "^(••••.{0,4})?$",
                    "description": "Masked: four dots and at most the last 4 characters; "
                    "empty once the charge and any refund are final.",
                },
            },
        },
        "Send": send_schema(),
        "Order": order_schema(),
        "OrderPage": {
            "type": "object",
            "additionalProperties": False,
            "required": ["results", "next"],
            "properties": {
                "results": {"type": "array", "maxItems": listing.MAX_LIMIT, "items": ref("Order")},
                "next": {
                    "type": ["string", "null"],
                    "description": "The next page's relative URL (same filters and limit, "
                    "a cursor); null on the last page.",
                },
            },
        },
        "BatchResult": batch_result_schema(),
        "BatchResponse": {
            "type": "object",
            "additionalProperties": False,
            "required": ["results"],
            "properties": {"results": {"type": "array", "items": ref("BatchResult")}},
        },
        "ErrorBody": {
            "type": "object",
            "additionalProperties": False,
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "enum": list(ERROR_CODES),
                    "description": "; ".join(f"`{c}` {m}" for c, m in ERROR_CODES.items()),
                },
                "message": {"type": "string", "description": "For a human; may change."},
                "fields": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "invalid_fields only: each invalid field or parameter "
                    "(`items[2].quantity`, `Idempotency-Key`, `limit`) and what is wrong.",
                },
            },
        },
        "Error": {
            "type": "object",
            "additionalProperties": False,
            "required": ["error"],
            "properties": {"error": ref("ErrorBody")},
        },
    }


def ref_key(description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        "pattern": "^[ -~]+$",
        "description": f"Printable ASCII: {description}.",
    }


def send_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "operation",
            "status",
            "failure_kind",
            "attempts",
            "last_status_code",
            "remote_id",
            "error",
            "idempotency_key",
            "first_attempt_at",
            "last_attempt_at",
            "finished_at",
        ],
        "properties": {
            "operation": {"enum": Send.Operation.values},
            "status": {"enum": Send.Status.values},
            "failure_kind": {
                "enum": Send.FailureKind.values,
                "description": "A failed send: `declined` a definite no, `unknown` possibly "
                "done, `not_sent` never called; empty otherwise.",
            },
            "attempts": {"type": "integer", "minimum": 0, "description": "HTTP calls made."},
            "last_status_code": {"type": ["integer", "null"]},
            "remote_id": {"type": "string", "description": "reservation_id, charge_id, …"},
            "error": {"type": "string"},
            "idempotency_key": {
                "type": "string",
                "description": "The key dualsend sends to the partner on every attempt.",
            },
            "first_attempt_at": NULLABLE_DATETIME,
            "last_attempt_at": NULLABLE_DATETIME,
            "finished_at": NULLABLE_DATETIME,
        },
    }


def order_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "id",
            "status",
            "status_reason",
            "correlation_id",
            "created_at",
            "dispatched_at",
            "settled_at",
            "payload",
            "url",
            "sends",
        ],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "status": {
                "enum": Order.Status.values,
                "description": "Final: " + ", ".join(Order.FINAL_STATUSES) + ".",
            },
            "status_reason": {"type": "string"},
            "correlation_id": {
                "type": "string",
                "description": "The client's X-Request-ID when it sent a sane one.",
            },
            "created_at": {"type": "string", "format": "date-time"},
            "dispatched_at": NULLABLE_DATETIME,
            "settled_at": NULLABLE_DATETIME,
            "payload": ref("ShownPayload"),
            "url": {"type": "string", "description": "/api/orders/<id>"},
            "sends": {"type": "array", "items": ref("Send")},
        },
    }


def batch_result_schema() -> dict[str, Any]:
    index = {"type": "integer", "minimum": 0, "description": "The order's place in the batch."}
    return {
        "oneOf": [
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["index", "status", "location", "order"],
                "properties": {
                    "index": index,
                    "status": {"enum": [202, 200], "description": "202 created, 200 replayed"},
                    "location": {"type": "string"},
                    "order": ref("Order"),
                },
            },
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["index", "status", "error"],
                "properties": {
                    "index": index,
                    "status": {
                        "enum": [400, 409, 422],
                        "description": "The code the single call would answer this order.",
                    },
                    "error": ref("ErrorBody"),
                    "retry_after": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "409 only: seconds before sending it again.",
                    },
                },
            },
        ]
    }


def header_components() -> dict[str, Any]:
    return {
        "X-Request-ID": {
            "required": True,
            "description": "The request's id: the client's X-Request-ID when it is sane "
            "(1 to 128 of A-Z a-z 0-9 . _ : -), else a new one.",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
        },
        "Retry-After": {
            "required": True,
            "description": "Seconds to wait before sending the same request again.",
            "schema": {"type": "integer", "minimum": 1},
        },
        "Location": {
            "required": True,
            "description": "The order's URL.",
            "schema": {"type": "string"},
        },
        "WWW-Authenticate": {"required": True, "schema": {"type": "string"}},
        "Allow": {
            "required": True,
            "description": "The methods the path serves.",
            "schema": {"type": "string"},
        },
    }


def parameter_components() -> dict[str, Any]:
    return {
        "RequestId": {
            "name": "X-Request-ID",
            "in": "header",
            "description": "Your id for this request: it becomes the order's correlation id "
            "(sent to both partners) and is echoed back. Ignored unless 1 to 128 of "
            "A-Z a-z 0-9 . _ : -",
            "schema": {"type": "string"},
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "description": "Send the same request again with the same key and it is created "
            "once: a replay answers 200 with the order. Keys are per client.",
            "schema": ref_key("1 to 255 characters"),
        },
        "OrderId": {
            "name": "order_id",
            "in": "path",
            "required": True,
            "description": "The order's id; an unknown or malformed one, or another "
            "client's, answers 404.",
            "schema": {"type": "string", "format": "uuid"},
        },
        "Wait": {
            "name": "wait",
            "in": "query",
            "description": "Hold the answer until the order is final or this many seconds "
            "passed (capped at DUALSEND_MAX_WAIT_SECONDS, 30 by default).",
            "schema": {"type": "number", "minimum": 0},
        },
    } | list_parameter_components()


def list_parameter_components() -> dict[str, Any]:
    moment = {"type": "string", "format": "date-time"}
    return {
        "Status": {
            "name": "status",
            "in": "query",
            "description": "Only orders in these statuses; repeat the parameter for several.",
            "style": "form",
            "explode": True,
            "schema": {"type": "array", "items": {"enum": Order.Status.values}},
        },
        "CreatedAfter": {
            "name": "created_after",
            "in": "query",
            "description": "Only orders created at or after this instant (inclusive). ISO "
            "8601 with a UTC offset, e.g. 2025-01-31T12:00:00Z; encode + as %2B.",
            "schema": moment,
        },
        "CreatedBefore": {
            "name": "created_before",
            "in": "query",
            "description": "Only orders created strictly before this instant; must be "
            "later than created_after.",
            "schema": moment,
        },
        "Limit": {
            "name": "limit",
            "in": "query",
            "description": f"Orders per page (over {listing.MAX_LIMIT}: 422).",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": listing.MAX_LIMIT,
                "default": listing.DEFAULT_LIMIT,
            },
        },
        "Cursor": {
            "name": "cursor",
            "in": "query",
            "description": "Opaque: copy the whole `next` link rather than build it. Good "
            "for the client it was given to only; edited, 422.",
            "schema": {"type": "string"},
        },
    }
