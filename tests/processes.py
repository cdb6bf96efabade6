"""Child processes of the integration tests: started in a group of their own, logged, stopped.

The session's simulators and worker (tests/conftest.py), and the workers a test module
runs with a configuration of its own, all start here.
"""

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from django.db import connection

from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "var" / "test-logs"


def answers_ping(app: Any, destination: list[str]) -> bool:
    """Whether the workers named answer a control ping, over a connection of its own: a
    test that cut the broker reset the ones the app keeps in its pools, and a control
    command does not retry on a reset one."""
    with app.connection_for_write() as connection:
        return bool(app.control.ping(destination=destination, timeout=0.5, connection=connection))


def start_process(name: str, args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen:
    """A child process in its own group, its output in var/test-logs/<name>.log."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / f"{name}.log", "ab")  # noqa: SIM115  (closed in stop_process)
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    process.log = log
    return process


def stop_process(process: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds; the log is closed either way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    process.log.close()


def database_url() -> str:
    """The test database, as a URL a subprocess can read."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{host}:{port}/{db['NAME']}"


class Worker:
    """A real `celery worker` subprocess that a test may kill (SIGKILL) and start again."""

    def __init__(
        self,
        env: Mapping[str, str],
        queues: str = "api.inventory,api.payment,default",
        concurrency: int | None = 8,
        name: str = "w",
    ) -> None:
        """`concurrency=None`: no --pool or --concurrency, the settings' defaults apply."""
        self.env = env
        self.queues = queues
        self.concurrency = concurrency
        self.name = f"{name}-{uuid.uuid4().hex[:6]}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the worker and return once it answers a ping."""
        from project.celery import app

        pool = []
        if self.concurrency is not None:
            pool = ["--pool", "threads", "--concurrency", str(self.concurrency)]
        self.process = start_process(
            f"worker-{self.name.split('-')[0]}",
            [sys.executable, "-m", "celery", "-A", "project", "worker", "-Q", self.queues,
             *pool, "--loglevel", "INFO", "--without-gossip", "--without-mingle",
             "-n", f"{self.name}@%h"],
            self.env,
        )  # fmt: skip
        destination = [f"{self.name}@{socket.gethostname()}"]
        wait_until(lambda: answers_ping(app, destination), 40, f"celery worker {self.name}")

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a lost machine would: nothing is cleaned up."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process.log.close()

    def stop(self) -> None:
        stop_process(self.process)


ALL_QUEUES = "api.inventory,api.payment,default"


class OwnWorkers:
    """Workers of a test module's own configuration (the session worker is paused)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.running: list[Worker] = []

    def __call__(
        self,
        queues: str = ALL_QUEUES,
        concurrency: int = 8,
        without: Sequence[str] = (),
        **overrides: str,
    ) -> "Worker":
        """A worker on `queues`; `without` names variables of the tests' environment that
        it must not see (so their defaults apply), `overrides` sets others."""
        env = {name: value for name, value in self.env.items() if name not in without}
        worker = Worker(env | overrides, queues=queues, concurrency=concurrency, name="own")
        worker.start()
        self.running.append(worker)
        return worker

    def stop_all(self) -> None:
        while self.running:
            self.running.pop().stop()


class Gunicorn:
    """The web process as the README runs it (gunicorn, project.wsgi, gthread) on a free
    port, with `env`; started once it answers `/healthz`, stopped by `stop()`."""

    def __init__(self, name: str, env: Mapping[str, str], *, threads: int = 4) -> None:
        from devstack import free_port

        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = start_process(
            name,
            [sys.executable, "-m", "gunicorn", "project.wsgi", "--bind", self.url[7:],
             "--worker-class", "gthread", "--threads", str(threads), "--timeout", "60"],
            env,
        )  # fmt: skip
        try:
            wait_until(self._answers, 30, f"gunicorn ({name}) answering /healthz")
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        import requests

        assert self.process.poll() is None, f"gunicorn exited; see var/test-logs/{self.name}.log"
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            # Not listening yet, or its first answer is slow on a busy machine.
            return False

    def stop(self) -> None:
        stop_process(self.process)
