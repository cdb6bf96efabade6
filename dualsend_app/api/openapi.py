"""The OpenAPI 3.1 document of dualsend's API, built here and served at GET /api/schema.

It is the contract users code against: every operation under /api/, every answer code each
one really gives, the error shape, the headers, the bearer scheme. tests/test_openapi.py
sends real requests to a running gunicorn and validates every answer against it, and fails
on any route of project/urls.py under /api/ that it does not describe. The reusable parts
(schemas, parameters, headers) are in openapi_components.py, the examples in
openapi_examples.py.
"""

from typing import Any

from django.conf import settings

from . import listing, validation
from .openapi_components import (
    JSON,
    error_example,
    error_response,
    header_components,
    headers,
    parameter_components,
    ref,
    schemas,
)
from .openapi_examples import BATCH_EXAMPLE, ORDER_EXAMPLE, ORDER_REQUEST_EXAMPLE

TITLE = "dualsend API"
VERSION = "1.0.0"

DESCRIPTION = """\
dualsend takes an order and sends it to two partner APIs at once (inventory: reserve;
payment: charge), waits for both outcomes and puts things right when only one succeeded.

**Auth**: every call under `/api/orders` takes `Authorization: Bearer <token>`. Each token
is a client; an order belongs to the client whose token created it and does not exist for
any other (`404`, the same answer as an unknown id). `/api/schema` and `/api/docs` are public.

**Order of checks** (the first that fails answers, and nothing is written): token `401`,
the client's rate `429`, media type `415`, size `413`, JSON syntax `400`, fields `422`
(every invalid field named), idempotency `422`/`409`.

**Errors** share one shape: `{"error": {"code": "…", "message": "…", "fields": {…}}}`,
`fields` only for `invalid_fields`. A dependency down (database, broker, Redis) answers
`503 service_unavailable` with `Retry-After`; a bare `500` only for a fault we cannot name.

**Any other method** on these paths answers `405 method_not_allowed` with an `Allow`
header (components.responses.MethodNotAllowed).

**Rate**: each client has its own rate (`DUALSEND_CLIENT_RATE_LIMIT`, 50/second by
default); every request counts, a batch of n orders counts n. Over it: `429` with
`Retry-After` in seconds.

Every answer carries `X-Request-ID`.
"""


def openapi_document() -> dict[str, Any]:
    """The whole document, as a dict ready for JSON; limits from the running settings."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": DESCRIPTION,
        },
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": "orders", "description": "Place orders and follow them."},
            {"name": "contract", "description": "This document and its page; no token."},
        ],
        "paths": {
            "/api/orders": {"post": create_order(), "get": list_orders()},
            "/api/orders/batch": {"post": create_batch()},
            "/api/orders/{order_id}": {"get": get_order()},
            "/api/schema": {"get": get_schema()},
            "/api/docs": {"get": get_docs()},
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of the server's DUALSEND_API_TOKENS.",
                }
            },
            "schemas": schemas(),
            "parameters": parameter_components(),
            "headers": header_components(),
            "responses": shared_responses(),
        },
    }


def param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def response(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def order_answer(description: str, *header_names: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": headers(*header_names),
        "content": {JSON: {"schema": ref("Order"), "examples": {"order": ORDER_EXAMPLE}}},
    }


def invalid_fields(
    example_fields: dict[str, str], *, or_key_reused: bool = False
) -> dict[str, Any]:
    """422: fields (or query parameters) named in `error.fields`; POST /api/orders also
    answers 422 for an Idempotency-Key reused with another body."""
    codes, description = ("invalid_fields",), "Invalid fields, each named in `error.fields`."
    examples = {
        "invalid_fields": error_example("invalid_fields", "some fields are invalid", example_fields)
    }
    if or_key_reused:
        codes += ("idempotency_key_reused",)
        description += " Or this Idempotency-Key was used with another body."
        examples["idempotency_key_reused"] = error_example(
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request body",
        )
    return error_response(description, codes, examples)


def common(responses: dict[str, Any]) -> dict[str, Any]:
    """`responses` and the answers any call with a token can give: 401, 429, 500, 503."""
    shared = {
        "401": response("Unauthorized"),
        "429": response("RateLimited"),
        "500": response("InternalError"),
        "503": response("ServiceUnavailable"),
    }
    return dict(sorted((responses | shared).items()))


def create_order() -> dict[str, Any]:
    return {
        "operationId": "createOrder",
        "tags": ["orders"],
        "summary": "Place an order: reserve the items and charge the amount, at once",
        "parameters": [param("IdempotencyKey"), param("RequestId")],
        "requestBody": {
            "required": True,
            "description": f"At most DUALSEND_MAX_BODY_BYTES ({settings.DUALSEND_MAX_BODY_BYTES}"
            " bytes). The same JSON document (key order and white space do not matter) "
            "with the same key is a replay.",
            "content": {JSON: {"schema": ref("OrderRequest"), "example": ORDER_REQUEST_EXAMPLE}},
        },
        "responses": common(
            {
                "202": order_answer("Accepted: saved, and sent to both partners.", "Location"),
                "200": order_answer(
                    "A replay: this key and body were seen; the order as it stands.", "Location"
                ),
                "400": response("InvalidJson"),
                "409": error_response(
                    "The first request with this key is still being created; send it again "
                    "after Retry-After.",
                    ("idempotency_in_progress",),
                    {
                        "in_progress": error_example(
                            "idempotency_in_progress",
                            "a request with this Idempotency-Key is still being processed; "
                            "retry shortly",
                        )
                    },
                    "Retry-After",
                ),
                "413": response("PayloadTooLarge"),
                "415": response("UnsupportedMediaType"),
                "422": invalid_fields(
                    {"amount": validation.AMOUNT_MESSAGE, "items[0].sku": validation.REQUIRED},
                    or_key_reused=True,
                ),
            }
        ),
    }


def list_orders() -> dict[str, Any]:
    return {
        "operationId": "listOrders",
        "tags": ["orders"],
        "summary": "The calling client's orders, newest first, a page at a time",
        "description": "Keyset pagination: follow `next` until it is null; each order shows "
        "once, also with many created in the same instant. Orders created meanwhile appear "
        "on a new first page.",
        "parameters": [
            param("Status"),
            param("CreatedAfter"),
            param("CreatedBefore"),
            param("Limit"),
            param("Cursor"),
            param("RequestId"),
        ],
        "responses": common(
            {
                "200": {
                    "description": "A page of orders, each as GET /api/orders/{order_id} shows it.",
                    "headers": headers(),
                    "content": {
                        JSON: {
                            "schema": ref("OrderPage"),
                            "example": {
                                "results": [ORDER_EXAMPLE["value"]],
                                "next": "/api/orders?status=completed&limit=1&cursor=…",
                            },
                        }
                    },
                },
                "422": invalid_fields(
                    {"limit": listing.LIMIT_MESSAGE, "status": listing.STATUS_MESSAGE}
                ),
            }
        ),
    }


def get_order() -> dict[str, Any]:
    return {
        "operationId": "getOrder",
        "tags": ["orders"],
        "summary": "An order, its status and every send",
        "parameters": [param("OrderId"), param("Wait"), param("RequestId")],
        "responses": common(
            {
                "200": order_answer("The order (after ?wait: final, or as it stands)."),
                "404": response("NotFound"),
                "422": invalid_fields({"wait": validation.WAIT_MESSAGE}),
            }
        ),
    }


def create_batch() -> dict[str, Any]:
    return {
        "operationId": "createOrdersBatch",
        "tags": ["orders"],
        "summary": f"Place 1 to {validation.MAX_BATCH_ORDERS} orders, answered order by order",
        "description": "The whole request is checked as POST /api/orders checks one order "
        "(401, 429, 415, 413, 400, then 422 for the envelope); any of these answers the "
        "batch and nothing is written. Then each order is answered on its own, in "
        "request order, with the code the single call would give it. The new orders "
        "are created in one transaction; a dependency down answers the whole batch 503.",
        "parameters": [param("RequestId")],
        "requestBody": {
            "required": True,
            "description": "At most DUALSEND_BATCH_MAX_BODY_BYTES "
            f"({settings.DUALSEND_BATCH_MAX_BODY_BYTES} bytes).",
            "content": {
                JSON: {
                    "schema": ref("BatchRequest"),
                    "example": {
                        "orders": [ORDER_REQUEST_EXAMPLE | {"idempotency_key": "order-43"}]
                    },
                }
            },
        },
        "responses": common(
            {
                "207": {
                    "description": "One result per order, in request order.",
                    "headers": headers(),
                    "content": {JSON: {"schema": ref("BatchResponse"), "example": BATCH_EXAMPLE}},
                },
                "400": response("InvalidJson"),
                "413": response("PayloadTooLarge"),
                "415": response("UnsupportedMediaType"),
                "422": invalid_fields({"orders": f"is empty; {validation.BATCH_ORDERS_MESSAGE}"}),
            }
        ),
    }


def get_schema() -> dict[str, Any]:
    return {
        "operationId": "getSchema",
        "tags": ["contract"],
        "summary": "This document (OpenAPI 3.1, JSON)",
        "security": [],
        "responses": {
            "200": {
                "description": "The OpenAPI document.",
                "headers": headers(),
                "content": {JSON: {"schema": {"type": "object", "required": ["openapi"]}}},
            }
        },
    }


def get_docs() -> dict[str, Any]:
    return {
        "operationId": "getDocs",
        "tags": ["contract"],
        "summary": "This document as a page (Swagger UI, served by dualsend itself)",
        "security": [],
        "responses": {
            "200": {
                "description": "An HTML page.",
                "headers": headers(),
                "content": {"text/html": {"schema": {"type": "string"}}},
            }
        },
    }


def shared_responses() -> dict[str, Any]:
    max_body = settings.DUALSEND_MAX_BODY_BYTES
    return {
        "Unauthorized": error_response(
            "No bearer token, or not one of the server's.",
            ("unauthorized",),
            {"unauthorized": error_example("unauthorized", "missing or invalid bearer token")},
            "WWW-Authenticate",
        ),
        "RateLimited": error_response(
            "The client is over its rate; other clients are not affected.",
            ("rate_limited",),
            {
                "rate_limited": error_example(
                    "rate_limited", "over this client's rate of 50/second; retry after 1 s"
                )
            },
            "Retry-After",
        ),
        "InvalidJson": error_response(
            "The body is not JSON, or not a JSON object.",
            ("invalid_json",),
            {"invalid_json": error_example("invalid_json", "the body must be a JSON object")},
        ),
        "PayloadTooLarge": error_response(
            "The body is over the size limit.",
            ("payload_too_large",),
            {
                "too_large": error_example(
                    "payload_too_large", f"the request body is over {max_body} bytes"
                )
            },
        ),
        "UnsupportedMediaType": error_response(
            "The body is not application/json, or not UTF-8.",
            ("unsupported_media_type",),
            {
                "not_json": error_example(
                    "unsupported_media_type", "Content-Type must be application/json"
                )
            },
        ),
        "NotFound": error_response(
            "No such order for this client (unknown, malformed, or another client's id).",
            ("not_found",),
            {"not_found": error_example("not_found", "no such order")},
        ),
        "MethodNotAllowed": error_response(
            "The path does not serve this method (any path of this document).",
            ("method_not_allowed",),
            {
                "method_not_allowed": error_example(
                    "method_not_allowed", "DELETE is not allowed here; use GET, POST"
                )
            },
            "Allow",
        ),
        "InternalError": error_response(
            "A fault of ours that has no name yet; the server log has it.",
            ("internal_error",),
            {
                "internal_error": error_example(
                    "internal_error", "unexpected server error; see the server log"
                )
            },
        ),
        "ServiceUnavailable": error_response(
            "A dependency is down: the database (or every pooled connection busy), the "
            "broker, Redis. Send the same request again after Retry-After; with the same "
            "Idempotency-Key the order is created once.",
            ("service_unavailable",),
            {
                "database": error_example(
                    "service_unavailable", "the database is unreachable; retry shortly"
                )
            },
            "Retry-After",
        ),
    }
