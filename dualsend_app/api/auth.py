"""The bearer token check of the API: which client is calling.

A presented token is compared with every configured token in constant time
(`hmac.compare_digest`). The token itself is never stored nor logged: an order records
the client's id (its name, or a short sha256 hex of a plain token; see
`project/api_clients.py`), which scopes idempotency keys, the rate limit and who may
read the order.
"""

import hmac

from django.conf import settings
from django.http import HttpRequest

from project.api_clients import ApiClient

from . import errors


def authenticate(request: HttpRequest) -> ApiClient:
    """The client of the request's bearer token; ApiError 401 when it is missing or wrong."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise errors.unauthorized()
    presented_bytes = presented.encode()
    matched = None
    # No early exit: the time taken does not tell which configured token was close.
    for client in settings.DUALSEND_API_CLIENTS:
        if hmac.compare_digest(client.token.encode(), presented_bytes):
            matched = client
    if matched is None:
        raise errors.unauthorized()
    return matched
