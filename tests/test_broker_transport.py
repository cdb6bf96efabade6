"""A Redis restart must not kill the worker (project/redis_transport.py).

With kombu's own transport, a worker holding unacknowledged messages (a countdown, say)
when Redis restarts exits with "Unrecoverable error: AttributeError"; with ours it
reconnects. A Redis of the test's own, so the shared one is never restarted.
"""

import os
import signal
import socket
import subprocess
import sys
import uuid

import pytest
import redis
from celery import Celery

from devstack import free_port, redis_server_binary
from tests.helpers import wait_until
from tests.processes import LOG_DIR, ROOT

pytestmark = [pytest.mark.integration]


def start_redis(port):
    """A redis-server that keeps nothing: a restart loses every message."""
    process = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    client = redis.Redis(port=port)
    wait_until(lambda: _answers(client), 10, "redis-server")
    return process


def _answers(client):
    try:
        return client.ping()
    except redis.RedisError:
        return False


def answers_ping(url, destination):
    """A fresh app each time: a restart breaks the pooled connections of the last one."""
    app = Celery("transport-test", broker=url, set_as_current=False)
    try:
        return bool(app.control.ping(destination=destination, timeout=0.5))
    except Exception:  # the broker is still coming back
        return False
    finally:
        app.close()


@pytest.fixture
def own_redis():
    port = free_port()
    server = {"process": start_redis(port)}

    def restart():
        os.killpg(server["process"].pid, signal.SIGKILL)
        server["process"].wait()
        server["process"] = start_redis(port)

    yield f"redis://127.0.0.1:{port}/0", restart
    server["process"].terminate()
    server["process"].wait()


def test_worker_survives_a_redis_restart_with_unacknowledged_messages(own_redis, monkeypatch):
    """Redis restarts while the worker holds a countdown: it reconnects, still answering."""
    url, restart_redis = own_redis
    # Celery prefers this variable to the broker an app is given: the test's own app must
    # reach the test's own Redis.
    monkeypatch.delenv("CELERY_BROKER_URL")
    name = f"transport-{uuid.uuid4().hex[:6]}"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    worker_log = LOG_DIR / "worker-transport.log"
    see_log = f"(log: {worker_log})"
    env = os.environ | {"CELERY_BROKER_URL": url, "REDIS_URL": url}
    with open(worker_log, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "project", "worker", "-Q", "default",
             "--pool", "threads", "--concurrency", "2", "--without-gossip",
             "--without-mingle", "-n", f"{name}@%h"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    app = Celery("transport-test", broker=url, set_as_current=False)
    destination = [f"{name}@{socket.gethostname()}"]
    try:
        wait_until(lambda: answers_ping(url, destination), 40, f"worker {see_log}")
        app.send_task(
            "tasks.settle.settle_order", args=([], str(uuid.uuid4())), queue="default",
            countdown=120,
        )  # fmt: skip
        broker = redis.Redis.from_url(url)
        wait_until(
            lambda: broker.hlen("unacked") > 0, 10, f"a message held unacknowledged {see_log}"
        )

        restart_redis()

        wait_until(lambda: answers_ping(url, destination), 20, f"the worker reconnected {see_log}")
        assert worker.poll() is None, "the worker exited after the Redis restart"
    finally:
        app.close()
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
