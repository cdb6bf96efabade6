"""The PostgreSQL part of DATABASES: one bounded pool, every wait bounded, prepared statements.

`configure_postgresql(env, database)` completes DATABASES["default"], as `env.db_url` read
it from DATABASE_URL, from the `DATABASE_*` variables; project/settings.py calls it when
the database is PostgreSQL. A bad value raises ImproperlyConfigured naming the variable.
Pure on purpose, like partner_settings.py: the settings import it.
"""

from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

from project.partner_settings import SettingReader

# A server that vanished without closing the connection: keepalive probes after 10 s idle,
# and TCP_USER_TIMEOUT drops a connection whose data or probes go unacknowledged for 30 s.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
PREPARE_AFTER_RUNS = 5  # psycopg's own default, which Django turns off


def configure_postgresql(env: environ.Env, database: dict[str, Any]) -> None:
    """The pool, the bounds on every wait, and prepared statements, in `database`.

    A DATABASE_URL query string (?connect_timeout=…&options=…) wins over or adds to these.
    """
    read = SettingReader(env, "DATABASE")
    options = database.setdefault("OPTIONS", {})
    _pool(read, database, options)
    _bounded_waits(read, options)
    if env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
        _prepared_statements(options)


def _pool(read: SettingReader, database: dict[str, Any], options: dict[str, Any]) -> None:
    """Django's psycopg pool (Django 5.1+, docs: ref/databases, "Connection pool").

    A process holds at most DATABASE_POOL_MAX_SIZE connections, a request or task takes
    one only while it runs (CONN_MAX_AGE must be 0 with a pool), and one that finds them
    all in use waits DATABASE_POOL_TIMEOUT, then fails: the API answers 503. Without it
    every web and worker thread kept a connection of its own, and a burst exhausted
    max_connections (500 "too many clients already"). The check dualsend.W006 compares
    max_size x DUALSEND_EXPECTED_PROCESSES with the server's max_connections.
    """
    min_size = read.not_negative(int, "POOL_MIN_SIZE", 2)
    max_size = read.positive(int, "POOL_MAX_SIZE", 16)
    if min_size > max_size:
        raise ImproperlyConfigured(
            f"DATABASE_POOL_MIN_SIZE ({min_size}) must not exceed "
            f"DATABASE_POOL_MAX_SIZE ({max_size})"
        )
    database["CONN_MAX_AGE"] = 0
    # With a pool this is the pool's `check`: a connection is tested (one round trip) before
    # it is handed out, so one that a database restart killed is replaced, never used.
    database["CONN_HEALTH_CHECKS"] = True
    options["pool"] = {
        "min_size": min_size,
        "max_size": max_size,
        "timeout": read.positive(float, "POOL_TIMEOUT", 3.0),
        # A connection attempt that keeps failing is given up after this, and started
        # afresh by the next request that needs one: the pool's doubling backoff never
        # leaves a process without connections long after the database is back.
        "reconnect_timeout": 10.0,
        "name": "dualsend",
    }


def _bounded_waits(read: SettingReader, options: dict[str, Any]) -> None:
    """Connecting (psycopg's default is 130 s; values under 2 s are raised to 2), each
    statement (lock waits included), and a server gone silent (KEEPALIVES)."""
    options.setdefault("connect_timeout", read.positive(int, "CONNECT_TIMEOUT", 5))
    statement_ms = round(1000 * read.positive(float, "STATEMENT_TIMEOUT", 30.0))
    options["options"] = f"{options.get('options', '')} -c statement_timeout={statement_ms}"
    options["options"] = options["options"].strip()
    for name, value in KEEPALIVES.items():
        options.setdefault(name, value)


def _prepared_statements(options: dict[str, Any]) -> None:
    """Parameters travel apart from the statement (server-side binding), and a statement
    run a fifth time on a connection is prepared: PostgreSQL parses and plans it once.

    Django turns both off by default, for PgBouncer in transaction mode, which cannot
    carry a prepared statement from one transaction to the next: behind one, set
    DATABASE_PREPARED_STATEMENTS=0. Planning was half of PostgreSQL's time in our
    statements, and psycopg quoting each value into the SQL a fifth of the web's CPU
    for an order taken in a batch (pg_stat_statements and an in-process micro-benchmark;
    the closing note of issue 8).
    """
    options.setdefault("server_side_binding", True)
    options.setdefault("prepare_threshold", PREPARE_AFTER_RUNS)
