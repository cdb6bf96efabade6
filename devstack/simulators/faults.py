"""How a simulated partner misbehaves: knobs, scripted faults, the rate limit.

* ``Knobs`` are one partner's dials (latency, error, decline and drop rates,
  rate limit), set from the command line and changed at run time through
  ``POST /_sim/config``.
* ``ScriptTable`` holds deterministic faults for tests: a list of steps per
  (``X-Request-ID``, operation); each matching request consumes the next step,
  and once the list is empty the partner behaves normally again.
* ``RateLimitWindow`` is a fixed window counter, the quota that the
  ``X-RateLimit-*`` headers describe.

Invalid input raises ``ValueError`` with a message fit for a 422 answer.
"""

import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

OPERATIONS = ("reserve", "release", "charge", "refund")

# Random transient errors: (status, error code, whether Retry-After is sent).
RANDOM_ERRORS = (
    (500, "internal_error", False),
    (502, "bad_gateway", False),
    (503, "service_unavailable", True),
    (504, "gateway_timeout", False),
    (408, "request_timeout", False),
    (429, "rate_limited", True),
)

DEFAULT_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    402: "card_declined",
    403: "forbidden",
    404: "not_found",
    408: "request_timeout",
    409: "conflict",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


def default_error_code(status: int) -> str:
    return DEFAULT_ERROR_CODES.get(status, "server_error" if status >= 500 else "client_error")


# --- knobs ------------------------------------------------------------------


@dataclass(frozen=True)
class Knobs:
    """One partner's dials. Frozen: an update makes a new object."""

    latency_min_ms: float = 20.0
    latency_max_ms: float = 80.0
    error_rate: float = 0.0
    decline_rate: float = 0.0
    drop_rate: float = 0.0
    rate_limit: int = 1000
    rate_window_s: float = 1.0

    def latency_seconds(self, rng: random.Random) -> float:
        return rng.uniform(self.latency_min_ms, self.latency_max_ms) / 1000.0

    def to_json(self) -> dict[str, Any]:
        return {
            "latency_ms": [self.latency_min_ms, self.latency_max_ms],
            "error_rate": self.error_rate,
            "decline_rate": self.decline_rate,
            "drop_rate": self.drop_rate,
            "rate_limit": {"limit": self.rate_limit, "window": self.rate_window_s},
        }

    def updated(self, changes: dict[str, Any]) -> "Knobs":
        """A copy with the ``POST /_sim/config`` fields in ``changes`` applied."""
        if not isinstance(changes, dict):
            raise ValueError("config must be a JSON object")
        unknown = set(changes) - {
            "latency_ms",
            "error_rate",
            "decline_rate",
            "drop_rate",
            "rate_limit",
        }
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(sorted(unknown))}")
        fields: dict[str, Any] = {}
        if "latency_ms" in changes:
            fields["latency_min_ms"], fields["latency_max_ms"] = parse_latency(
                changes["latency_ms"]
            )
        for name in ("error_rate", "decline_rate", "drop_rate"):
            if name in changes:
                fields[name] = parse_probability(name, changes[name])
        if "rate_limit" in changes:
            fields["rate_limit"], fields["rate_window_s"] = parse_rate_limit(changes["rate_limit"])
        return replace(self, **fields)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_latency(value: Any) -> tuple[float, float]:
    """``"20-80"``, ``"50"``, ``50`` or ``[20, 80]`` → (min_ms, max_ms)."""
    if isinstance(value, str):
        parts = value.split("-")
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            raise ValueError(f"latency must look like 20-80 or 50, got {value!r}") from None
    elif isinstance(value, list | tuple):
        numbers = list(value)
    else:
        numbers = [value]
    if len(numbers) == 1:
        numbers = numbers * 2
    if len(numbers) != 2 or not all(_is_number(n) for n in numbers):
        raise ValueError(f"latency must be one number or [min, max], got {value!r}")
    low, high = float(numbers[0]), float(numbers[1])
    if low < 0 or high < low:
        raise ValueError(f"latency needs 0 <= min <= max, got {value!r}")
    return low, high


def parse_probability(name: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return float(value)


def parse_rate_limit(value: Any) -> tuple[int, float]:
    """``"1000/1"`` or ``{"limit": 1000, "window": 1}`` → (limit, window seconds)."""
    if isinstance(value, str):
        limit_text, _, window_text = value.partition("/")
        try:
            limit, window = int(limit_text), float(window_text or "1")
        except ValueError:
            raise ValueError(f"rate limit must look like 1000/1, got {value!r}") from None
    elif isinstance(value, dict):
        limit, window = value.get("limit"), value.get("window", 1)
    else:
        raise ValueError(f"rate limit must be {{'limit': n, 'window': s}}, got {value!r}")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"rate limit needs an integer limit >= 1, got {limit!r}")
    if not _is_number(window) or window <= 0:
        raise ValueError(f"rate limit needs a window > 0 seconds, got {window!r}")
    return limit, float(window)


# --- scripted faults ----------------------------------------------------------


@dataclass(frozen=True)
class FaultStep:
    """One scripted answer. Exactly one of the behaviours below applies.

    * ``status`` alone: answer it before the effect; nothing is stored.
    * ``status`` with ``after_effect``: act, keep the real answer for replay,
      but answer ``status``.
    * ``drop``: ``"before_effect"`` or ``"after_effect"`` — close the
      connection without answering, before or after acting.
    * ``status`` with ``gateway``: answered by the partner's gateway, in front of its
      idempotency store (after the rate limit): the request never reached the API,
      so even a retry of a request that already acted gets this answer.
    * ``delay_ms``: normal processing with this latency instead of the knob.
    * none of them (``{"normal": true}``): normal processing.
    """

    status: int | None = None
    code: str | None = None
    retry_after: int | None = None
    after_effect: bool = False
    gateway: bool = False
    drop: str | None = None
    delay_ms: float | None = None

    @property
    def fails_before_effect(self) -> bool:
        return self.status is not None and not self.after_effect

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value not in (None, False)}


def parse_step(raw: Any) -> FaultStep:
    if not isinstance(raw, dict):
        raise ValueError(f"each response must be an object, got {raw!r}")
    if raw.get("normal"):
        return FaultStep()
    if "drop" in raw:
        if raw["drop"] not in ("before_effect", "after_effect"):
            raise ValueError("drop must be 'before_effect' or 'after_effect'")
        return FaultStep(drop=raw["drop"])
    if "delay_ms" in raw:
        if not _is_number(raw["delay_ms"]) or raw["delay_ms"] < 0:
            raise ValueError("delay_ms must be a number >= 0")
        return FaultStep(delay_ms=float(raw["delay_ms"]))
    if "status" in raw:
        return _parse_status_step(raw)
    raise ValueError(f"a response needs status, drop, delay_ms or normal: {raw!r}")


def _parse_status_step(raw: dict[str, Any]) -> FaultStep:
    status = raw["status"]
    # Only failures make sense here: a scripted 2xx would claim an effect that never happened.
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
        raise ValueError(f"status must be an integer from 400 to 599, got {status!r}")
    code = raw.get("code", default_error_code(status))
    if not isinstance(code, str) or not code:
        raise ValueError("code must be a non-empty string")
    retry_after = raw.get("retry_after")
    if retry_after is not None and (
        not isinstance(retry_after, int) or isinstance(retry_after, bool) or retry_after < 0
    ):
        raise ValueError("retry_after must be an integer number of seconds >= 0")
    return FaultStep(
        status=status,
        code=code,
        retry_after=retry_after,
        after_effect=bool(raw.get("after_effect", False)),
        gateway=bool(raw.get("gateway", False)),
    )


class ScriptTable:
    """Scripted steps per (X-Request-ID, operation), shared by both partners."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, str], deque[FaultStep]] = {}

    def reset(self) -> None:
        self._steps.clear()

    def set_script(self, request_id: Any, operation: Any, responses: Any) -> list[FaultStep]:
        """Replace the script for (request_id, operation); validates everything first."""
        if not isinstance(request_id, str) or not request_id:
            raise ValueError("request_id must be a non-empty string")
        if operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}")
        if not isinstance(responses, list):
            raise ValueError("responses must be a list")
        steps = [parse_step(raw) for raw in responses]
        self._steps[(request_id, operation)] = deque(steps)
        return steps

    def next_step(self, request_id: str, operation: str) -> FaultStep | None:
        """Consume the next step for this request, or None when nothing is scripted."""
        steps = self._steps.get((request_id, operation))
        if not steps:
            return None
        step = steps.popleft()
        if not steps:
            del self._steps[(request_id, operation)]
        return step

    def next_gateway_step(self, request_id: str, operation: str) -> FaultStep | None:
        """Consume the next step only when it is a gateway answer (stage 3.5)."""
        steps = self._steps.get((request_id, operation))
        if not steps or not steps[0].gateway:
            return None
        return self.next_step(request_id, operation)

    def pending(self) -> dict[str, list[dict[str, Any]]]:
        return {
            f"{request_id}/{operation}": [step.to_json() for step in steps]
            for (request_id, operation), steps in self._steps.items()
        }


def pick_random_error(rng: random.Random) -> FaultStep:
    status, code, sends_retry_after = rng.choice(RANDOM_ERRORS)
    return FaultStep(status=status, code=code, retry_after=1 if sends_retry_after else None)


# --- rate limit ---------------------------------------------------------------


@dataclass(frozen=True)
class Quota:
    """The rate limit as one request saw it; becomes the X-RateLimit-* headers."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # whole seconds until the window resets, at least 1

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }


class RateLimitWindow:
    """Fixed window: ``limit`` requests, then 429 until the window ends.

    A window opens with the first request after the previous one ended, so an
    idle partner starts every burst with a full quota.
    """

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self.configure(limit, window_s)

    def configure(self, limit: int, window_s: float) -> None:
        """New quota; also starts a fresh window, as a partner's new plan would."""
        self.limit = limit
        self.window_s = window_s
        self._window_end = 0.0
        self._used = 0

    def _roll(self) -> float:
        now = self._clock()
        if now >= self._window_end:
            self._window_end = now + self.window_s
            self._used = 0
        return now

    def _quota(self, now: float, allowed: bool) -> Quota:
        return Quota(
            allowed=allowed,
            limit=self.limit,
            remaining=max(self.limit - self._used, 0),
            reset_seconds=max(math.ceil(self._window_end - now), 1),
        )

    def take(self) -> Quota:
        """Spend one request of the quota if any is left; a refusal spends nothing."""
        now = self._roll()
        if self._used >= self.limit:
            return self._quota(now, allowed=False)
        self._used += 1
        return self._quota(now, allowed=True)

    def peek(self) -> Quota:
        """The quota as it stands, for answers that do not count (control endpoints)."""
        now = self._clock()
        if now >= self._window_end:
            return Quota(True, self.limit, self.limit, max(math.ceil(self.window_s), 1))
        return self._quota(now, allowed=self._used < self.limit)
