"""How fast we call a partner: our own configured rate, and the pace the partner asks for.

Our rate (`DUALSEND_PARTNERS[partner].rate_limit`, e.g. `INVENTORY_API_RATE_LIMIT=50/s`)
is a moving window in Redis, shared by every worker: a list of our latest calls' times,
at most the limit long. It is exact: "50/s" is never 100 calls across a window boundary
as a fixed window allows, and the oldest call in the list says exactly how long a
refused send must wait. It is the algorithm of the `limits` library's moving window
(which keeps each client's pace to us, `api/client_limits.py`), written as a Lua
function so that the gate asks pause, rate and breaker in one script (`gate.py`): one
round trip before each call instead of three, and a call the breaker refuses no longer
spends a slot of our rate.

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

from project.partner_settings import parse_rate

from ..partners.http import retry_after_seconds
from .redis_client import get_redis, key_prefix, run_script

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


# The moving window of our calls to one partner: a list of call times (ms, Redis's
# clock `now`), newest first, never longer than the limit. The limit-th newest call says
# when a slot frees: when it leaves the window. Functions for the gate's one script.
RATE_FUNCTIONS = """
local function rate_wait_ms(key, limit, window)
  local oldest = redis.call('LINDEX', key, limit - 1)
  if oldest then
    local frees = tonumber(oldest) + window - now
    if frees > 0 then return frees end
  end
  return 0
end

local function rate_take(key, limit, window)
  redis.call('LPUSH', key, now)
  redis.call('LTRIM', key, 0, limit - 1)
  redis.call('PEXPIRE', key, window)
end
"""


def rate_args(partner: str) -> list[int]:
    """(limit, window_ms) of our configured rate to `partner`, for RATE_FUNCTIONS."""
    item = parse_rate(settings.DUALSEND_PARTNERS[partner].rate_limit)
    return [item.amount, item.get_expiry() * 1000]


def rate_key(partner: str) -> str:
    return f"{key_prefix()}:rate:{{{partner}}}"


def pause_key(partner: str) -> str:
    """The partner's pause: its time to live is what is left of it."""
    return f"{key_prefix()}:pause:{{{partner}}}"


def pause_remaining(partner: str) -> float:
    """Seconds the partner asked us to wait that have not passed yet (0 when none)."""
    milliseconds = get_redis().pttl(pause_key(partner))
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
        keys=[pause_key(partner)],
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
