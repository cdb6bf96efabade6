"""The clients of dualsend's own API, read once from `DUALSEND_API_TOKENS`.

    DUALSEND_API_TOKENS=shop:3f9c…,backoffice:a71e…,legacy-token

Comma-separated entries, each `name:token` (a named client) or a plain `token` (a client
known by its token only). Every entry is its own client; an order belongs to the client
that created it, and only that client can read it.

A client's id, stored in `Order.client` and keying its idempotency scope and its rate
limit, is:
- for a named client, its name: the token can be rotated and the client keeps its orders;
- for a plain token, the first 16 hex digits of the token's sha256, as before names
  existed, so the orders of an existing deployment keep their owner. Naming a plain
  token later therefore starts a new scope for it.

A bad entry stops start-up with ImproperlyConfigured naming DUALSEND_API_TOKENS, the
entry's position and (when it has one) its name; a token is never part of the message.
The text before the first `:` is the name, so a token holding `:` needs a name in front.

Pure on purpose: `project/settings.py` imports it, so it must not import the app.
"""

import hashlib
import re
from dataclasses import dataclass, field

from django.core.exceptions import ImproperlyConfigured

from project.partner_settings import parse_rate

VARIABLE = "DUALSEND_API_TOKENS"
CLIENT_ID_LENGTH = 16  # hex characters: 64 bits tell a handful of tokens apart
# A name is an id in the database (Order.client holds 64) and in logs: plain words only.
# 16 hex digits are the ids of plain tokens, so a name may not look like one.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TOKEN_ID = re.compile(rf"[0-9a-f]{{{CLIENT_ID_LENGTH}}}")


@dataclass(frozen=True)
class ApiClient:
    """One client of the API: its id, its name when it has one, and its bearer token."""

    id: str
    name: str
    # A secret: never in a repr, so never in a log line, a traceback or the debug page.
    token: str = field(repr=False)

    @property
    def label(self) -> str:
        """What the admin and the logs call the client: its name, else its id."""
        return self.name or self.id


def token_client_id(token: str) -> str:
    """The id of a plain token's client: a short sha256 hex of the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:CLIENT_ID_LENGTH]


def parse_api_clients(text: str) -> tuple[ApiClient, ...]:
    """Every client of `DUALSEND_API_TOKENS`; ImproperlyConfigured for a bad entry.

    An empty or blank value is no client at all (settings decide whether that is allowed).
    """
    if not text.strip():
        return ()
    clients = []
    for position, entry in enumerate(text.split(","), start=1):
        clients.append(_parse_entry(entry.strip(), position))
    _refuse_duplicates(clients)
    return tuple(clients)


def _parse_entry(entry: str, position: int) -> ApiClient:
    where = f"{VARIABLE}: entry {position}"
    if not entry:
        raise ImproperlyConfigured(f"{where} is empty (a stray comma?)")
    name, separator, token = entry.partition(":")
    if not separator:
        name, token = "", entry
    else:
        if not name:
            raise ImproperlyConfigured(f"{where} has an empty name before ':'")
        if not NAME.fullmatch(name):
            raise ImproperlyConfigured(
                f"{where}: the name {name!r} must be 1 to 64 of A-Z a-z 0-9 . _ - "
                "starting with a letter or digit"
            )
        if TOKEN_ID.fullmatch(name):
            raise ImproperlyConfigured(
                f"{where}: the name {name!r} looks like the id of a plain token "
                f"({CLIENT_ID_LENGTH} hex digits); choose another"
            )
        where = f"{where} (client {name!r})"
    if not token:
        raise ImproperlyConfigured(f"{where} has an empty token")
    # Tokens travel in an HTTP header: printable ASCII, no white space, nothing to trim.
    if not all("!" <= char <= "~" for char in token):
        raise ImproperlyConfigured(
            f"{where}: the token holds white space, a control character or a non-ASCII "
            "character; a token is printable ASCII without spaces"
        )
    return ApiClient(id=name or token_client_id(token), name=name, token=token)


def _refuse_duplicates(clients: list[ApiClient]) -> None:
    seen_tokens: dict[str, int] = {}
    seen_ids: dict[str, int] = {}
    for position, client in enumerate(clients, start=1):
        first = seen_tokens.setdefault(client.token, position)
        if first != position:
            raise ImproperlyConfigured(
                f"{VARIABLE}: entries {first} and {position} hold the same token"
            )
        first = seen_ids.setdefault(client.id, position)
        if first != position:
            what = f"the name {client.name!r}" if client.name else "the same client id"
            raise ImproperlyConfigured(f"{VARIABLE}: entries {first} and {position} use {what}")


def parse_client_rate(variable: str, value: str) -> str:
    """`value` when it is a `limits` rate; ImproperlyConfigured naming `variable` otherwise."""
    try:
        parse_rate(value)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"{variable} is not a rate: {value!r} ({exc}); write it as N/s, N/m or N/h, "
            "or in the limits syntax: '50/second', '50 per minute'"
        ) from None
    return value
