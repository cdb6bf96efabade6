"""A plain `celery -A project worker` runs what suits I/O-bound sends (issue 8, item 1).

Celery's own default is prefork with one process per core: each process held one send
for its whole partner call, 2.2 orders/s on this machine. Started with no --pool and no
--concurrency, the worker must run the threads pool at DUALSEND_WORKER_CONCURRENCY.
"""

import socket

import pytest

from tests.processes import Worker

pytestmark = pytest.mark.integration

# Its own queue: the plain worker must not take the session worker's tasks.
QUEUE = "plain-worker-test"


def pool_of(worker):
    from project.celery import app

    destination = f"{worker.name}@{socket.gethostname()}"
    with app.connection_for_write() as connection:  # not a pooled one (see answers_ping)
        stats = app.control.inspect(
            destination=[destination], timeout=5, connection=connection
        ).stats()
    return stats[destination]["pool"]


@pytest.mark.parametrize(
    ("overrides", "implementation", "threads"),
    [
        ({}, "celery.concurrency.thread:TaskPool", 32),
        ({"DUALSEND_WORKER_CONCURRENCY": "12"}, "celery.concurrency.thread:TaskPool", 12),
    ],
)
def test_a_plain_worker_runs_threads_from_settings(stack_env, overrides, implementation, threads):
    base_env, _ = stack_env
    env = {
        name: value
        for name, value in base_env.items()
        if name not in ("DUALSEND_WORKER_POOL", "DUALSEND_WORKER_CONCURRENCY")
    }
    worker = Worker(env | overrides, queues=QUEUE, concurrency=None, name="plain")
    worker.start()
    try:
        pool = pool_of(worker)
    finally:
        worker.stop()

    assert pool["implementation"] == implementation
    assert pool["max-concurrency"] == threads
