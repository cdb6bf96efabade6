"""System checks: a bad configuration stops start-up with a message naming the setting."""

from django.conf import settings
from django.core import checks

from .resilience.config import configuration_errors

POSITIVE_PARTNER_SETTINGS = (
    "connect_timeout",
    "read_timeout",
    "max_attempts",
    "backoff_max",
    "deadline",
    "pool_size",
)


@checks.register(checks.Tags.compatibility)
def check_partner_settings(app_configs, **kwargs):
    errors = []
    for partner, config in settings.DUALSEND_PARTNERS.items():
        prefix = f"{partner.upper()}_API"
        for name in POSITIVE_PARTNER_SETTINGS:
            if config[name] <= 0:
                errors.append(
                    checks.Error(
                        f"{prefix}_{name.upper()} must be positive, got {config[name]!r}",
                        id="dualsend.E001",
                    )
                )
        if config["backoff_base"] < 0:
            errors.append(
                checks.Error(
                    f"{prefix}_BACKOFF_BASE must not be negative, got {config['backoff_base']!r}",
                    id="dualsend.E001",
                )
            )
        if not config["base_url"].startswith(("http://", "https://")):
            errors.append(
                checks.Error(
                    f"{prefix}_URL must be an http(s) URL, got {config['base_url']!r}",
                    id="dualsend.E002",
                )
            )
    return errors


@checks.register(checks.Tags.compatibility)
def check_resilience_settings(app_configs, **kwargs):
    """Unparseable rates and impossible breaker thresholds stop start-up, named."""
    return [checks.Error(message, id="dualsend.E003") for _, message in configuration_errors()]


@checks.register(checks.Tags.compatibility)
def check_countdowns_fit_the_visibility_timeout(app_configs, **kwargs):
    """Redis redelivers a message unacknowledged past visibility_timeout: a countdown
    (an ETA message held by the worker) longer than it would run twice."""
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    longest = max(
        settings.DUALSEND_MAX_COUNTDOWN_SECONDS,
        *(config["backoff_max"] for config in settings.DUALSEND_PARTNERS.values()),
    )
    if visibility <= longest:
        return [
            checks.Error(
                f"CELERY_VISIBILITY_TIMEOUT ({visibility}s) must exceed the longest countdown "
                f"({longest:g}s, DUALSEND_MAX_COUNTDOWN_SECONDS or a *_BACKOFF_MAX)",
                id="dualsend.E004",
            )
        ]
    return []
