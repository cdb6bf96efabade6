"""The two questions the send path asks around every partner call.

`admit(partner)` before a call: may it go now, or how long until it is worth asking
again? `observe(partner, ...)` after it: what the answer says about the partner's health
and the pace it asks for. Both are shared by every worker through Redis. Neither sleeps:
a refused send is rescheduled by its task, so no worker slot is held while waiting.

The send path also says which send is calling (`send_key`, its idempotency key) and
whether it has called before without a final answer (`failed_before`): the breaker
judges the partner, not one send, so a send's repeated failures count once and a poison
send cannot take the half-open probes from fresh ones (see `breaker`).

Redis unreachable → fail open: the call is allowed and nothing is recorded, with a
warning. Without Redis we lose the breaker and the rate limit for a while; we do not
turn a Redis outage into an outage of both partners.
"""

from dataclasses import dataclass

from django.conf import settings
from redis import RedisError

from ..partners.http import WireAnswer
from ..partners.outcomes import AnswerOutcome, Decision
from . import breaker, ratelimit
from .breaker import CallHealth
from .redis_client import NOW_MS_LUA, as_text, run_script, warn_unreachable

PARTNER_ASKED_TO_WAIT = "partner asked to wait"
RATE_LIMIT = "rate limit"
BREAKER_OPEN = "breaker open"
BREAKER_PROBES_IN_USE = "breaker half-open, probes in use"
BREAKER_FRESH_FIRST = "breaker half-open, probes go to sends that have not failed"

# A refusal always names a wait above zero, so a caller never spins on "ask again now".
MIN_WAIT_SECONDS = 0.01

# Everything `admit` asks, in one round trip and atomically. KEYS: the partner's pause,
# our rate's window, the breaker's hash (one hash tag: one Redis Cluster slot). ARGV:
# limit, window_ms, then the breaker's (`breaker.admit_args`).
# Returns {who decided ('paused'|'rate'|'breaker'), then: the pause's or the rate's
# wait_ms, or the breaker's whole verdict (`breaker.ADMIT_FUNCTION`'s answer)}.
GATE_SCRIPT = (
    NOW_MS_LUA
    + ratelimit.RATE_FUNCTIONS
    + breaker.ADMIT_FUNCTION
    + """
local paused = redis.call('PTTL', KEYS[1])
if paused > 0 then
  return {'paused', paused}
end
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local rate_wait = rate_wait_ms(KEYS[2], limit, window)
if rate_wait > 0 then
  return {'rate', rate_wait}
end
local verdict = breaker_admit(KEYS[3], tonumber(ARGV[3]), tonumber(ARGV[4]),
                              tonumber(ARGV[5]), ARGV[6] == '1', tonumber(ARGV[7]))
if verdict[1] == 1 then
  rate_take(KEYS[2], limit, window)
end
return {'breaker', unpack(verdict)}
"""
)


@dataclass(frozen=True)
class Admission:
    allowed: bool
    # When not allowed: how long until it is worth asking again (>0, capped at
    # settings.DUALSEND_MAX_COUNTDOWN_SECONDS).
    wait_seconds: float = 0.0
    reason: str = ""  # one of the five reasons above


ADMITTED = Admission(allowed=True)


def admit(partner: str, *, failed_before: bool = False) -> Admission:
    """Before a call, in this order: the partner's own pause (Retry-After / X-RateLimit),
    our configured rate, the breaker; one Redis script, so one round trip.

    `failed_before`: the send has called before and is still not final. A half-open
    breaker keeps its probes for fresh sends a while; this one waits.

    The breaker comes last because a half-open probe slot is the scarcest thing here: a
    call the rate limit refuses must not hold one. A slot of our rate is taken only when
    the breaker lets the call through.
    """
    try:
        return _admit(partner, failed_before=failed_before)
    except RedisError as exc:
        warn_unreachable("admit", partner, exc)
        return ADMITTED


def observe(
    partner: str,
    *,
    answer: WireAnswer,
    decision: Decision,
    send_key: str | None = None,
    failed_before: bool = False,
) -> None:
    """After a call: feed the breaker and store the pace the partner asked for.

    The decision table (`partners/outcomes.py`) says what the answer tells of the
    partner's health: a transient failure (5xx, 408, timeout, connection error) is a
    failure, 429 and 409 idempotency_in_progress are not counted, definite 4xx and 2xx
    are successes. A call that took `slow_call_seconds` or more is slow. `Retry-After`
    on any answer, and `X-RateLimit-Remaining` at or below `slowdown_below`, pause every
    worker's calls to this partner.

    `send_key` names the send, so that its retries count once in the breaker's window;
    `failed_before` as for `admit` (a failed-before probe failing does not by itself
    reopen the breaker).
    """
    slow_after = settings.DUALSEND_PARTNERS[partner].breaker.slow_call_seconds
    try:
        ratelimit.note_partner_signals(partner, answer.headers or {})
        breaker.record_call(
            partner,
            health=call_health(decision),
            slow=answer.duration_ms / 1000 >= slow_after,
            send_key=send_key,
            failed_before=failed_before,
        )
    except RedisError as exc:
        warn_unreachable("observe", partner, exc)


def breaker_state(partner: str) -> dict:
    """{"state": "closed|open|half_open", "calls", "failures", "slow", "open_until"}.

    Counts are of the current window; `open_until` is an epoch time while open, else
    None. Raises redis.RedisError when Redis is unreachable (the admin says so).
    """
    return breaker.current_state(partner)


def call_health(decision: Decision) -> CallHealth:
    """What one answer says about the partner's health: the decision table's last column."""
    if not decision.tells_health:
        return CallHealth.NEUTRAL
    return CallHealth.FAILURE if decision.outcome is AnswerOutcome.RETRY else CallHealth.SUCCESS


def _admit(partner: str, *, failed_before: bool) -> Admission:
    decided_by, *answer = run_script(
        GATE_SCRIPT,
        keys=[
            ratelimit.pause_key(partner),
            ratelimit.rate_key(partner),
            breaker.hash_key(partner),
        ],
        args=[*ratelimit.rate_args(partner), *breaker.admit_args(partner, failed_before)],
    )
    decided_by = as_text(decided_by)
    if decided_by == "paused":
        return _refused(answer[0] / 1000, PARTNER_ASKED_TO_WAIT)
    if decided_by == "rate":
        return _refused(max(answer[0] / 1000, ratelimit.MIN_RATE_WAIT_SECONDS), RATE_LIMIT)
    verdict = breaker.verdict_of(partner, answer)
    if not verdict.allowed:
        return _refused(verdict.wait_seconds, _BREAKER_REASONS[verdict.refusal])
    return ADMITTED


_BREAKER_REASONS = {
    breaker.Refusal.OPEN: BREAKER_OPEN,
    breaker.Refusal.PROBES_IN_USE: BREAKER_PROBES_IN_USE,
    breaker.Refusal.FRESH_FIRST: BREAKER_FRESH_FIRST,
}


def _refused(wait_seconds: float, reason: str) -> Admission:
    wait = min(max(wait_seconds, MIN_WAIT_SECONDS), settings.DUALSEND_MAX_COUNTDOWN_SECONDS)
    return Admission(allowed=False, wait_seconds=wait, reason=reason)
