"""One JSON error shape for every answer of the API that is not a success.

    {"error": {"code": "invalid_fields", "message": "...", "fields": {"amount": "..."}}}

`fields` is present only on a 422 that names invalid fields. Code raises `ApiError`;
the view wrapper turns it into a response with `error_response`.
"""

from collections.abc import Iterable

from django.http import JsonResponse


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


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    fields: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    error = {"code": code, "message": message}
    if fields:
        error["fields"] = dict(sorted(fields.items()))
    response = JsonResponse({"error": error}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


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
