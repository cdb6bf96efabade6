"""Fixtures for the integration tests: the real simulators, a real Celery worker.

Both run as subprocesses on 127.0.0.1, against the same Redis (database 9) and the same
test database as the test itself; see tests/environment.py for the environment they share
and tests/processes.py for how a child process is started, logged and stopped.
"""

import os
import sys
import urllib.parse

import pytest
from django.db import connection

from tests import environment
from tests.processes import (
    LOG_DIR,
    OwnWorkers,
    Worker,
    database_url,
    start_process,
    stop_process,
)
from tests.tcp_proxy import TcpProxy

# Runs that bring a whole stack of their own (their own Redis, PostgreSQL, workers, web)
# and share nothing with the session's. With `-n 2` (scripts/test) they go to one xdist
# process while every other test goes to the other, which alone starts the session's
# simulators and worker on Redis database 9.
STANDALONE_RUNS = {
    "test_short_chaos_run_passes_with_redis_as_broker",
    "test_short_chaos_run_passes_with_rabbitmq_as_broker",
    "test_bench_runs_end_to_end_and_prints_its_figures",
}


def pytest_xdist_make_scheduler(config, log):
    # Our own two groups rather than `--dist loadgroup`: xdist 3.8 marks a group by
    # rewriting `item._nodeid`, which pytest 9 no longer reads, so its groups are lost.
    from xdist.scheduler import LoadScopeScheduling

    class StandaloneRunsApart(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            name = nodeid.rpartition("::")[2].partition("[")[0]
            return "standalone" if name in STANDALONE_RUNS else "session"

    return StandaloneRunsApart(config, log)


@pytest.fixture(scope="session")
def simulators():
    """Both partner simulators, fast and fault-free unless a test scripts faults."""
    from devstack import SimulatorControl

    process = start_process(
        "simulators",
        [
            sys.executable,
            "-m",
            "devstack.simulators",
            "--inventory-port",
            str(environment.INVENTORY_PORT),
            "--payment-port",
            str(environment.PAYMENT_PORT),
            "--inventory-token",
            environment.TEST_ENVIRONMENT["INVENTORY_API_TOKEN"],
            "--payment-key",
            environment.TEST_ENVIRONMENT["PAYMENT_API_KEY"],
            "--latency-ms",
            "0-5",
        ],
        os.environ.copy(),
    )
    control = SimulatorControl(environment.TEST_ENVIRONMENT["INVENTORY_API_URL"])
    try:
        control.wait_ready(timeout=20)
        yield control
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def stack_env(django_db_setup, django_db_blocker):
    """The environment of the worker and beat: the test database, the direct broker.

    On PostgreSQL the worker reaches the database through a proxy a test can cut.
    """
    with django_db_blocker.unblock():
        url = database_url()
    db_proxy = None
    if not url.startswith("sqlite"):
        parsed = urllib.parse.urlsplit(url)
        db_proxy = TcpProxy(parsed.hostname, parsed.port or 5432)
        credentials = parsed.netloc.rpartition("@")[0]
        url = parsed._replace(netloc=f"{credentials}@127.0.0.1:{db_proxy.port}").geturl()
    env = os.environ | {"DATABASE_URL": url, "CELERY_BROKER_URL": environment.BROKER_URL}
    return env, db_proxy


@pytest.fixture(scope="session")
def celery_worker(stack_env, simulators, django_db_blocker):
    """One worker on all three queues, and beat running the sweeper every second."""
    from project.celery import app

    env, _ = stack_env
    app.control.purge()
    worker = Worker(env)
    worker.start()
    beat = start_process(
        "beat",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "project",
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(LOG_DIR / "celerybeat-schedule"),
        ],
        env,
    )
    try:
        yield worker
    finally:
        stop_process(beat)
        if worker.process.poll() is None:
            worker.stop()
        with django_db_blocker.unblock():
            _end_other_database_sessions()


def _end_other_database_sessions():
    """A killed worker's PostgreSQL sessions can outlive it by a moment; the test database
    cannot be dropped while they do."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def db_proxy(stack_env):
    """The worker's way to PostgreSQL, to cut; the test is skipped on SQLite."""
    _, proxy = stack_env
    if proxy is None:
        pytest.skip("the database cannot go down under SQLite; run on PostgreSQL")
    yield proxy
    proxy.ensure_up()


@pytest.fixture
def broker_proxy():
    """The test process's way to the broker, to cut (the worker's stays up)."""
    yield environment.BROKER_PROXY
    environment.BROKER_PROXY.ensure_up()


@pytest.fixture
def dispatched(monkeypatch):
    """The order ids handed to the broker once committed, recorded instead of published."""
    calls = []
    monkeypatch.setattr(
        "dualsend_app.enqueue.dispatch_order", lambda order_id, sends=None: calls.append(order_id)
    )
    return calls


@pytest.fixture
def sim(simulators):
    """The simulators' control client, reset before each test."""
    simulators.reset()
    return simulators


def clear_resilience_state():
    """Forget breaker windows and partner pauses left by an earlier test."""
    import redis

    client = redis.Redis.from_url(environment.REDIS_URL)
    keys = list(client.scan_iter("dualsend:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def live(transactional_db, celery_worker, sim):
    """Everything an integration test needs: committed data, a worker, clean simulators."""
    clear_resilience_state()
    return sim


@pytest.fixture(scope="module")
def own_workers(celery_worker, stack_env):
    """For a module whose tests need workers configured unlike the session's: the session
    worker is paused while the module runs, and started again after it."""
    env, _ = stack_env
    celery_worker.stop()
    workers = OwnWorkers(env)
    yield workers
    workers.stop_all()
    celery_worker.start()


@pytest.fixture
def workers(own_workers, live):
    """Start workers with `workers(queues=…, concurrency=…, **env)`; stopped after the test."""
    yield own_workers
    own_workers.stop_all()
