"""Which breaker and rate-limit settings are wrong, named as the environment spells them.

`configuration_errors()` is what the system check in `dualsend_app/checks.py` reports, so
a bad value stops start-up with the variable to fix, not a failure at the first send.
"""

from django.conf import settings

from .ratelimit import parse_rate

# Shares of calls: a threshold of 0 would open on the first call, above 1 never.
BREAKER_RATES = ("failure_rate", "slow_call_rate")
BREAKER_POSITIVE = ("window", "open_seconds", "min_calls", "half_open_probes", "slow_call_seconds")


def configuration_errors():
    """[(setting name, message)] for every bad value; [] when all are fine."""
    errors = []
    for partner, config in settings.DUALSEND_PARTNERS.items():
        prefix = f"{partner.upper()}_API"
        errors += _rate_limit_errors(prefix, config)
        errors += _breaker_errors(prefix, config["breaker"])
    return errors


def _rate_limit_errors(prefix, config):
    errors = []
    name = f"{prefix}_RATE_LIMIT"
    try:
        parse_rate(config["rate_limit"])
    except (TypeError, ValueError) as exc:
        errors.append(
            (
                name,
                f"{name} is not a rate: {config['rate_limit']!r} ({exc}); write it as "
                "N/s, N/m or N/h, or in the limits syntax: '50/second', '50 per minute'",
            )
        )
    slowdown_below = config["slowdown_below"]
    if slowdown_below < 0:
        name = f"{prefix}_SLOWDOWN_BELOW"
        errors.append((name, f"{name} must not be negative, got {slowdown_below!r}"))
    return errors


def _breaker_errors(prefix, breaker):
    errors = []
    for key in BREAKER_RATES:
        name = f"{prefix}_BREAKER_{key.upper()}"
        if not 0 < breaker[key] <= 1:
            errors.append((name, f"{name} must be a share in (0, 1], got {breaker[key]!r}"))
    for key in BREAKER_POSITIVE:
        name = f"{prefix}_BREAKER_{key.upper()}"
        if breaker[key] <= 0:
            errors.append((name, f"{name} must be positive, got {breaker[key]!r}"))
    return errors
