"""The demo's own database, and its own login in it.

The demo never writes to the project's database: it uses `<name>_demo` beside a
PostgreSQL `DATABASE_URL`, else the SQLite file `var/demo.sqlite3`, recreated at the start
of every run (as the chaos run does, with the same code: `devstack/chaos/database.py`).
This process is switched over to it, and so are the stack's children: they inherit
`DATABASE_URL` from this process's environment.

Its login is a user of its own, `demo`, made a superuser with a new random password at
each run, in that database only: any other user (an `admin` of yours) is left alone.
"""

import os
import secrets
from typing import Any
from urllib.parse import urlsplit

import environ
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections
from kombu.utils.url import maybe_sanitize_url

from devstack.chaos import database as run_database

DEMO_USERNAME = "demo"


class NotTheDemoDatabase(run_database.DatabaseError):
    """The database at hand is not the demo's own: the demo writes nothing to it."""


def demo_database_url(project_url: str | None = None) -> str:
    """`<name>_demo` beside a PostgreSQL project database, else the demo's SQLite file."""
    if project_url is None:
        project_url = os.environ.get("DATABASE_URL", "")
    if run_database.is_postgres(project_url):
        parts = urlsplit(project_url)
        name = parts.path.lstrip("/") or "dualsend"
        return parts._replace(path=f"/{name}_demo").geturl()
    return f"sqlite:///{settings.BASE_DIR / 'var' / 'demo.sqlite3'}"


def switch_to_demo_database() -> str:
    """Recreate the demo's database, migrate it, and make it this process's and its
    children's `DATABASE_URL`; the URL."""
    url = demo_database_url()
    run_database.recreate(url)  # refuses the project's own database
    run_database.use(url)
    os.environ["DATABASE_URL"] = url  # the stack's children inherit it
    return url


def refresh_demo_user(demo_url: str) -> str:
    """Create or refresh the `demo` superuser with a new random password (returned), only
    if this process's database is the demo's own (`demo_url`); no other user is touched."""
    current = connections["default"].settings_dict
    if not same_database(current, environ.Env.db_url_config(demo_url)):
        raise NotTheDemoDatabase(
            f"the demo creates its login only in its own database "
            f"({run_database.describe(demo_url)}), not in {current['NAME']}"
        )
    password = secrets.token_urlsafe(12)
    user, _ = get_user_model().objects.get_or_create(username=DEMO_USERNAME)
    user.is_staff = user.is_superuser = user.is_active = True
    user.set_password(password)
    user.save()
    return password


def same_database(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether two DATABASES entries name the same database on the same server."""

    def place(config: dict[str, Any]) -> tuple[str, ...]:
        keys = ("ENGINE", "NAME", "HOST", "PORT")
        return tuple(str(config.get(key) or "") for key in keys)

    return place(one) == place(other)


def runserver_hint(demo_url: str) -> str:
    """The command that browses the demo's records after it stopped (password masked)."""
    url = maybe_sanitize_url(demo_url)
    return f"DATABASE_URL={url} DJANGO_DEBUG=1 .venv/bin/python manage.py runserver"
