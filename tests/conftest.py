"""Fixtures for the integration tests: the real simulators, a real Celery worker.

Both run as subprocesses on 127.0.0.1, against the same Redis (database 9) and the same
test database as the test itself; see tests/environment.py for the environment they share.
"""

import os
import signal
import socket
import subprocess
import sys
import urllib.parse
import uuid
from pathlib import Path

import pytest
from django.db import connection

from tests import environment
from tests.helpers import wait_until
from tests.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "var" / "test-logs"
API_TOKEN = "test-token"


def _start(name, args, env):
    """A child process in its own group, its output in var/test-logs/<name>.log."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / f"{name}.log", "ab")  # noqa: SIM115  (closed in _stop)
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    process.log = log
    return process


def _stop(process, timeout=10):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    process.log.close()


def database_url():
    """The test database, as a URL the worker subprocess can read."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{host}:{port}/{db['NAME']}"


@pytest.fixture(scope="session")
def simulators():
    """Both partner simulators, fast and fault-free unless a test scripts faults."""
    from devstack import SimulatorControl

    process = _start(
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
        _stop(process)


class Worker:
    """A real `celery worker` subprocess that a test may kill (SIGKILL) and start again."""

    def __init__(self, env, queues="api.inventory,api.payment,default", concurrency=8, name="w"):
        self.env = env
        self.queues = queues
        self.concurrency = concurrency
        self.name = f"{name}-{uuid.uuid4().hex[:6]}"
        self.process = None

    def start(self):
        from project.celery import app

        self.process = _start(
            f"worker-{self.name.split('-')[0]}",
            [sys.executable, "-m", "celery", "-A", "project", "worker",
             "-Q", self.queues, "--pool", "threads", "--concurrency", str(self.concurrency),
             "--loglevel", "INFO", "--without-gossip", "--without-mingle",
             "-n", f"{self.name}@%h"],
            self.env,
        )
        destination = [f"{self.name}@{socket.gethostname()}"]
        wait_until(
            lambda: bool(app.control.ping(destination=destination, timeout=0.5)),
            40,
            f"celery worker {self.name}",
        )

    def kill(self):
        """SIGKILL, as the OOM killer or a lost machine would: nothing is cleaned up."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process.log.close()

    def stop(self):
        _stop(self.process)


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
    beat = _start(
        "beat",
        [sys.executable, "-m", "celery", "-A", "project", "beat", "--loglevel", "INFO",
         "--schedule", str(LOG_DIR / "celerybeat-schedule")],
        env,
    )
    try:
        yield worker
    finally:
        _stop(beat)
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
