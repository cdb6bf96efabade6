"""Fixtures for the integration tests: the real simulators, a real Celery worker.

Both run as subprocesses on 127.0.0.1, against the same Redis (database 9) and the same
test database as the test itself; see tests/environment.py for the environment they share.
"""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.db import connection

from tests import environment

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


def _wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout}s (logs in {LOG_DIR})")


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
    from dualsend_app.simulators.control import SimulatorControl

    process = _start(
        "simulators",
        [
            sys.executable,
            "-m",
            "dualsend_app.simulators",
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


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, simulators):
    """A real `celery worker` subprocess on all three queues, on the test database."""
    from project.celery import app

    with django_db_blocker.unblock():
        url = database_url()
    app.control.purge()
    env = os.environ | {"DATABASE_URL": url}
    process = _start(
        "worker",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "project",
            "worker",
            "-Q",
            "api.inventory,api.payment,default",
            "--pool",
            "threads",
            "--concurrency",
            "8",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"test-{uuid.uuid4().hex[:6]}@%h",
        ],
        env,
    )
    try:
        _wait_until(lambda: bool(app.control.ping(timeout=0.5)), 40, "celery worker")
        yield process
    finally:
        _stop(process)


@pytest.fixture
def sim(simulators):
    """The simulators' control client, reset before each test."""
    simulators.reset()
    return simulators


@pytest.fixture
def live(transactional_db, celery_worker, sim):
    """Everything an integration test needs: committed data, a worker, clean simulators."""
    return sim
