"""How long until a send's next attempt, and when to stop trying.

Exponential backoff with full jitter (Celery's own `get_exponential_backoff_interval`,
the function its autoretry uses), capped; the partner's `Retry-After` wins over the
computed delay, spread a little later so that the sends one pause stopped do not all
come back in the same instant; a send stops at its maximum number of attempts or at its
deadline.
"""

import datetime
import random
from dataclasses import dataclass

from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings

from .models import Send


@dataclass(frozen=True)
class Policy:
    max_attempts: int
    backoff_base: float
    backoff_max: float
    deadline: float  # seconds from the send's first pickup


def policy_for(send: Send) -> Policy:
    """A header send follows its partner's policy; compensations try longer."""
    config = settings.DUALSEND_PARTNERS[send.partner]
    if send.is_compensation:
        return Policy(
            max_attempts=settings.DUALSEND_COMPENSATION_MAX_ATTEMPTS,
            backoff_base=config.backoff_base,
            backoff_max=config.backoff_max,
            deadline=settings.DUALSEND_COMPENSATION_DEADLINE,
        )
    return Policy(
        max_attempts=config.max_attempts,
        backoff_base=config.backoff_base,
        backoff_max=config.backoff_max,
        deadline=config.deadline,
    )


def backoff_delay(policy: Policy, attempts_made: int) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(n-1))] after the n-th attempt."""
    # Celery's helper counts whole units: work in milliseconds so that sub-second bases
    # (the tests use them) keep their jitter.
    millis = get_exponential_backoff_interval(
        factor=int(policy.backoff_base * 1000),
        retries=max(0, attempts_made - 1),
        maximum=int(policy.backoff_max * 1000),
        full_jitter=True,
    )
    return millis / 1000


def next_delay(policy: Policy, attempts_made: int, retry_after: float | None) -> float:
    """Seconds to wait: never sooner than the partner's Retry-After."""
    delay = backoff_delay(policy, attempts_made)
    if retry_after is not None:
        delay = max(delay, spread_later(retry_after))
    return delay


def spread_later(seconds: float) -> float:
    """A wait of `seconds` made up to half as long again, at random.

    Every send that met one 429, or one shared pause, is told the same instant; if
    they all came back then, they would spend the partner's new quota at once and
    most would meet the next 429: wasted calls, and time off their deadlines. Never
    sooner, only later.
    """
    return seconds * random.uniform(1.0, 1.5)


@dataclass(frozen=True)
class RetryPlan:
    """After a transient answer: try again in `delay` seconds, or stop, and why."""

    delay: float | None
    gave_up_because: str | None = None

    @property
    def retries(self) -> bool:
        return self.delay is not None


def plan_retry(
    policy: Policy,
    *,
    attempts_made: int,
    retry_after: float | None,
    started_at: datetime.datetime,
    now: datetime.datetime,
) -> RetryPlan:
    """When to try again after a transient answer, within the attempts and the deadline."""
    delay = next_delay(policy, attempts_made, retry_after)
    reason = give_up_reason(
        policy, attempts_made=attempts_made, started_at=started_at, now=now, delay=delay
    )
    if reason is not None:
        return RetryPlan(delay=None, gave_up_because=reason)
    return RetryPlan(delay=delay)


def give_up_reason(
    policy: Policy,
    *,
    attempts_made: int,
    started_at: datetime.datetime,
    now: datetime.datetime,
    delay: float,
    count_attempts: bool = True,
) -> str | None:
    """Why the send must stop now, or None when it may try again after `delay`.

    A deferral (breaker open, rate limit) made no call, so it does not count attempts.
    """
    if count_attempts and attempts_made >= policy.max_attempts:
        return f"gave up after {attempts_made} attempts"
    deadline_at = started_at + datetime.timedelta(seconds=policy.deadline)
    if now + datetime.timedelta(seconds=delay) > deadline_at:
        return f"deadline of {policy.deadline:g}s passed after {attempts_made} attempts"
    return None
