"""The Redis connection the breaker and the rate limiter share, one per process.

Created lazily and keyed by process id, like the HTTP sessions in `partners/http.py`: a
forked worker child builds its own instead of sharing its parent's sockets. Timeouts are
short because this sits in front of every partner call: when Redis does not answer, the
send path fails open (see `gate.py`) instead of waiting on it.
"""

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from django.conf import settings
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis.commands.core import Script

logger = logging.getLogger(__name__)

# A healthy Redis answers in a millisecond; past these the call proceeds without it.
CONNECT_TIMEOUT_SECONDS = 0.5
COMMAND_TIMEOUT_SECONDS = 1.0
# A pooled connection idle this long is PINGed before use (and replaced when the PING
# fails): after a Redis restart or a failover the first command does not go to a dead
# socket and fail open for nothing. TCP keepalive lets the kernel drop one that vanished.
HEALTH_CHECK_SECONDS = 10
# During an outage every send would log the same warning: once per this, per process.
UNREACHABLE_WARNING_EVERY_SECONDS = 30.0

# The clock every script reads: Redis's, in integer milliseconds (Lua numbers come back
# from Redis truncated to integers, so nothing here is a fraction of a second). One clock
# for every worker and process, whatever their own say.
NOW_MS_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

_clients: dict[tuple[int, str], redis.Redis] = {}
_scripts: dict[tuple[int, str, str], Script] = {}
_limiters: dict[tuple[int, str, str], MovingWindowRateLimiter] = {}
_limiters_lock = threading.Lock()
_clients_lock = threading.Lock()


def get_redis() -> redis.Redis:
    """This process's client for `settings.REDIS_URL`."""
    url = settings.REDIS_URL
    key = (os.getpid(), url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = redis.Redis.from_url(
                url,
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                socket_timeout=COMMAND_TIMEOUT_SECONDS,
                socket_keepalive=True,
                health_check_interval=HEALTH_CHECK_SECONDS,
            )
            _clients[key] = client
        return client


def run_script(source: str, *, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
    """Run a Lua script atomically in Redis: EVALSHA, loading it again after a restart.

    redis-py's `register_script` gives a `Script` that retries with SCRIPT LOAD on
    NOSCRIPT, so a Redis restarted without persistence costs one extra round trip.
    """
    client = get_redis()
    key = (os.getpid(), settings.REDIS_URL, source)
    script = _scripts.get(key)
    if script is None:
        script = _scripts[key] = client.register_script(source)
    return script(keys=keys, args=args)


def as_text(value: bytes | str) -> str:
    """A string a script returned: redis-py gives bytes unless told to decode."""
    return value.decode() if isinstance(value, bytes) else str(value)


def key_prefix() -> str:
    """Every resilience key starts with this: one Redis can serve several deployments.

    `DUALSEND_RESILIENCE_KEY_PREFIX` is optional; the tests set a unique one per test.
    """
    return getattr(settings, "DUALSEND_RESILIENCE_KEY_PREFIX", "dualsend")


class WarningThrottle:
    """Says a warning is due at most once per `every` seconds, whatever thread asks:
    during an outage every request or send would log the same line."""

    def __init__(self, every: float = UNREACHABLE_WARNING_EVERY_SECONDS) -> None:
        self.every = every
        self.last = -math.inf
        self._lock = threading.Lock()

    def due(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self.last < self.every:
                return False
            self.last = now
            return True


unreachable_warnings = WarningThrottle()


def warn_unreachable(what: str, partner: str, exc: Exception) -> None:
    """Log that Redis failed us and the call goes ahead, without flooding the log."""
    if not unreachable_warnings.due():
        return
    logger.warning(
        "partner=%s %s: Redis unreachable (%s: %s); failing open, the call goes ahead "
        "without breaker or rate limit",
        partner,
        what,
        type(exc).__name__,
        exc,
    )


def moving_window_limiter(key_space: str) -> MovingWindowRateLimiter:
    """This process's `limits` moving-window limiter for one key space (each client's
    pace to us; our pace to the partners is the same algorithm inside the gate's one
    script, `ratelimit.RATE_FUNCTIONS`), on the shared client's connection pool."""
    prefix = f"{key_prefix()}:{key_space}"
    key = (os.getpid(), settings.REDIS_URL, prefix)
    with _limiters_lock:  # not _clients_lock: get_redis() below takes that one
        limiter = _limiters.get(key)
        if limiter is None:
            storage = RedisStorage(
                settings.REDIS_URL, connection_pool=get_redis().connection_pool, key_prefix=prefix
            )
            limiter = _limiters[key] = MovingWindowRateLimiter(storage)
        return limiter
