"""The client's Idempotency-Key on POST /api/orders: create once, replay after.

Keys are scoped per client (the token's `client_id`). A request is "the same" when its
fingerprint is: sha256 over the canonical JSON of the *normalized* payload, so key order,
white space and the case of `currency` ("USD" and "usd" are stored alike) do not matter.

    no key                         → create
    key unseen                     → create
    key seen, same fingerprint     → replay: 200 with the order as it stands now
    key seen, other fingerprint    → 422 idempotency_key_reused
    key being created right now    → 409 idempotency_in_progress

Concurrent duplicates meet on the unique constraint (client, idempotency_key): the loser's
insert fails, and it reads the winner's order. On PostgreSQL the loser waits for the
winner to commit, at most the intake's lock timeout (`orders.create_order`): a winner
that commits in time makes the loser a replay (200); one still open past it makes the
loser a 409 with Retry-After. (On SQLite the write lock serializes the transactions.)
"""

import hashlib
import json
import logging
from collections.abc import Collection
from enum import StrEnum
from typing import Any

from django.db import IntegrityError, OperationalError
from psycopg.errors import LockNotAvailable

from dualsend_app import log_context, orders, row_reads
from dualsend_app.models import Order

from . import errors

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
KEY_MESSAGE = f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"


class IntakeResult(StrEnum):
    """What POST /api/orders did with a request: made a new order, or answered an old one."""

    CREATED = "created"
    REPLAYED = "replayed"


def parse_key(raw: str | None) -> tuple[str, str | None]:
    """(key, problem): '' when the header is absent; a problem message when it is unusable."""
    if raw is None:
        return "", None
    key = raw.strip()
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= char <= "~" for char in key):
        return "", KEY_MESSAGE
    return key, None


def fingerprint(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# `create_or_replay(existing=...)` when the caller has not looked the key up.
LOOK_IT_UP = object()


def create_or_replay(
    *,
    client: str,
    key: str,
    payload: dict[str, Any],
    correlation_id: str,
    existing: Order | object | None = LOOK_IT_UP,
) -> tuple[IntakeResult, Order]:
    """(IntakeResult, order) for a validated request; ApiError 422 or 409 as in the table above.

    Works as well inside a caller's transaction (POST /api/orders/batch creates all its
    orders in one): `orders.create_order`'s block is then a savepoint of it, so a lost race
    or a lock wait past the timeout undoes only this order's rows, the caller's
    transaction goes on, and the order is dispatched once the caller commits.
    `existing`: the order of this key, or None, when the caller looked it up already
    (`orders_by_key`, a batch's keys in one query).
    """
    request_fingerprint = fingerprint(payload)
    if key:
        if existing is LOOK_IT_UP:
            existing = _find(client, key)
        if existing is not None:
            return _replay(existing, request_fingerprint)
    try:
        order = orders.create_order(
            client=client,
            idempotency_key=key,
            fingerprint=request_fingerprint,
            payload=payload,
            correlation_id=correlation_id,
        )
    except IntegrityError:
        if not key:
            raise
        existing = _find(client, key)
        if existing is None:
            logger.info("idempotency key still in progress")
            raise errors.idempotency_in_progress() from None
        return _replay(existing, request_fingerprint)
    except OperationalError as exc:
        if not (key and isinstance(exc.__cause__, LockNotAvailable)):
            raise
        # The first request with this key is still being created and has not committed
        # within the intake's lock timeout: the client tries again shortly.
        logger.info("idempotency key still in progress (lock)")
        raise errors.idempotency_in_progress() from None
    return IntakeResult.CREATED, order


def answered_as_written(outcome: IntakeResult, order: Order) -> bool:
    """True when this request created `order` and holds its sends as it wrote them: the
    answer is made from those rows, not read back (POST /api/orders and each order of a
    batch). A replay is read as it stands now."""
    return outcome == IntakeResult.CREATED and order.new_sends is not None


def orders_by_key(client: str, keys: Collection[str]) -> dict[str, Order]:
    """The client's orders created with any of `keys`, by key: one query for a batch,
    where a look per order was a round trip for each of up to 100."""
    if not keys:
        return {}
    found = Order.objects.filter(client=client, idempotency_key__in=list(keys))
    return {order.idempotency_key: order for order in found}


def _find(client: str, key: str) -> Order | None:
    return row_reads.order_by_key(client, key)


def _replay(order: Order, request_fingerprint: str) -> tuple[IntakeResult, Order]:
    with log_context.bound(order_id=order.pk):
        if order.request_fingerprint != request_fingerprint:
            logger.info("idempotency key reused with another body")
            raise errors.idempotency_key_reused()
        logger.info("replayed (the order's own correlation id: %s)", order.correlation_id)
    return IntakeResult.REPLAYED, order
