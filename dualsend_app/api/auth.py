"""The bearer token check of the API, and the client id idempotency keys are scoped to.

A token is compared with every configured token in constant time (`hmac.compare_digest`).
The token itself is never stored nor logged: an order records `client_id(token)`, a short
sha256 hex of it. Rotating a token therefore starts a new idempotency scope.
"""

import hashlib
import hmac

from django.conf import settings
from django.http import HttpRequest

from . import errors

CLIENT_ID_LENGTH = 16  # hex characters: 64 bits tell a handful of tokens apart


def client_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:CLIENT_ID_LENGTH]


def authenticate(request: HttpRequest) -> str:
    """The client id of the request's bearer token; ApiError 401 when it is missing or wrong."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise errors.unauthorized()
    presented_bytes = presented.encode()
    matched = None
    # No early exit: the time taken does not tell which configured token was close.
    for token in settings.DUALSEND_API_TOKENS:
        if token and hmac.compare_digest(token.encode(), presented_bytes):
            matched = token
    if matched is None:
        raise errors.unauthorized()
    return client_id(matched)
