"""No partner credential in a text we keep: an attempt's error, a send's error.

Those texts come from outside: a partner's error message (a partner may echo the request,
`Authorization` header included) and an exception's string (which may quote a URL, with
any `user:password@` in it). `without_credentials` blanks, wherever they appear:

- every partner's credential, as configured, as a `Basic` header carries it (base64 of
  `key:`, the payment partner's form, and of the key alone) and percent-encoded;
- the token of any `Authorization: Bearer …` or `Basic …` echoed back, ours or not;
- the `user:password@` of any URL.
"""

import base64
import re
from collections.abc import Iterable
from urllib.parse import quote

from django.conf import settings

REDACTED = "[redacted]"
# Shorter "secrets" would blank ordinary words; none of ours is that short.
MIN_SCRUBBED_LENGTH = 4
# "Authorization: Bearer x", "'Authorization': 'Basic x'", "authorization=Bearer x".
_AUTHORIZATION_TOKEN = re.compile(
    r"""(authorization["']?\s*[:=]\s*["']?(?:bearer|basic)\s+)[^\s"',;]+""", re.IGNORECASE
)
_URL_USERINFO = re.compile(r"(?<=://)[^/\s@]+@")


def credential_forms(credential: str) -> set[str]:
    """The ways a credential shows on the wire: itself, in a Basic header, percent-encoded."""
    if len(credential) < MIN_SCRUBBED_LENGTH:
        return set()
    raw = credential.encode()
    return {
        credential,
        quote(credential, safe=""),
        base64.b64encode(raw + b":").decode(),
        base64.b64encode(raw).decode(),
    }


def scrub(text: str, credentials: Iterable[str]) -> str:
    """`text` with each of `credentials` (in every form) and any auth token or URL
    user info replaced by [redacted]."""
    if not text:
        return text
    forms = {form for credential in credentials for form in credential_forms(credential)}
    for form in sorted(forms, key=len, reverse=True):  # a longer form may hold a shorter
        text = text.replace(form, REDACTED)
    text = _AUTHORIZATION_TOKEN.sub(rf"\1{REDACTED}", text)
    return _URL_USERINFO.sub(f"{REDACTED}@", text)


def without_credentials(text: str) -> str:
    """`text` with no credential of any configured partner in it (see `scrub`)."""
    return scrub(text, (partner.credential for partner in settings.DUALSEND_PARTNERS.values()))
