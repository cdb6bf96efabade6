"""How fast we call a partner: our own configured rate, and the pace the partner asks for.

Our rate (`DUALSEND_PARTNERS[partner].rate_limit`, e.g. `INVENTORY_API_RATE_LIMIT=50/s`)
is kept by the `limits` library in Redis, shared by every worker. Its moving window
(`MovingWindowRateLimiter`) is exact: "50/s" is never 100 calls across a window boundary
as a fixed window allows, and its window stats say when the oldest call leaves the
window, which is exactly how long a refused send must wait.

The partner's own signals become a shared "pause until" per partner, a Redis key whose
time to live is the pause: `Retry-After` on any answer, and `X-RateLimit-Remaining` at or
below `slowdown_below`, which pauses until `X-RateLimit-Reset`. A pause is only ever
extended, never shortened, so no answer lets a worker call before an earlier
`Retry-After` has passed.

Functions here raise `redis.RedisError` when Redis is unreachable; `gate` fails open.
"""

import logging
import time
from collections.abc import Mapping

from django.conf import settings
from limits.strategies import MovingWindowRateLimiter

from project.partner_settings import parse_rate

from ..partners.http import retry_after_seconds
from .redis_client import get_redis, key_prefix, moving_window_limiter, run_script

logger = logging.getLogger(__name__)

# A refused hit whose slot freed meanwhile still waits a little rather than not at all.
MIN_RATE_WAIT_SECONDS = 0.01
# A partner asking for a day or more is not taken literally: we ask again after a day.
MAX_PAUSE_SECONDS = 24 * 3600.0
# X-RateLimit-Reset above this is an epoch timestamp, not seconds (some APIs send one).
EPOCH_THRESHOLD = 1_000_000_000


# KEYS[1]: the pause key. ARGV: pause_ms, why. Extends the pause, never shortens it.
EXTEND_PAUSE_SCRIPT = """
local wanted = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < wanted then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', wanted)
  return 1
end
return 0
"""


def take_slot(partner: str) -> float:
    """Take one call from our rate: 0 when taken, else the seconds until one frees."""
    item = parse_rate(settings.DUALSEND_PARTNERS[partner].rate_limit)
    limiter = _limiter()
    if limiter.hit(item, partner):
        return 0.0
    stats = limiter.get_window_stats(item, partner)
    return max(MIN_RATE_WAIT_SECONDS, stats.reset_time - time.time())


def pause_remaining(partner: str) -> float:
    """Seconds the partner asked us to wait that have not passed yet (0 when none)."""
    milliseconds = get_redis().pttl(_pause_key(partner))
    return max(0.0, milliseconds / 1000)


def note_partner_signals(partner: str, headers: Mapping[str, str]) -> None:
    """Store the pause an answer's headers ask for, shared by every worker."""
    slowdown_below = settings.DUALSEND_PARTNERS[partner].slowdown_below
    seconds, why = requested_pause(headers, slowdown_below=slowdown_below)
    if seconds <= 0:
        return
    seconds = min(seconds, MAX_PAUSE_SECONDS)
    extended = run_script(
        EXTEND_PAUSE_SCRIPT,
        keys=[_pause_key(partner)],
        args=[max(1, round(seconds * 1000)), why],
    )
    if extended:
        logger.info("partner=%s pausing calls for %.2f s: %s", partner, seconds, why)


def requested_pause(headers: Mapping[str, str], *, slowdown_below: int) -> tuple[float, str]:
    """(seconds, why) the headers ask us to wait before the next call; (0, '') for none."""
    lowered = {str(name).lower(): value for name, value in headers.items()}
    candidates = [(0.0, "")]
    retry_after = retry_after_seconds(lowered)
    if retry_after:
        candidates.append((retry_after, f"Retry-After {lowered['retry-after']}"))
    remaining = _number(lowered.get("x-ratelimit-remaining"))
    reset = _seconds_until_reset(lowered.get("x-ratelimit-reset"))
    if remaining is not None and remaining <= slowdown_below and reset:
        candidates.append(
            (reset, f"X-RateLimit-Remaining {remaining:g}, X-RateLimit-Reset in {reset:g} s")
        )
    return max(candidates, key=lambda candidate: candidate[0])


def _seconds_until_reset(value: str | None) -> float | None:
    seconds = _number(value)
    if seconds is None:
        return None
    if seconds > EPOCH_THRESHOLD:
        seconds -= time.time()
    return max(0.0, seconds)


def _number(value: str | None) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _pause_key(partner: str) -> str:
    return f"{key_prefix()}:pause:{{{partner}}}"


def _limiter() -> MovingWindowRateLimiter:
    return moving_window_limiter("ratelimit")
