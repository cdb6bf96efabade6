"""GET /healthz and GET /readyz: the probes of whatever runs the web process (compose, an
orchestrator, a load balancer).

- `/healthz`: the process answers, `200 {"status": "ok"}`. It touches no dependency: a
  database or broker outage must not get healthy web processes restarted.
- `/readyz`: the database and the broker each answered within
  `DUALSEND_READY_TIMEOUT_SECONDS`: `200 {"status": "ready", "checks": {"database": "ok",
  "broker": "ok"}}`. Otherwise `503 {"status": "not_ready", "checks": {...}}` with
  `Retry-After`, each failed check with a short reason of our own words ("no connection
  within 1 s", "failed (OperationalError)"): never a URL or a driver's message, which may
  hold a host, a user or a password.

Neither takes a token nor counts against a client's rate, and settings exempt both from
the HTTPS redirect (`SECURE_REDIRECT_EXEMPT`): a probe speaks plain HTTP inside the network.
Only GET and HEAD; a probe's answer is never cached (`Cache-Control: no-store`).

Each check runs in a daemon thread of its own, both at once, and is waited for at most the
timeout, so a probe answers within about one timeout even when both dependencies hang. The
database check asks the process's pool for a connection with that timeout, not the pool's
own `DATABASE_POOL_TIMEOUT` nor psycopg's connect timeout; the broker check is one kombu
connection attempt (no retry) whose connect and socket timeouts are that timeout. A check
that outlives its wait is left to end on its own: those same timeouts end it, or, for a
statement on a connection whose database host vanished, TCP keepalive within 30 s.
"""

import logging
import threading
import time
from collections.abc import Callable

from celery import current_app
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from psycopg_pool import PoolTimeout

from .errors import RETRY_AFTER_SECONDS
from .views import api_view

logger = logging.getLogger(__name__)

OK = "ok"


@api_view("GET", "HEAD")
def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers; nothing else is asked."""
    return _no_store(JsonResponse({"status": "ok"}))


@api_view("GET", "HEAD")
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the broker both answer in time, else 503 naming those
    that did not."""
    checks = run_checks(
        {"database": check_database, "broker": check_broker},
        timeout=settings.DUALSEND_READY_TIMEOUT_SECONDS,
    )
    if all(result == OK for result in checks.values()):
        return _no_store(JsonResponse({"status": "ready", "checks": checks}))
    response = JsonResponse({"status": "not_ready", "checks": checks}, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return _no_store(response)


def check_database(timeout: float) -> None:
    """`SELECT 1` on a connection of this process's pool, handed out within `timeout`
    (the pool checks it first: CONN_HEALTH_CHECKS). SQLite has no pool: a connection of
    this thread's own, closed after."""
    pool = getattr(connection, "pool", None)
    if pool is None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            connection.close()
        return
    pool.open()  # a no-op once open; a fresh process opens it on its first query
    with pool.connection(timeout=timeout) as database:
        database.execute("SELECT 1")


def check_broker(timeout: float) -> None:
    """One connection to Celery's broker (Redis or RabbitMQ, as CELERY_BROKER_URL says),
    made with the app's own options but every wait bounded by `timeout`, and no retry."""
    bounded = {
        "socket_connect_timeout": timeout,  # Redis
        "socket_timeout": timeout,  # Redis
        "read_timeout": timeout,  # RabbitMQ (py-amqp)
        "write_timeout": timeout,  # RabbitMQ (py-amqp)
    }
    with current_app.connection_for_write(
        connect_timeout=timeout, transport_options=bounded
    ) as broker:
        broker.ensure_connection(max_retries=0)


def run_checks(checks: dict[str, Callable[[float], None]], *, timeout: float) -> dict[str, str]:
    """{name: "ok" or why not}, every check running at once, none waited for past
    `timeout`."""
    threads = {name: _CheckThread(name, check, timeout) for name, check in checks.items()}
    for thread in threads.values():
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads.values():
        thread.join(max(0.0, deadline - time.monotonic()))
    results = {}
    for name, thread in threads.items():
        results[name] = OK if thread.passed else thread.failure or f"no answer within {timeout:g} s"
        if results[name] != OK:
            logger.warning("readyz: %s not ready: %s", name, results[name])
    return results


class _CheckThread(threading.Thread):
    """One check, its outcome kept for the probe that started it. A daemon: one stuck on
    a vanished host never holds up the process's exit."""

    def __init__(self, name: str, check: Callable[[float], None], timeout: float) -> None:
        super().__init__(name=f"readyz-{name}", daemon=True)
        self.check = check
        self.timeout = timeout
        self.passed = False
        self.failure = ""

    def run(self) -> None:
        try:
            self.check(self.timeout)
        except PoolTimeout:
            self.failure = f"no connection within {self.timeout:g} s"
        except Exception as exc:  # whatever the driver raises: named by its type only
            self.failure = f"failed ({type(exc).__name__})"
        else:
            self.passed = True


def _no_store(response: JsonResponse) -> JsonResponse:
    response["Cache-Control"] = "no-store"
    return response
