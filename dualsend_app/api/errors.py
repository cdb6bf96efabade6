"""One JSON error shape for every answer of the API that is not a success.

    {"error": {"code": "invalid_fields", "message": "...", "fields": {"amount": "..."}}}

`fields` is present only on a 422 that names invalid fields. Code raises `ApiError`;
the view wrapper turns it into a response with `error_response`. A dependency that is
down (the database, the broker, Redis) surfaces as an exception of its own driver:
`unavailable_for` names it, and the wrapper answers 503 with Retry-After, never 500.
"""

from collections.abc import Iterable
from typing import Any

import kombu.exceptions
import psycopg.errors
import redis.exceptions
from django import db
from django.http import JsonResponse
from psycopg_pool import PoolTimeout

# How long a client should wait before it tries again after a 503. A database or Redis
# restart, a failover, a burst that filled the pool: seconds, not minutes.
RETRY_AFTER_SECONDS = 2


class ApiError(Exception):
    """An answer other than success, raised anywhere below a view and rendered once."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers or {}

    def response(self) -> JsonResponse:
        return error_response(
            self.status, self.code, self.message, fields=self.fields, headers=self.headers
        )

    def body(self) -> dict[str, Any]:
        """The `error` object of the shape above (a batch answers one per order)."""
        return error_body(self.code, self.message, fields=self.fields)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    fields: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    response = JsonResponse({"error": error_body(code, message, fields=fields)}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def error_body(code: str, message: str, *, fields: dict[str, str] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = dict(sorted(fields.items()))
    return error


def unauthorized() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "missing or invalid bearer token",
        headers={"WWW-Authenticate": 'Bearer realm="dualsend"'},
    )


def unsupported_media_type(message: str) -> ApiError:
    return ApiError(415, "unsupported_media_type", message)


def payload_too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the request body is over {limit} bytes")


def invalid_json(message: str) -> ApiError:
    return ApiError(400, "invalid_json", message)


def invalid_fields(fields: dict[str, str]) -> ApiError:
    return ApiError(422, "invalid_fields", "some fields are invalid", fields=fields)


def idempotency_key_reused() -> ApiError:
    return ApiError(
        422,
        "idempotency_key_reused",
        "this Idempotency-Key was already used with a different request body",
    )


def idempotency_in_progress() -> ApiError:
    return ApiError(
        409,
        "idempotency_in_progress",
        "a request with this Idempotency-Key is still being processed; retry shortly",
        headers={"Retry-After": "1"},
    )


def not_found() -> ApiError:
    return ApiError(404, "not_found", "no such order")


def method_not_allowed(method: str, allowed: Iterable[str]) -> ApiError:
    return ApiError(
        405,
        "method_not_allowed",
        f"{method} is not allowed here; use {', '.join(allowed)}",
        headers={"Allow": ", ".join(allowed)},
    )


def internal_error() -> ApiError:
    return ApiError(500, "internal_error", "unexpected server error; see the server log")


def service_unavailable(what: str, retry_after: int = RETRY_AFTER_SECONDS) -> ApiError:
    """503: `what` ("the database is unreachable") cannot serve this request right now."""
    return ApiError(
        503,
        "service_unavailable",
        f"{what}; retry shortly",
        headers={"Retry-After": str(retry_after)},
    )


def unavailable_for(exc: BaseException) -> ApiError | None:
    """The 503 for an exception that says a dependency is down, or None for any other.

    Django wraps the driver's errors (`django.db.OperationalError` and `InterfaceError`)
    and keeps the original as `__cause__`: psycopg_pool's PoolTimeout (no connection within
    DATABASE_POOL_TIMEOUT: the pool is saturated, or the database unreachable) and
    psycopg's QueryCanceled (a statement over DATABASE_STATEMENT_TIMEOUT) are told apart
    there. The message names the dependency, never a host, a user or the driver's text.
    A programming error of ours (an IntegrityError, a ProgrammingError) is not one of these.
    """
    if isinstance(exc, db.OperationalError | db.InterfaceError):
        cause = exc.__cause__
        if isinstance(cause, PoolTimeout):
            return service_unavailable("the database is unreachable or every connection is busy")
        if isinstance(cause, psycopg.errors.QueryCanceled):
            return service_unavailable("the database did not answer in time")
        return service_unavailable("the database is unreachable")
    if isinstance(exc, kombu.exceptions.OperationalError):
        return service_unavailable("the broker is unreachable")
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return service_unavailable("Redis is unreachable")
    return None
