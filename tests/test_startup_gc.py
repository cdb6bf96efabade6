"""What start-up made is frozen out of the garbage collector's way (project/startup_gc.py),
in the web as gunicorn runs it and in a plain worker: their full collections then skip
Django's and Celery's ~150,000 start-up objects instead of pausing every thread to walk
them."""

import gc
import re

import pytest

from tests.processes import LOG_DIR, Gunicorn, Worker

FROZEN_LINE = re.compile(r"\b(web|worker|worker pool process): (\d+) start-up objects frozen")


def frozen_counts(log_name, since):
    """{process: objects frozen} from the lines a process logged past `since` bytes."""
    text = (LOG_DIR / f"{log_name}.log").read_bytes()[since:].decode(errors="replace")
    return {match[1]: int(match[2]) for match in FROZEN_LINE.finditer(text)}


def log_size(log_name):
    path = LOG_DIR / f"{log_name}.log"
    return path.stat().st_size if path.exists() else 0


def test_freezing_collects_first_then_freezes_what_is_left():
    from project.startup_gc import freeze_start_up_objects

    was_frozen = gc.get_freeze_count()
    try:
        frozen = freeze_start_up_objects("test")
        assert frozen == gc.get_freeze_count() > was_frozen
    finally:
        gc.unfreeze()


@pytest.mark.integration
def test_a_plain_worker_freezes_its_start_up_objects_once_ready(stack_env):
    env, _ = stack_env
    since = log_size("worker-frozen")
    worker = Worker(env, queues="startup-gc-test", concurrency=None, name="frozen")
    worker.start()
    worker.stop()

    counts = frozen_counts("worker-frozen", since)
    assert counts.get("worker", 0) > 50_000, counts


@pytest.mark.integration
def test_the_web_freezes_its_start_up_objects_once_the_app_is_loaded(stack_env):
    env, _ = stack_env
    since = log_size("web-frozen")
    web = Gunicorn("web-frozen", env)
    web.stop()

    counts = frozen_counts("web-frozen", since)
    assert counts.get("web", 0) > 50_000, counts
