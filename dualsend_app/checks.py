"""System checks: a bad configuration stops start-up with a message naming the setting.

A partner value that is wrong on its own (a negative timeout, a rate that does not parse)
never gets this far: `project/partner_settings.py` refuses it while the settings load.
What is left here are the rules that span several settings, the guard on our fix to
kombu's Redis transport, and one that asks PostgreSQL whether the processes' connection
pools fit its max_connections (dualsend.W006).
"""

import logging
from collections.abc import Sequence
from typing import Any

import kombu
from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.db import DatabaseError, connections

from project import redis_transport

logger = logging.getLogger(__name__)


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


@checks.register(checks.Tags.database)
def check_the_pools_fit_max_connections(
    app_configs: Sequence[AppConfig] | None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[checks.CheckMessage]:
    """Each process holds at most its pool's max_size connections to PostgreSQL: together
    they must fit the server's max_connections (less those reserved for superusers), or a
    burst ends in "too many clients already" before the pools ever fill.

    A database check: Django runs it with `migrate` and `manage.py check --database
    default`, not on every start. Skipped without a pool (SQLite), and when the server
    does not answer: the check must never be what fails.
    """
    messages: list[checks.CheckMessage] = []
    for alias in databases or ():
        pool = connections[alias].settings_dict.get("OPTIONS", {}).get("pool")
        if connections[alias].vendor != "postgresql" or not isinstance(pool, dict):
            continue
        try:
            available = _connections_available(alias)
        except DatabaseError as exc:
            logger.info("check of %s's pool skipped: the database did not answer (%s)", alias, exc)
            continue
        processes = settings.DUALSEND_EXPECTED_PROCESSES
        wanted = pool["max_size"] * processes
        if wanted > available:
            messages.append(
                checks.Warning(
                    f"{processes} processes with a pool of {pool['max_size']} connections "
                    f"each may open {wanted} connections to database {alias!r}, but the "
                    f"server takes {available} (max_connections less the reserved ones)",
                    hint=(
                        "Lower DATABASE_POOL_MAX_SIZE (a thread holds a connection only while "
                        "it uses the database), raise max_connections on the server, or put "
                        "PgBouncer in front. DUALSEND_EXPECTED_PROCESSES is the number of "
                        "web and worker processes sharing this database."
                    ),
                    id="dualsend.W006",
                )
            )
    return messages


def _connections_available(alias: str) -> int:
    """max_connections less the slots PostgreSQL keeps for superusers and, from 16, for
    the roles granted pg_use_reserved_connections."""
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - coalesce(current_setting('reserved_connections', true), '0')::int"
        )
        return cursor.fetchone()[0]
