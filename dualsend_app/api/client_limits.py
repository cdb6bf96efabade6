"""What one client may take of the API: its request rate, and the web threads ?wait holds.

The rate (`DUALSEND_CLIENT_RATE_LIMIT`, default "50/second") is per client and shared by
every web process: `limits`' moving window in Redis, keyed by the client's id (the
algorithm our pace to the partners uses too, `resilience/ratelimit.py`). Every
authenticated request counts, POST and GET alike (a batch of n orders counts n); a
client over its rate gets 429 `rate_limited` with `Retry-After` (whole seconds, at least
1: when its oldest request leaves the window), and no other client is affected. When
Redis does not answer, the request goes ahead (fail open, a warning at most every 30 s
per process): an outage of the limiter's store must not become an outage of the API.

The ?wait holders are counted per process (`DUALSEND_MAX_WAITERS`): past the cap, a GET
with ?wait is answered at once with the order as it stands, so long polls never take
every web thread from the requests that create orders.
"""

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from django.conf import settings
from limits.strategies import MovingWindowRateLimiter

from project.partner_settings import parse_rate

from ..resilience.redis_client import WarningThrottle, moving_window_limiter
from . import errors

logger = logging.getLogger(__name__)

# During an outage every request would log the same warning: once per this, per process.
UNREACHABLE_WARNING_EVERY_SECONDS = 30.0
KEY_SPACE = "clientlimit"

unreachable_warnings = WarningThrottle(UNREACHABLE_WARNING_EVERY_SECONDS)


def check_rate(client_id: str, *, cost: int = 1, counted_as: str = "") -> None:
    """Count `cost` requests of `client_id`; ApiError 429 with Retry-After when over its
    rate (`counted_as` says why the request cost more than one, for the message)."""
    item = parse_rate(settings.DUALSEND_CLIENT_RATE_LIMIT)
    try:
        limiter = _limiter()
        if limiter.hit(item, client_id, cost=cost):
            return
        reset_at = limiter.get_window_stats(item, client_id).reset_time
    except redis.RedisError as exc:
        _warn_unreachable(exc)
        return
    # When the oldest hit leaves the window: the earliest a request may fit again.
    retry_after = max(1, math.ceil(reset_at - time.time()))
    logger.info("client=%s over its rate %s", client_id, settings.DUALSEND_CLIENT_RATE_LIMIT)
    raise errors.ApiError(
        429,
        "rate_limited",
        f"{counted_as}over this client's rate of {settings.DUALSEND_CLIENT_RATE_LIMIT}; "
        f"retry after {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


def _limiter() -> MovingWindowRateLimiter:
    return moving_window_limiter(KEY_SPACE)


def _warn_unreachable(exc: Exception) -> None:
    if not unreachable_warnings.due():
        return
    logger.warning(
        "client rate limit: Redis unreachable (%s: %s); failing open, requests go ahead "
        "without a per-client limit",
        type(exc).__name__,
        exc,
    )


class WaitSlots:
    """The ?wait holders of this process, at most `settings.DUALSEND_MAX_WAITERS` at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = 0

    @property
    def held(self) -> int:
        return self._held

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """Yields True with a slot taken (given back on exit), False when all are held."""
        with self._lock:
            taken = self._held < settings.DUALSEND_MAX_WAITERS
            if taken:
                self._held += 1
        try:
            yield taken
        finally:
            if taken:
                with self._lock:
                    self._held -= 1


wait_slots = WaitSlots()
