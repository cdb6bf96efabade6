"""Circuit breaker per partner, its state in Redis, shared by every worker and process.

The rules (`settings.DUALSEND_PARTNERS[partner].breaker`, a `BreakerSettings`):

- CLOSED → OPEN when, over the last `window` seconds and at least `min_calls` calls, the
  share of failed calls reaches `failure_rate`, or the share of calls slower than
  `slow_call_seconds` reaches `slow_call_rate`.
- OPEN refuses every call for `open_seconds`. Nothing runs on a timer: the first `admit`
  after that turns it HALF_OPEN and is the first probe.
- HALF_OPEN lets `half_open_probes` calls through, counted across all workers. One probe
  that fails, or is slow, opens it again for a fresh `open_seconds`; all probes
  succeeding close it with an empty window. A probe whose worker died never reports:
  after the longest a call can take, its slot is given to another call.

Each decision is one Lua script, so it is atomic across workers, and time is Redis's own
clock (`TIME`), one clock for all of them. A script says whether it made a transition;
only the caller whose script made it logs it and writes the `BreakerTransition` row.

Redis errors are raised to `gate`, which fails open: the breaker must never turn a Redis
outage into an outage of both partners.

Why not pybreaker (even with its Redis storage): it counts *consecutive* failures (one
success resets the count), has no failure rate over a window, no minimum of calls, no
slow-call rate, and lets one trial call through when half-open, guarded by a per-process
lock only; its Redis storage is read-then-write, so several workers can make the same
transition; it wraps the call itself, where we decide before the call and learn after
it; and it cannot say how long until it half-opens, which a rescheduled send needs.

Saleor's breaker board is the model here: a sliding window of calls in Redis sorted
sets, a minimum count and a threshold, failing open on Redis errors. We add what it
lacks: atomic transitions (it reads, decides in Python, then writes), a slow-call rate,
and a bounded number of half-open probes (its half-open lets every call through).
"""

import enum
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction

from project.partner_settings import BreakerSettings

from ..models import BreakerTransition
from .redis_client import key_prefix, run_script

logger = logging.getLogger(__name__)

State = BreakerTransition.State

# A probe that has not reported this long after its call's timeouts was lost.
PROBE_REPORT_MARGIN_SECONDS = 5.0
# While every probe is in flight, others ask again this soon: probes usually answer fast.
HALF_OPEN_RECHECK_SECONDS = 1.0


class CallHealth(enum.StrEnum):
    """What a call says about the partner's health."""

    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"  # 429, 409 idempotency_in_progress: says nothing about health


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    state: str
    wait_seconds: float = 0.0


# The clock every script reads: Redis's, in integer milliseconds (Lua numbers come back
# from Redis truncated to integers, so nothing here is a fraction of a second).
_NOW_MS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS[1]: the breaker's hash. ARGV: probes, probe_lease_ms, recheck_ms.
# Returns {allowed (0|1), state, wait_ms, previous state when this call changed it, or ''}.
ADMIT_SCRIPT = (
    _NOW_MS
    + """
local probes, lease, recheck = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'state', 'open_until', 'probes_admitted',
                     'probe_successes', 'probe_deadline')
local state = h[1] or 'closed'

if state == 'closed' then
  return {1, 'closed', 0, ''}
end

if state == 'open' then
  local open_until = tonumber(h[2] or '0')
  if now < open_until then
    return {0, 'open', open_until - now, ''}
  end
  -- Open long enough: this call turns it half-open and is the first probe.
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probes_admitted', 1,
             'probe_successes', 0, 'probe_deadline', now + lease)
  return {1, 'half_open', 0, 'open'}
end

local admitted = tonumber(h[3] or '0')
local successes = tonumber(h[4] or '0')
local deadline = tonumber(h[5] or '0')
if now >= deadline then
  -- Probes admitted this long ago never reported (their worker died): free their slots.
  admitted = successes
end
if admitted < probes then
  redis.call('HSET', KEYS[1], 'probes_admitted', admitted + 1, 'probe_deadline', now + lease)
  return {1, 'half_open', 0, ''}
end
return {0, 'half_open', math.max(1, math.min(recheck, deadline - now)), ''}
"""
)

# KEYS: the hash, then sorted sets (score: when, in ms) of the window's calls, failed
# calls and slow calls. ARGV: outcome, slow (0|1), call id, window_ms, min_calls,
# failure_rate, slow_call_rate, open_ms, probes.
# Returns {state, previous state when this call changed it or '', why, calls, failures, slow}.
OBSERVE_SCRIPT = (
    _NOW_MS
    + """
local outcome, is_slow, call_id = ARGV[1], ARGV[2] == '1', ARGV[3]
local window, min_calls = tonumber(ARGV[4]), tonumber(ARGV[5])
local failure_rate, slow_rate = tonumber(ARGV[6]), tonumber(ARGV[7])
local open_ms, probes = tonumber(ARGV[8]), tonumber(ARGV[9])
local h = redis.call('HMGET', KEYS[1], 'state', 'probes_admitted', 'probe_successes')
local state = h[1] or 'closed'

local function open_breaker()
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', now + open_ms)
  redis.call('HDEL', KEYS[1], 'probes_admitted', 'probe_successes', 'probe_deadline')
end

if state == 'open' then
  -- The answer to a call admitted before it opened: nothing left to decide.
  return {'open', '', '', 0, 0, 0}
end

if state == 'half_open' then
  local admitted, successes = tonumber(h[2] or '0'), tonumber(h[3] or '0')
  if outcome == 'neutral' then
    -- No verdict on health: the probe's slot goes to another call.
    if admitted > successes then
      redis.call('HINCRBY', KEYS[1], 'probes_admitted', -1)
    end
    return {'half_open', '', '', 0, 0, 0}
  end
  if outcome == 'failure' then
    open_breaker()
    return {'open', 'half_open', 'probe_failed', 0, 0, 0}
  end
  if is_slow then
    open_breaker()
    return {'open', 'half_open', 'probe_slow', 0, 0, 0}
  end
  successes = redis.call('HINCRBY', KEYS[1], 'probe_successes', 1)
  if successes >= probes then
    redis.call('HSET', KEYS[1], 'state', 'closed')
    redis.call('HDEL', KEYS[1], 'open_until', 'probes_admitted', 'probe_successes',
               'probe_deadline')
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
    return {'closed', 'half_open', 'probes_succeeded', 0, 0, 0}
  end
  return {'half_open', '', '', 0, 0, 0}
end

for i = 2, 4 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
end
if outcome ~= 'neutral' then
  redis.call('ZADD', KEYS[2], now, call_id)
  if outcome == 'failure' then
    redis.call('ZADD', KEYS[3], now, call_id)
  end
  if is_slow then
    redis.call('ZADD', KEYS[4], now, call_id)
  end
  for i = 2, 4 do
    -- An idle partner's window disappears by itself.
    redis.call('PEXPIRE', KEYS[i], window + 1000)
  end
end
local calls = redis.call('ZCARD', KEYS[2])
local failures = redis.call('ZCARD', KEYS[3])
local slow = redis.call('ZCARD', KEYS[4])
if calls >= min_calls and calls > 0 then
  if failures / calls >= failure_rate then
    open_breaker()
    return {'open', 'closed', 'failure_rate', calls, failures, slow}
  end
  if slow / calls >= slow_rate then
    open_breaker()
    return {'open', 'closed', 'slow_call_rate', calls, failures, slow}
  end
end
return {'closed', '', '', calls, failures, slow}
"""
)

# Read only. KEYS as OBSERVE_SCRIPT; ARGV: window_ms.
# Returns {state, calls, failures, slow, open_until_ms or 0}.
STATE_SCRIPT = (
    _NOW_MS
    + """
local since = now - tonumber(ARGV[1]) + 1
local h = redis.call('HMGET', KEYS[1], 'state', 'open_until')
return {h[1] or 'closed',
        redis.call('ZCOUNT', KEYS[2], since, '+inf'),
        redis.call('ZCOUNT', KEYS[3], since, '+inf'),
        redis.call('ZCOUNT', KEYS[4], since, '+inf'),
        tonumber(h[2] or '0')}
"""
)


def admit(partner: str) -> Verdict:
    """May a call to `partner` go ahead? Turns OPEN into HALF_OPEN when its time is up."""
    config = _breaker_config(partner)
    allowed, state, wait_ms, previous = run_script(
        ADMIT_SCRIPT,
        keys=_keys(partner)[:1],
        args=[
            config.half_open_probes,
            _milliseconds(_probe_lease_seconds(partner)),
            _milliseconds(HALF_OPEN_RECHECK_SECONDS),
        ],
    )
    state = _text(state)
    if previous:
        _record_transition(
            partner,
            _text(previous),
            state,
            f"open for {config.open_seconds:g} s: letting "
            f"{config.half_open_probes} probe call(s) through",
        )
    return Verdict(allowed=bool(allowed), state=state, wait_seconds=wait_ms / 1000)


def record_call(partner: str, *, health: CallHealth, slow: bool) -> None:
    """Count a finished call in the window, or as a probe; open or close if it says so."""
    config = _breaker_config(partner)
    state, previous, why, calls, failures, slow_calls = run_script(
        OBSERVE_SCRIPT,
        keys=_keys(partner),
        args=[
            str(health),
            int(slow),
            uuid.uuid4().hex,
            _milliseconds(config.window),
            config.min_calls,
            config.failure_rate,
            config.slow_call_rate,
            _milliseconds(config.open_seconds),
            config.half_open_probes,
        ],
    )
    if previous:
        reason = _reason(_text(why), config, calls=calls, failures=failures, slow=slow_calls)
        _record_transition(partner, _text(previous), _text(state), reason)


def current_state(partner: str) -> dict[str, Any]:
    """The live state, as the admin shows it. Raises redis.RedisError when unreachable."""
    config = _breaker_config(partner)
    state, calls, failures, slow, open_until_ms = run_script(
        STATE_SCRIPT, keys=_keys(partner), args=[_milliseconds(config.window)]
    )
    state = _text(state)
    return {
        "state": state,
        "calls": calls,
        "failures": failures,
        "slow": slow,
        "open_until": open_until_ms / 1000 if state == State.OPEN else None,
    }


def _keys(partner: str) -> list[str]:
    # One hash tag per partner: on a Redis Cluster a script's keys share a slot.
    base = f"{key_prefix()}:breaker:{{{partner}}}"
    return [base, f"{base}:calls", f"{base}:failures", f"{base}:slow"]


def _breaker_config(partner: str) -> BreakerSettings:
    return settings.DUALSEND_PARTNERS[partner].breaker


def _probe_lease_seconds(partner: str) -> float:
    """The longest a probe's call can take: past it, the probe is taken as lost."""
    return settings.DUALSEND_PARTNERS[partner].longest_call_seconds + PROBE_REPORT_MARGIN_SECONDS


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _reason(why: str, config: BreakerSettings, *, calls: int, failures: int, slow: int) -> str:
    """The transition's reason, in words an operator reads in the admin."""
    window = f"in the last {config.window:g} s"
    if why == "failure_rate":
        return (
            f"{failures} of {calls} calls failed {window} "
            f"(threshold {config.failure_rate:.0%}, at least {config.min_calls} calls)"
        )
    if why == "slow_call_rate":
        return (
            f"{slow} of {calls} calls took {config.slow_call_seconds:g} s or more {window} "
            f"(threshold {config.slow_call_rate:.0%}, at least {config.min_calls} calls)"
        )
    if why == "probe_failed":
        return "a probe call failed"
    if why == "probe_slow":
        return f"a probe call took {config.slow_call_seconds:g} s or more"
    return f"{config.half_open_probes} probe call(s) succeeded"


def _record_transition(partner: str, from_state: str, to_state: str, reason: str) -> None:
    """Log the transition and keep it as a row; a database outage loses only the row."""
    log = logger.warning if to_state == State.OPEN else logger.info
    log("breaker partner=%s %s -> %s: %s", partner, from_state, to_state, reason)
    try:
        # A savepoint: a caller inside a transaction keeps it usable if this insert fails.
        with transaction.atomic():
            BreakerTransition.objects.create(
                partner=partner, from_state=from_state, to_state=to_state, reason=reason
            )
    except DatabaseError:
        logger.warning(
            "breaker partner=%s %s -> %s not recorded: database unreachable",
            partner,
            from_state,
            to_state,
            exc_info=True,
        )
