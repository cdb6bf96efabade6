"""The Celery app. Everything else (queues, routes, acks, time limits) is in settings."""

import os

from celery import Celery, signals

from dualsend_app import task_log_context
from project import flower, startup_gc

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

# Logs: each task of an order is received and run with the order's ids in the log context,
# carried in its message's headers, and Celery's own lines go through LOGGING (the JSON or
# text formatter): dualsend_app/task_log_context.py.
app = Celery("dualsend", task_cls="dualsend_app.task_log_context:LoggedTask")
task_log_context.connect()
app.config_from_object("django.conf:settings", namespace="CELERY")
# Our tasks live in the top-level `tasks` package, not in an app: name its modules.
app.conf.imports = ("tasks.sends", "tasks.settle", "tasks.compensations", "tasks.sweeper")
# `celery -A project flower`: loopback, and basic auth outside development (project/flower.py).
flower.configure_if_running()


# --- tracing (dualsend_app/tracing.py): only when OTEL_* asks for it -------------------
# Set up in each process that runs tasks, after any fork: a prefork or solo pool's process
# (worker_process_init), else the worker itself (threads). Flushed when they stop.


@signals.worker_process_init.connect(weak=False)
def _trace_pool_process(**_: object) -> None:
    from dualsend_app import tracing

    tracing.setup_from_environment("worker")


@signals.worker_init.connect(weak=False)
def _trace_worker(sender: object = None, **_: object) -> None:
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool as PreforkPool

    from dualsend_app import tracing

    pool = get_implementation(getattr(sender, "pool_cls", None) or app.conf.worker_pool)
    if not issubclass(pool, PreforkPool):  # prefork: each child sets up its own
        tracing.setup_from_environment("worker")


@signals.worker_process_shutdown.connect(weak=False)
@signals.worker_shutdown.connect(weak=False)
def _flush_traces(**_: object) -> None:
    from dualsend_app import tracing

    tracing.stop()


# --- Prometheus metrics (dualsend_app/metrics_worker.py) ------------------------------
# A worker started with DUALSEND_METRICS_PORT serves its own series there. Imported here,
# once the worker has loaded the settings, which choose prometheus_client's directory.


@signals.worker_init.connect(weak=False)
def _worker_metrics(**kwargs: object) -> None:
    from dualsend_app import metrics_worker

    metrics_worker.on_worker_init(**kwargs)


# --- start-up objects out of the garbage collector's way (project/startup_gc.py) ---------


@signals.worker_ready.connect(weak=False)
def _freeze_the_ready_worker(**_: object) -> None:
    startup_gc.freeze_start_up_objects("worker")


@signals.worker_process_init.connect(weak=False)
def _freeze_a_pool_process(**_: object) -> None:
    startup_gc.freeze_start_up_objects("worker pool process")
