"""Circuit breaker per partner, its state in Redis, shared by every worker and process.

The rules (`settings.DUALSEND_PARTNERS[partner].breaker`, a `BreakerSettings`):

- CLOSED → OPEN when, over the last `window` seconds and at least `min_calls` calls, the
  share of failed calls reaches `failure_rate`, or the share of calls slower than
  `slow_call_seconds` reaches `slow_call_rate`.
- The breaker judges the partner, not one send: the window holds each send once (keyed
  by its idempotency key), with the outcome of its latest call in the window. A send
  retried 20 times against a 503 is one call and one failure, not twenty; the same send
  succeeding later is one call and no failure. (A call reported without a send key, as
  the tests' bare observations are, counts on its own.)
- OPEN refuses every call for `open_seconds`. Nothing runs on a timer: the first `admit`
  after that turns it HALF_OPEN and, unless it is held back as below, is the first probe.
- HALF_OPEN lets `half_open_probes` calls through, counted across all workers, and
  judges them as a group by the breaker's own thresholds: as soon as the failed probes
  reach `failure_rate` of `half_open_probes` (or the slow ones `slow_call_rate`), it opens
  again for a fresh `open_seconds`; once every probe has answered short of that, it
  closes with an empty window. With the defaults (3 probes, 50 %), two failures of three
  reopen it, one does not: a partner that answers most calls but fails a share of them,
  as every real partner does, is not held open by one unlucky probe. (One failing probe
  reopening it at once made a partner with 25 % background errors fail its half-open
  more than half the time: 15 s more each time.) A probe whose worker died never
  reports: after the longest a call can take, its slot is given to another call.
- Probes go to fresh sends first. A send that has called before and is still not final
  ("failed before": its earlier calls came back without a definite answer) is refused a
  probe slot while sends that never called keep asking: it may wait until no fresh send
  has asked for `fresh_first_seconds` (`FRESH_SENDS_FIRST_SECONDS`, at most
  `open_seconds`), so a partner with nothing but retries to send is still probed.
- A failed-before send whose probe fails does not reopen the breaker by itself: one
  poison order must not keep a partner closed to everyone. Its slot is freed and the
  send is noted; only when `half_open_probes` different failed-before sends have failed
  as probes, with no probe succeeding in between, does it open again. Any probe success
  clears that tally, and a fresh send's failed probe counts in the group as above.

An operator can reset a breaker (`breaker_reset.reset`, the admin's button).

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
from .redis_client import NOW_MS_LUA, as_text, key_prefix, run_script

logger = logging.getLogger(__name__)

State = BreakerTransition.State

# A probe that has not reported this long after its call's timeouts was lost.
PROBE_REPORT_MARGIN_SECONDS = 5.0
# While every probe is in flight, others ask again this soon: probes usually answer fast.
HALF_OPEN_RECHECK_SECONDS = 1.0
# Half-open, a send that failed before waits for a probe slot until no fresh send has
# asked for this long (capped at the breaker's open_seconds).
FRESH_SENDS_FIRST_SECONDS = 5.0


class CallHealth(enum.StrEnum):
    """What a call says about the partner's health."""

    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"  # 429, 409 idempotency_in_progress: says nothing about health


class Refusal(enum.StrEnum):
    """Why `admit` said no."""

    NONE = ""
    OPEN = "open"
    PROBES_IN_USE = "probes_in_use"
    FRESH_FIRST = "fresh_first"  # half-open, probes kept for sends that never failed


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    state: str
    wait_seconds: float = 0.0
    refusal: Refusal = Refusal.NONE


# KEYS[1]: the breaker's hash. ARGV: probes, probe_lease_ms, recheck_ms, failed_before
# (0|1), fresh_first_ms. `fresh_asked` is when a fresh send last asked, or when the open
# time ended if none has since.
# Returns {allowed (0|1), state, wait_ms, previous state when this call changed it or '',
# refusal or ''}. A function, so that the gate's one script (`gate.GATE_SCRIPT`) runs it
# after the pause and the rate; `now` is the script's clock (`redis_client.NOW_MS_LUA`).
ADMIT_FUNCTION = """
local function breaker_admit(key, probes, lease, recheck, failed_before, fresh_first)
  local h = redis.call('HMGET', key, 'state', 'open_until', 'probes_admitted',
                       'probes_reported', 'probe_deadline', 'fresh_asked')
  local state = h[1] or 'closed'

  if state == 'closed' then
    return {1, 'closed', 0, '', ''}
  end

  local previous = ''
  if state == 'open' then
    local open_until = tonumber(h[2] or '0')
    if now < open_until then
      return {0, 'open', open_until - now, '', 'open'}
    end
    -- Open long enough: this call turns it half-open, and is its first probe unless it
    -- failed before and fresh sends still get the first chance.
    previous = 'open'
    redis.call('HSET', key, 'state', 'half_open', 'probes_admitted', 0,
               'probes_reported', 0, 'probes_failed', 0, 'probes_slow', 0,
               'probe_deadline', 0, 'fresh_asked', open_until)
    h = {'half_open', open_until, '0', '0', '0', tostring(open_until)}
  end

  local admitted = tonumber(h[3] or '0')
  local reported = tonumber(h[4] or '0')
  local deadline = tonumber(h[5] or '0')
  if failed_before then
    local fresh_until = tonumber(h[6] or '0') + fresh_first
    if now < fresh_until then
      return {0, 'half_open', fresh_until - now, previous, 'fresh_first'}
    end
  else
    -- A fresh send is asking: sends that failed before keep waiting a while longer.
    redis.call('HSET', key, 'fresh_asked', now)
  end
  if now >= deadline then
    -- Probes admitted this long ago never reported (their worker died): free their slots.
    admitted = reported
  end
  if admitted < probes then
    redis.call('HSET', key, 'probes_admitted', admitted + 1, 'probe_deadline', now + lease)
    return {1, 'half_open', 0, previous, ''}
  end
  return {0, 'half_open', math.max(1, math.min(recheck, deadline - now)), previous,
          'probes_in_use'}
end
"""
ADMIT_SCRIPT = (
    NOW_MS_LUA
    + ADMIT_FUNCTION
    + """
return breaker_admit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
                     ARGV[4] == '1', tonumber(ARGV[5]))
"""
)

# KEYS: the hash, then sorted sets (member: the send's key, score: its latest call, in
# ms) of the window's sends called, failed and slow, then the set of failed-before sends
# whose probe failed this half-open. ARGV: outcome, slow (0|1), send key, window_ms,
# min_calls, failure_rate, slow_call_rate, open_ms, probes, failed_before (0|1).
# Returns {state, previous state when this call changed it or '', why, calls, failures, slow}.
OBSERVE_SCRIPT = (
    NOW_MS_LUA
    + """
local outcome, is_slow, send_key = ARGV[1], ARGV[2] == '1', ARGV[3]
local window, min_calls = tonumber(ARGV[4]), tonumber(ARGV[5])
local failure_rate, slow_rate = tonumber(ARGV[6]), tonumber(ARGV[7])
local open_ms, probes = tonumber(ARGV[8]), tonumber(ARGV[9])
local failed_before = ARGV[10] == '1'
local h = redis.call('HMGET', KEYS[1], 'state', 'probes_admitted', 'probes_reported')
local state = h[1] or 'closed'
local probe_fields = {'probes_admitted', 'probes_reported', 'probes_failed', 'probes_slow',
                      'probe_deadline', 'fresh_asked'}

local function open_breaker()
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', now + open_ms)
  redis.call('HDEL', KEYS[1], unpack(probe_fields))
  redis.call('DEL', KEYS[5])
end

if state == 'open' then
  -- The answer to a call admitted before it opened: nothing left to decide.
  return {'open', '', '', 0, 0, 0}
end

if state == 'half_open' then
  local admitted, reported = tonumber(h[2] or '0'), tonumber(h[3] or '0')
  if outcome == 'neutral' then
    -- No verdict on health: the probe's slot goes to another call.
    if admitted > reported then
      redis.call('HINCRBY', KEYS[1], 'probes_admitted', -1)
    end
    return {'half_open', '', '', 0, 0, 0}
  end
  if outcome == 'failure' and failed_before then
    -- This send failing again says more about the send than about the partner: free its
    -- slot and note it. Enough different such sends failing, and nothing succeeding, is
    -- the partner.
    if admitted > reported then
      redis.call('HINCRBY', KEYS[1], 'probes_admitted', -1)
    end
    redis.call('SADD', KEYS[5], send_key)
    redis.call('PEXPIRE', KEYS[5], window + open_ms)
    local failing = redis.call('SCARD', KEYS[5])
    if failing >= probes then
      open_breaker()
      return {'open', 'half_open', 'probes_failed_again', 0, failing, 0}
    end
    return {'half_open', '', '', 0, 0, 0}
  end
  -- The probes are judged together, by the breaker's own thresholds.
  reported = redis.call('HINCRBY', KEYS[1], 'probes_reported', 1)
  local failed = tonumber(redis.call('HGET', KEYS[1], 'probes_failed') or '0')
  local slow = tonumber(redis.call('HGET', KEYS[1], 'probes_slow') or '0')
  if outcome == 'failure' then
    failed = redis.call('HINCRBY', KEYS[1], 'probes_failed', 1)
  else
    -- Only a success says the partner may be back: the tally of failing retries restarts.
    redis.call('DEL', KEYS[5])
  end
  if is_slow then
    slow = redis.call('HINCRBY', KEYS[1], 'probes_slow', 1)
  end
  if failed / probes >= failure_rate then
    open_breaker()
    return {'open', 'half_open', 'probes_failed', probes, failed, slow}
  end
  if slow / probes >= slow_rate then
    open_breaker()
    return {'open', 'half_open', 'probes_slow', probes, failed, slow}
  end
  if reported >= probes then
    redis.call('HSET', KEYS[1], 'state', 'closed')
    redis.call('HDEL', KEYS[1], 'open_until', unpack(probe_fields))
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
    return {'closed', 'half_open', 'probes_succeeded', reported, failed, slow}
  end
  return {'half_open', '', '', 0, 0, 0}
end

for i = 2, 4 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
end
if outcome ~= 'neutral' then
  -- One member per send: its latest call decides whether it is a failure, or slow.
  redis.call('ZADD', KEYS[2], now, send_key)
  if outcome == 'failure' then
    redis.call('ZADD', KEYS[3], now, send_key)
  else
    redis.call('ZREM', KEYS[3], send_key)
  end
  if is_slow then
    redis.call('ZADD', KEYS[4], now, send_key)
  else
    redis.call('ZREM', KEYS[4], send_key)
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
    NOW_MS_LUA
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


def admit(partner: str, *, failed_before: bool = False) -> Verdict:
    """May a call to `partner` go ahead? Turns OPEN into HALF_OPEN when its time is up.

    `failed_before`: the send has called before and is still not final; half-open, it
    waits while fresh sends want the probes. (The send path asks through the gate's one
    script instead, which runs the same function: `gate.admit`.)
    """
    result = run_script(
        ADMIT_SCRIPT, keys=[hash_key(partner)], args=admit_args(partner, failed_before)
    )
    return verdict_of(partner, result)


def admit_args(partner: str, failed_before: bool) -> list[int]:
    """ADMIT_FUNCTION's arguments after its key, in order."""
    config = _breaker_config(partner)
    return [
        config.half_open_probes,
        _milliseconds(_probe_lease_seconds(partner)),
        _milliseconds(HALF_OPEN_RECHECK_SECONDS),
        int(failed_before),
        _milliseconds(_fresh_first_seconds(config)),
    ]


def verdict_of(partner: str, result: list[Any]) -> Verdict:
    """ADMIT_FUNCTION's answer as a Verdict; a transition it made is logged and kept."""
    allowed, state, wait_ms, previous, refusal = result
    state = as_text(state)
    if previous:
        config = _breaker_config(partner)
        record_transition(
            partner,
            as_text(previous),
            state,
            f"open for {config.open_seconds:g} s: letting "
            f"{config.half_open_probes} probe call(s) through",
        )
    return Verdict(
        allowed=bool(allowed),
        state=state,
        wait_seconds=wait_ms / 1000,
        refusal=Refusal(as_text(refusal)),
    )


def record_call(
    partner: str,
    *,
    health: CallHealth,
    slow: bool,
    send_key: str | None = None,
    failed_before: bool = False,
) -> None:
    """Count a finished call in the window, or as a probe; open or close if it says so.

    `send_key` names the send (its idempotency key): its calls count once in the window.
    Without one the call counts on its own. `failed_before` as for `admit`.
    """
    config = _breaker_config(partner)
    state, previous, why, calls, failures, slow_calls = run_script(
        OBSERVE_SCRIPT,
        keys=keys_of(partner),
        args=[
            str(health),
            int(slow),
            send_key or f"call:{uuid.uuid4().hex}",
            _milliseconds(config.window),
            config.min_calls,
            config.failure_rate,
            config.slow_call_rate,
            _milliseconds(config.open_seconds),
            config.half_open_probes,
            int(failed_before),
        ],
    )
    if previous:
        reason = _reason(as_text(why), config, calls=calls, failures=failures, slow=slow_calls)
        record_transition(partner, as_text(previous), as_text(state), reason)


def current_state(partner: str) -> dict[str, Any]:
    """The live state, as the admin shows it. Raises redis.RedisError when unreachable."""
    config = _breaker_config(partner)
    state, calls, failures, slow, open_until_ms = run_script(
        STATE_SCRIPT, keys=keys_of(partner), args=[_milliseconds(config.window)]
    )
    state = as_text(state)
    return {
        "state": state,
        "calls": calls,
        "failures": failures,
        "slow": slow,
        "open_until": open_until_ms / 1000 if state == State.OPEN else None,
    }


def hash_key(partner: str) -> str:
    """The breaker's state. One hash tag per partner: on a Redis Cluster a script's keys
    (the gate's too: pause, rate, breaker) share a slot."""
    return f"{key_prefix()}:breaker:{{{partner}}}"


def keys_of(partner: str) -> list[str]:
    """Every key of the breaker: its hash, the window's sorted sets, the failing tally."""
    base = hash_key(partner)
    return [base, f"{base}:calls", f"{base}:failures", f"{base}:slow", f"{base}:failing_again"]


def _breaker_config(partner: str) -> BreakerSettings:
    return settings.DUALSEND_PARTNERS[partner].breaker


def _probe_lease_seconds(partner: str) -> float:
    """The longest a probe's call can take: past it, the probe is taken as lost."""
    return settings.DUALSEND_PARTNERS[partner].longest_call_seconds + PROBE_REPORT_MARGIN_SECONDS


def _fresh_first_seconds(config: BreakerSettings) -> float:
    """How long half-open keeps its probes for fresh sends after the last one asked."""
    return min(FRESH_SENDS_FIRST_SECONDS, config.open_seconds)


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


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
    if why == "probes_failed":
        return f"{failures} of {calls} probe calls failed (threshold {config.failure_rate:.0%})"
    if why == "probes_slow":
        return (
            f"{slow} of {calls} probe calls took {config.slow_call_seconds:g} s or more "
            f"(threshold {config.slow_call_rate:.0%})"
        )
    if why == "probes_failed_again":
        return (
            f"probes of {failures} different sends that had failed before all failed again, "
            "none succeeding in between"
        )
    if failures or slow:
        return (
            f"{calls} probe call(s) answered, {failures} failed and {slow} slow: "
            "below the thresholds"
        )
    return f"{config.half_open_probes} probe call(s) succeeded"


def record_transition(
    partner: str, from_state: str, to_state: str, reason: str
) -> BreakerTransition | None:
    """Log the transition and keep it as a row; a database outage loses only the row."""
    log = logger.warning if to_state == State.OPEN else logger.info
    log("breaker partner=%s %s -> %s: %s", partner, from_state, to_state, reason)
    try:
        # A savepoint: a caller inside a transaction keeps it usable if this insert fails.
        with transaction.atomic():
            return BreakerTransition.objects.create(
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
        return None
