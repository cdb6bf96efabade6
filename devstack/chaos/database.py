"""A fresh database of the chaos run's own, and this process switched over to it.

The run must never touch the project's own database: by default it makes a PostgreSQL
server of its own (postgres.py) and a database in it; `--database-url` names another
(PostgreSQL or SQLite), never the project's. Either is dropped and created again at the
start of every run, so the records read at the end are this run's only. The children get
the URL in their environment; this process, already set up by Django, is switched over
in place.
"""

import contextlib
import os
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
import psycopg
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from psycopg import sql

POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql", "postgis")
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")
MAINTENANCE_DATABASE = "postgres"


class DatabaseError(Exception):
    """The run's database cannot be used; the message says why."""


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in POSTGRES_SCHEMES


def describe(url: str) -> str:
    """'postgresql dualsend_chaos' or 'sqlite /path/file', no credentials."""
    config = environ.Env.db_url_config(url)
    return f"{config['ENGINE'].rsplit('.', 1)[-1]} {config['NAME']}"


def recreate(url: str) -> None:
    """Drop the run's database and create it empty; refuse the project's own."""
    _refuse_project_database(url)
    if is_postgres(url):
        _recreate_postgres(environ.Env.db_url_config(url))
    else:
        _remove_sqlite(Path(environ.Env.db_url_config(url)["NAME"]))


def use(url: str) -> None:
    """Point this process's `default` database at `url`, then migrate it.

    Django reads DATABASES once; the run decides its database later, so the settings
    are rebuilt here exactly as project/settings.py builds them for the children.
    """
    connections.close_all()
    # With PostgreSQL's pool, Django keeps one pool per alias for the whole process: close
    # it, or queries would still go to the old database under the new settings.
    close_pool = getattr(connections["default"], "close_pool", None)
    if close_pool is not None:
        close_pool()
    settings.DATABASES["default"] = database_settings(url)
    connections.__dict__.pop("settings", None)  # a cached_property: read DATABASES again
    connections._settings = None
    with contextlib.suppress(AttributeError):
        del connections["default"]
    call_command("migrate", interactive=False, verbosity=0)


def database_settings(url: str) -> dict[str, Any]:
    """DATABASES["default"] as project/settings.py makes it from DATABASE_URL=url
    (SQLite's WAL and busy timeout included): the settings module run once more."""
    with _environment(DATABASE_URL=url):
        namespace = runpy.run_path(str(settings.BASE_DIR / "project" / "settings.py"))
    return namespace["DATABASES"]["default"]


def close() -> None:
    connections.close_all()


def _refuse_project_database(url: str) -> None:
    project_url = os.environ.get("DATABASE_URL") or (
        f"sqlite:///{settings.BASE_DIR / 'var' / 'dualsend.sqlite3'}"
    )
    ours, theirs = environ.Env.db_url_config(url), environ.Env.db_url_config(project_url)
    same_place = (ours["ENGINE"], ours["NAME"], ours.get("HOST", ""), ours.get("PORT", "")) == (
        theirs["ENGINE"],
        theirs["NAME"],
        theirs.get("HOST", ""),
        theirs.get("PORT", ""),
    )
    if same_place:
        raise DatabaseError(
            f"--database-url names the project's own database ({describe(url)}); the chaos "
            "run drops and recreates its database: give it one of its own"
        )


def _recreate_postgres(config: dict[str, Any]) -> None:
    """DROP … WITH (FORCE) ends sessions a killed worker left behind (PostgreSQL 13+)."""
    try:
        with psycopg.connect(
            dbname=MAINTENANCE_DATABASE,
            user=config.get("USER") or None,
            password=config.get("PASSWORD") or None,
            host=config.get("HOST") or None,
            port=config.get("PORT") or None,
            autocommit=True,
            connect_timeout=5,
        ) as admin:
            name = sql.Identifier(config["NAME"])
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot recreate {config['NAME']}: {exc}") from exc


def _remove_sqlite(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in SQLITE_COMPANIONS:
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
