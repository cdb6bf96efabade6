"""Connections are bounded, and so is every wait on them (issue 7, items 4 and 7).

On PostgreSQL each process draws from one bounded pool (CONN_MAX_AGE 0), and the system
check dualsend.W006 warns when the processes' pools together exceed the server's
max_connections. Connecting and every statement have a time limit; so has every command
to the broker, the result backend and the breaker's Redis, including on a server that
accepts a connection and then never answers (a host cut off, a NAT that forgot us).
"""

import contextlib
import os
import socket
import subprocess
import sys
import time

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from dualsend_app import checks
from dualsend_app.resilience import redis_client
from tests import environment
from tests.processes import ROOT, database_url


def manage(*args, timeout=60, **env):
    """`manage.py <args>` in a fresh process, with these environment variables."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def silent_server():
    """A port that accepts connections and never says a word: a peer gone without a FIN."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def dead_port():
    """A port nothing listens on: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


requires_postgresql = pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="the pool and the statement timeout are PostgreSQL's",
)


# --- the pool ---------------------------------------------------------------------------


@requires_postgresql
def test_postgresql_connections_come_from_one_bounded_pool_per_process():
    """Django's psycopg pool, at most 16 connections by default, none kept past a request
    (CONN_MAX_AGE 0, which the pool requires) and each checked before it is handed out."""
    database = settings.DATABASES["default"]

    assert database["CONN_MAX_AGE"] == 0
    assert database["CONN_HEALTH_CHECKS"] is True
    assert database["OPTIONS"]["pool"]["max_size"] == 16
    assert database["OPTIONS"]["pool"]["timeout"] == 3.0


def test_sqlite_has_no_pool_and_keeps_its_busy_timeout(tmp_path):
    """A SQLite file keeps working as before: no pool, WAL and a 30 s busy timeout."""
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.DATABASES['default']['OPTIONS'])",
        DATABASE_URL=f"sqlite:///{tmp_path / 'no-pool.sqlite3'}",
    )

    assert result.returncode == 0, result.stderr
    assert "'pool'" not in result.stdout and "'timeout': 30" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_POOL_MAX_SIZE", "0"),
        ("DATABASE_POOL_MAX_SIZE", "many"),
        ("DATABASE_POOL_MIN_SIZE", "20"),
        ("DATABASE_POOL_TIMEOUT", "-1"),
        ("DATABASE_CONNECT_TIMEOUT", "soon"),
        ("DATABASE_STATEMENT_TIMEOUT", "0"),
        ("DUALSEND_EXPECTED_PROCESSES", "0"),
        ("CELERY_SOCKET_TIMEOUT", "0"),
        ("CELERY_HEALTH_CHECK_INTERVAL", "-5"),
    ],
)
def test_a_bad_pool_or_timeout_value_stops_start_up_naming_it(variable, value):
    """Each of these refuses to start, and the message names the variable."""
    result = manage(
        "check", DATABASE_URL="postgres://dualsend@127.0.0.1:5432/dualsend", **{variable: value}
    )

    assert result.returncode != 0
    assert variable in result.stderr


# --- the check against max_connections --------------------------------------------------


@requires_postgresql
@pytest.mark.django_db
def test_the_check_warns_when_the_pools_exceed_max_connections(settings):
    """max_size x processes over what the server takes: dualsend.W006 says so, in numbers."""
    settings.DUALSEND_EXPECTED_PROCESSES = 1000

    messages = checks.check_the_pools_fit_max_connections(None, databases=["default"])

    assert [message.id for message in messages] == ["dualsend.W006"]
    assert "1000 processes with a pool of 16 connections" in messages[0].msg
    assert "16000 connections" in messages[0].msg


@requires_postgresql
@pytest.mark.django_db
def test_the_check_is_quiet_when_the_pools_fit(settings):
    """One process of 16 fits any server that takes more than 16 connections."""
    settings.DUALSEND_EXPECTED_PROCESSES = 1

    assert checks.check_the_pools_fit_max_connections(None, databases=["default"]) == []


@requires_postgresql
@pytest.mark.django_db
def test_manage_py_check_with_the_database_shows_the_warning():
    """An operator's `manage.py check --database default` (and every migrate) shows W006."""
    result = manage(
        "check", "--database", "default",
        DATABASE_URL=database_url(), DUALSEND_EXPECTED_PROCESSES="1000",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "dualsend.W006" in result.stdout + result.stderr


@pytest.mark.parametrize("server", ["sqlite", "unreachable"])
def test_the_check_is_skipped_without_a_pool_or_an_answering_server(server, tmp_path):
    """SQLite has no pool, and a server that does not answer cannot be asked: the check
    says nothing and never fails (the database's own errors will speak for it)."""
    url = (
        f"sqlite:///{tmp_path / 'no-pool.sqlite3'}"
        if server == "sqlite"
        else f"postgres://dualsend@127.0.0.1:{dead_port()}/dualsend"
    )
    started = time.monotonic()
    result = manage(
        "check", "--database", "default",
        DATABASE_URL=url, DUALSEND_EXPECTED_PROCESSES="100000", DATABASE_POOL_TIMEOUT="1",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "dualsend.W006" not in result.stdout + result.stderr
    assert time.monotonic() - started < 30


# --- PostgreSQL: connecting and every statement are bounded ------------------------------


@requires_postgresql
@pytest.mark.django_db
def test_every_statement_runs_under_the_statement_timeout():
    """The session's statement_timeout is the configured 30 s, not PostgreSQL's none."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "30s"


@requires_postgresql
@pytest.mark.django_db
def test_a_statement_over_the_timeout_is_cancelled():
    """With DATABASE_STATEMENT_TIMEOUT=0.5 a 10 s statement is cancelled after half a second."""
    started = time.monotonic()
    result = manage(
        "shell", "-c",
        "from django.db import connection; connection.cursor().execute('SELECT pg_sleep(10)')",
        DATABASE_URL=database_url(), DATABASE_STATEMENT_TIMEOUT="0.5",
    )  # fmt: skip

    assert result.returncode != 0
    assert "statement timeout" in result.stderr
    assert time.monotonic() - started < 8


@requires_postgresql
@pytest.mark.django_db
def test_a_statement_run_again_and_again_is_prepared_once():
    """Parameters are bound on the server, and a statement run more than five times on a
    connection is prepared: PostgreSQL lists it for the session, planned once."""
    with connection.cursor() as cursor:
        for _ in range(8):
            cursor.execute("SELECT count(*) FROM dualsend_app_order WHERE client = %s", ["x"])
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]

    assert any("dualsend_app_order WHERE client = $1" in sql for sql in prepared), prepared


def test_prepared_statements_can_be_turned_off_for_pgbouncer():
    """DATABASE_PREPARED_STATEMENTS=0 leaves Django's own defaults: values quoted into the
    SQL, nothing prepared (what PgBouncer in transaction mode needs)."""
    show = "from django.conf import settings; print(settings.DATABASES['default']['OPTIONS'])"
    url = "postgres://dualsend@127.0.0.1:5432/dualsend"

    default = manage("shell", "-c", show, DATABASE_URL=url)
    turned_off = manage("shell", "-c", show, DATABASE_URL=url, DATABASE_PREPARED_STATEMENTS="0")

    assert default.returncode == 0, default.stderr
    assert turned_off.returncode == 0, turned_off.stderr
    assert "'server_side_binding': True" in default.stdout
    assert "'prepare_threshold': 5" in default.stdout
    assert "server_side_binding" not in turned_off.stdout
    assert "prepare_threshold" not in turned_off.stdout


@requires_postgresql
def test_connecting_to_a_server_that_never_answers_gives_up_after_the_connect_timeout():
    """The connection parameters Django builds carry connect_timeout (5 s; psycopg's own
    default is 130 s) and keepalives: a silent server costs seconds, not minutes."""
    params = connection.get_connection_params()
    assert params["connect_timeout"] == 5
    assert params["keepalives"] == 1 and params["tcp_user_timeout"] == 30_000

    with silent_server() as port:
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(**params | {"host": "127.0.0.1", "port": port})
        waited = time.monotonic() - started

    assert waited < 8


# --- Redis and the broker: every command is bounded ------------------------------------


def test_the_broker_and_result_backend_bound_every_command():
    """Socket and connect timeouts, keepalive and health checks on the broker's Redis
    connections and the result backend's; a result store gives up after a few tries."""
    from project.celery import app

    backend = app.backend.connparams  # Redis, whichever the broker
    assert backend["socket_timeout"] == 5.0 and backend["socket_connect_timeout"] == 2.0
    assert backend["health_check_interval"] == 10 and backend["socket_keepalive"] is True
    assert app.conf.result_backend_transport_options["retry_policy"]["max_retries"] == 5
    options = app.conf.broker_transport_options
    if app.conf.broker_url.startswith("redis"):
        assert options["socket_timeout"] == 5.0 and options["socket_connect_timeout"] == 2
        assert options["health_check_interval"] == 10 and options["socket_keepalive"] is True
    else:
        assert options["read_timeout"] == 5.0 and options["write_timeout"] == 5.0
        assert app.conf.broker_heartbeat == 10


def test_publishing_to_a_broker_that_never_answers_gives_up():
    """A broker that accepts the connection and then says nothing: the publish raises
    after its socket timeouts (and one retry), so POST /api/orders still answers and the
    order waits for the sweeper. Without a socket timeout it would wait forever."""
    from project.celery import app

    scheme = environment.BROKER_URL.partition("://")[0]
    with silent_server() as port:
        url = (
            f"{scheme}://guest:guest@127.0.0.1:{port}//"
            if "amqp" in scheme
            else (f"redis://127.0.0.1:{port}/0")
        )
        started = time.monotonic()
        with app.connection_for_write(url) as broker, pytest.raises(Exception):  # noqa: B017
            app.send_task("tasks.settle.settle_order", args=[[], "none"], connection=broker)
        waited = time.monotonic() - started

    assert waited < 20


def test_the_breaker_and_limiter_redis_client_checks_idle_connections(settings):
    """The resilience client's connections: short timeouts, keepalive, and a PING before
    reusing one idle for 10 s (after a Redis restart the first command is not lost)."""
    settings.REDIS_URL = environment.REDIS_URL

    kwargs = redis_client.get_redis().connection_pool.connection_kwargs

    assert kwargs["health_check_interval"] == 10
    assert kwargs["socket_timeout"] == 1.0 and kwargs["socket_connect_timeout"] == 0.5
    assert kwargs["socket_keepalive"] is True


def test_a_resilience_redis_that_never_answers_fails_within_seconds(settings):
    """A silent Redis: the breaker's or limiter's command raises within its timeouts, and
    the send goes ahead without them (fail open), instead of holding a worker thread."""
    import redis

    with silent_server() as port:
        settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
        started = time.monotonic()
        with pytest.raises(redis.RedisError):
            redis_client.get_redis().ping()
        waited = time.monotonic() - started

    assert waited < 5
