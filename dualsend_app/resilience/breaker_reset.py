"""An operator resets a partner's circuit breaker: closed now, its window empty.

The admin's reset button (`resilience/admin.py`) calls `reset`. The breaker's state,
its window of calls and its half-open tally are forgotten in one Lua script, so every
worker's next `admit` finds it closed and calls the partner, and the failures that
opened it no longer count. The reset is recorded as a transition (from the state it was
in, to closed) whose reason names the operator.
"""

from dataclasses import dataclass

from ..models import BreakerTransition
from . import breaker
from .redis_client import as_text, run_script

# KEYS: `breaker.keys_of(partner)`. Returns the state the breaker was in.
RESET_SCRIPT = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
redis.call('DEL', unpack(KEYS))
return state
"""


@dataclass(frozen=True)
class Reset:
    """What `reset` did: the state the breaker left, and its transition row (None when
    the database did not take it)."""

    previous_state: str
    transition: BreakerTransition | None


def reset(partner: str, *, by: str) -> Reset:
    """Close `partner`'s breaker now with an empty window; `by` names the operator.

    Raises redis.RedisError when Redis is unreachable: nothing changed, nothing recorded.
    """
    previous = as_text(run_script(RESET_SCRIPT, keys=breaker.keys_of(partner), args=[]))
    transition = breaker.record_transition(
        partner,
        previous,
        breaker.State.CLOSED,
        f"reset by {by}: closed, its window and probes cleared (it was {previous})",
    )
    return Reset(previous_state=previous, transition=transition)
