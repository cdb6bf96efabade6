"""Who may read the metrics: a loopback client, or one holding the metrics token.

Used by `/metrics` on the web process (Django's `request.META`) and by a worker's own
metrics port (the WSGI environ): both are WSGI environments, with the same keys.

A loopback client that a proxy forwarded is not trusted as local: behind a reverse proxy
on the same host every client arrives from 127.0.0.1, and the proxy's forwarding headers
are the only sign of it. The token, `DUALSEND_METRICS_TOKEN`, is sent as
`Authorization: Bearer <token>` and compared in constant time.
"""

import hmac
import ipaddress
from collections.abc import Mapping
from typing import Any

from django.conf import settings

FORBIDDEN_CODE = "forbidden"
FORBIDDEN_MESSAGE = (
    "metrics are served to loopback clients, or with the metrics token as a bearer token"
)
# Headers a reverse proxy adds: their presence says the client is not really local.
FORWARDING_HEADERS = (
    "HTTP_FORWARDED",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_REAL_IP",
)


def may_read_metrics(environ: Mapping[str, Any]) -> bool:
    """Whether this request may read the metrics (see the module docstring)."""
    return has_metrics_token(environ) or is_local(environ)


def has_metrics_token(environ: Mapping[str, Any]) -> bool:
    token = settings.DUALSEND_METRICS_TOKEN
    if not token:
        return False
    scheme, _, offered = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(offered.strip().encode(), token.encode())


def is_local(environ: Mapping[str, Any]) -> bool:
    """A client on this machine, talking to us directly (no proxy's headers)."""
    if any(environ.get(header) for header in FORWARDING_HEADERS):
        return False
    return is_loopback_address(str(environ.get("REMOTE_ADDR", "")))


def is_loopback_address(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4 loopback mapped into IPv6 (a dual-stack socket's)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
