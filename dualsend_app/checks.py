"""System checks: a bad configuration stops start-up with a message naming the setting.

A partner value that is wrong on its own (a negative timeout, a rate that does not parse)
never gets this far: `project/partner_settings.py` refuses it while the settings load.
What is left here are the rules that span several settings, and the guard on our fix to
kombu's Redis transport.
"""

from collections.abc import Sequence
from typing import Any

import kombu
from django.apps import AppConfig
from django.conf import settings
from django.core import checks

from project import redis_transport


@checks.register(checks.Tags.compatibility)
def check_countdowns_fit_the_visibility_timeout(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Redis redelivers a message unacknowledged past visibility_timeout: a countdown
    (an ETA message held by the worker) longer than it would run twice."""
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    longest = max(
        settings.DUALSEND_MAX_COUNTDOWN_SECONDS,
        *(config.backoff_max for config in settings.DUALSEND_PARTNERS.values()),
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


@checks.register(checks.Tags.compatibility)
def check_the_kombu_fix_matches_kombu(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """project/redis_transport.py patches kombu as it was in one version: on any other,
    someone must look again whether the fix is still needed, and still right."""
    checked = redis_transport.CHECKED_AGAINST_KOMBU
    if kombu.__version__ != checked:
        return [
            checks.Error(
                f"kombu is {kombu.__version__}, but the fix in project/redis_transport.py "
                f"was checked against kombu {checked}",
                hint=(
                    "Re-check the fix against this kombu (see the module's docstring: the "
                    "upstream reports, and how to reproduce with `manage.py chaos`), then "
                    "remove it or update CHECKED_AGAINST_KOMBU."
                ),
                id="dualsend.E005",
            )
        ]
    return []
