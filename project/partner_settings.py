"""Each partner's settings, read once from the environment into a frozen value.

`read_partner` reads every `PREFIX_*` variable of one partner (`INVENTORY_API_*`,
`PAYMENT_API_*`) and checks each value as it reads it: a bad one raises
ImproperlyConfigured naming the variable and the value, so the process stops while
loading its settings, before it serves a request or takes a task. This module is the one
place where a partner value is checked; the rest of the code reads attributes
(`config.read_timeout`, `config.breaker.window`) and trusts them.

Pure on purpose: `project/settings.py` imports it, so it must not import the app.
"""

import functools
import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

import environ
import limits
from django.core.exceptions import ImproperlyConfigured

# The short units our settings document ("50/s", "50/m", "50/h"), in the words `limits`
# parses ("50/second", "50 per minute").
SHORT_UNITS = {
    "s": "second",
    "sec": "second",
    "m": "minute",
    "min": "minute",
    "h": "hour",
    "hr": "hour",
    "d": "day",
}
Number = TypeVar("Number", int, float)

_LAST_WORD = re.compile(r"([a-z]+)\s*$", re.IGNORECASE)

# Set to 1 to let production call a partner over plain http:// on a host that is not this
# machine (a private network you trust); by default it needs https://.
ALLOW_HTTP_VARIABLE = "DUALSEND_ALLOW_HTTP_PARTNERS"
LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class BreakerSettings:
    """When a partner's circuit breaker opens, for how long, and how it closes again."""

    window: float
    min_calls: int
    failure_rate: float
    slow_call_seconds: float
    slow_call_rate: float
    open_seconds: float
    half_open_probes: int


@dataclass(frozen=True)
class PartnerSettings:
    """One partner: where it is, how we authenticate, how hard and how fast we try."""

    name: str
    base_url: str
    # A secret: never in a repr, so never in a log line, a traceback or the debug page.
    credential: str = field(repr=False)
    connect_timeout: float
    read_timeout: float
    max_attempts: int
    backoff_base: float
    backoff_max: float
    deadline: float
    pool_size: int
    rate_limit: str
    slowdown_below: int
    breaker: BreakerSettings

    @property
    def longest_call_seconds(self) -> float:
        """The longest one HTTP call can take: connecting, then waiting for the answer."""
        return self.connect_timeout + self.read_timeout


def read_partner(
    env: environ.Env,
    name: str,
    *,
    prefix: str,
    url: str,
    credential_name: str,
    development_credential: str,
    debug: bool,
) -> PartnerSettings:
    """One partner's settings from `PREFIX_*`, every value checked as it is read.

    With `debug` off the URL and the credential have no default: they must be set, and the
    URL must be https:// (see `SettingReader.http_url` for the two exceptions).
    """
    read = SettingReader(env, prefix)
    return PartnerSettings(
        name=name,
        base_url=read.http_url("URL", default=url, production=not debug),
        credential=required_in_production(
            env, credential_name, debug=debug, development_value=development_credential
        ),
        # requests' advice: a connect timeout slightly over a multiple of 3 s (TCP retransmit).
        connect_timeout=read.positive(float, "CONNECT_TIMEOUT", 3.05),
        read_timeout=read.positive(float, "READ_TIMEOUT", 10.0),
        max_attempts=read.positive(int, "MAX_ATTEMPTS", 6),
        backoff_base=read.not_negative(float, "BACKOFF_BASE", 1.0),
        backoff_max=read.positive(float, "BACKOFF_MAX", 30.0),
        # From the first attempt: past it, a send stops retrying and its outcome is settled.
        deadline=read.positive(float, "DEADLINE", 180.0),
        pool_size=read.positive(int, "POOL_SIZE", 32),
        # Our own pace, shared by every worker: "N/s", "N/m", "N/h", or the `limits` syntax
        # ("50/second", "50 per minute").
        rate_limit=read.rate("RATE_LIMIT", "50/s"),
        # Slow down before the partner refuses: when its X-RateLimit-Remaining is at or
        # below this, no call until its X-RateLimit-Reset.
        slowdown_below=read.not_negative(int, "SLOWDOWN_BELOW", 1),
        # Opens when, over the last `window` seconds and at least `min_calls` calls, the
        # share of failed calls or of slow calls reaches its threshold.
        breaker=BreakerSettings(
            window=read.positive(float, "BREAKER_WINDOW", 30.0),
            min_calls=read.positive(int, "BREAKER_MIN_CALLS", 10),
            failure_rate=read.share("BREAKER_FAILURE_RATE", 0.5),
            slow_call_seconds=read.positive(float, "BREAKER_SLOW_CALL_SECONDS", 5.0),
            slow_call_rate=read.share("BREAKER_SLOW_CALL_RATE", 0.8),
            open_seconds=read.positive(float, "BREAKER_OPEN_SECONDS", 15.0),
            half_open_probes=read.positive(int, "BREAKER_HALF_OPEN_PROBES", 3),
        ),
    )


def required_in_production(
    env: environ.Env, name: str, *, debug: bool, development_value: str
) -> str:
    """A secret: required when DEBUG is off, a development value otherwise.

    A value holding white space or a control character (a newline pasted with it, a
    quote-less "key value") is refused: it would fail at the partner as a wrong credential,
    far from its cause. The message names the variable and never shows the value.
    """
    if debug:
        value = env.str(name, default=development_value)
    else:
        value = env.str(name, default="")
        if not value:
            raise ImproperlyConfigured(f"{name} must be set when DJANGO_DEBUG is off")
    if any(char.isspace() or not char.isprintable() for char in value):
        raise ImproperlyConfigured(
            f"{name} holds white space or a control character; set it without them "
            "(the value is not shown: it is a secret)"
        )
    return value


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine: localhost, 127.0.0.0/8 or ::1."""
    if host.lower().rstrip(".") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=64)
def parse_rate(text: str) -> limits.RateLimitItem:
    """A `limits.RateLimitItem` from "50/s", "50/m", "50/h", "50/second", "50 per minute".

    Raises ValueError for anything else, for several rates, and for a rate of zero.
    """
    spelled = _LAST_WORD.sub(
        lambda match: SHORT_UNITS.get(match.group(1).lower(), match.group(1)), text.strip()
    )
    items = limits.parse_many(spelled)
    if len(items) != 1:
        raise ValueError(f"one rate expected, got {len(items)}")
    if items[0].amount < 1:
        raise ValueError("a rate must allow at least one call")
    return items[0]


class SettingReader:
    """Reads `PREFIX_NAME` variables; each method refuses a bad value, naming it."""

    def __init__(self, env: environ.Env, prefix: str) -> None:
        self.env = env
        self.prefix = prefix

    def positive(self, cast: type[Number], suffix: str, default: Number) -> Number:
        name, value = self._number(cast, suffix, default)
        if not value > 0:
            raise ImproperlyConfigured(f"{name} must be positive, got {value!r}")
        return value

    def not_negative(self, cast: type[Number], suffix: str, default: Number) -> Number:
        name, value = self._number(cast, suffix, default)
        if value < 0:
            raise ImproperlyConfigured(f"{name} must not be negative, got {value!r}")
        return value

    def share(self, suffix: str, default: float) -> float:
        # A threshold of 0 would open on the first call, above 1 never.
        name, value = self._number(float, suffix, default)
        if not 0 < value <= 1:
            raise ImproperlyConfigured(f"{name} must be a share in (0, 1], got {value!r}")
        return value

    def http_url(self, suffix: str, default: str, *, production: bool) -> str:
        """An http(s) URL with a host and no user:password@ (credentials have variables of
        their own, and a URL is shown in errors). In production it must be set, and be
        https:// unless its host is this machine or DUALSEND_ALLOW_HTTP_PARTNERS is on."""
        name = f"{self.prefix}_{suffix}"
        value = self.env.str(name, default="" if production else default)
        if production and not value:
            raise ImproperlyConfigured(f"{name} must be set when DJANGO_DEBUG is off")
        try:
            parts = urlsplit(value)
            host = parts.hostname
        except ValueError:
            raise ImproperlyConfigured(f"{name} is not a URL: {value!r}") from None
        if "@" in parts.netloc:
            raise ImproperlyConfigured(
                f"{name} must not hold user:password@ (the value is not shown); the partner's "
                "credential has a variable of its own"
            )
        if parts.scheme not in ("http", "https") or not host:
            raise ImproperlyConfigured(f"{name} must be an http(s) URL with a host, got {value!r}")
        plain_http_allowed = is_loopback(host) or self.env.bool(ALLOW_HTTP_VARIABLE, default=False)
        if production and parts.scheme == "http" and not plain_http_allowed:
            raise ImproperlyConfigured(
                f"{name} must be https:// when DJANGO_DEBUG is off, got {value!r}: plain http:// "
                f"is accepted for this machine only (localhost, 127.0.0.0/8, ::1), or anywhere "
                f"with {ALLOW_HTTP_VARIABLE}=1"
            )
        return value.rstrip("/")

    def rate(self, suffix: str, default: str) -> str:
        name = f"{self.prefix}_{suffix}"
        value = self.env.str(name, default=default)
        try:
            parse_rate(value)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"{name} is not a rate: {value!r} ({exc}); write it as N/s, N/m or N/h, "
                "or in the limits syntax: '50/second', '50 per minute'"
            ) from None
        return value

    def _number(self, cast: type[Number], suffix: str, default: Number) -> tuple[str, Number]:
        name = f"{self.prefix}_{suffix}"
        text = self.env.str(name, default=None)
        if text is None:
            return name, default
        kind = "a whole number" if cast is int else "a number"
        try:
            value = cast(text)
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be {kind}, got {text!r}") from None
        if not math.isfinite(value):
            raise ImproperlyConfigured(f"{name} must be {kind}, got {text!r}")
        return name, value
