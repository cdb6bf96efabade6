"""System checks: a bad configuration stops start-up with a message naming the setting."""

from django.conf import settings
from django.core import checks

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
