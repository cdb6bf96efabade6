"""The order's ids across Celery: carried in each task message's headers, set while it runs.

Whoever publishes a task of an order (the web's dispatch, a worker's retry, settle's
compensations, the sweeper's re-drives) has the order's ids in its
log context (`log_context.py`); `before_task_publish` copies them into the message's
headers. In the worker:

- `ContextRequest`, made when the message arrives, sets them for Celery's "Task …
  received" line; `task_received`, sent right after that line, unsets them;
- `task_prerun` sets them from the headers for everything the task logs, Celery's
  "Task … succeeded / retry" lines included; `task_postrun` unsets them.

No database query: a send task gets only a send id, and its order's ids come with it.
`connect()` (project/celery.py) also hands the worker's and beat's logging to our
`LOGGING`, so Celery's own lines go through the same formatter and filter.
"""

import logging
import logging.config
from typing import Any

from celery import signals
from celery.contrib.django.task import DjangoTask
from celery.worker.request import Request

from . import log_context, log_formats

ORDER_HEADER = "dualsend_order_id"
CORRELATION_HEADER = "dualsend_correlation_id"


def carry_ids(headers: dict[str, Any] | None = None, **_signal: Any) -> None:
    """before_task_publish: the publisher's order ids into the message's headers."""
    if headers is None:
        return
    order_id, correlation_id = log_context.current()
    if order_id is not None:
        headers[ORDER_HEADER] = order_id
    if correlation_id is not None:
        headers[CORRELATION_HEADER] = correlation_id


def bind_from_headers(headers: Any) -> None:
    """Set (or unset) the ids a message's headers, or a task's request, carry."""
    get = headers.get if isinstance(headers, dict) else lambda name: getattr(headers, name, None)
    log_context.bind(order_id=get(ORDER_HEADER), correlation_id=get(CORRELATION_HEADER))


def task_starts(task: Any = None, **_signal: Any) -> None:
    """task_prerun: the ids its message carries, for every line of the task."""
    bind_from_headers(task.request)


def configure_logging(
    loglevel: int | str | None = None, logfile: str | None = None, **_: Any
) -> None:
    """setup_logging: our LOGGING instead of Celery's own handlers, with the worker's or
    beat's `--loglevel` and `--logfile`. Connected, it also stops Celery from taking over
    the root logger and from redirecting stdout."""
    from django.conf import settings

    logging.config.dictConfig(
        log_formats.for_celery(settings.LOGGING, level=loglevel, logfile=logfile)
    )


def warnings_to_logging(**_: Any) -> None:
    """celeryd_init: the worker's warnings (running as root, say), which it gives before it
    sets its logging up, go through LOGGING (already configured by Django) as well."""
    logging.captureWarnings(True)


class ContextRequest(Request):
    """A task message as the worker receives it: sets its order's ids for the "Task …
    received" line Celery writes right after making it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bind_from_headers(self.request_dict)


class LoggedTask(DjangoTask):
    """Every task of the app (`task_cls`): Django's, received through `ContextRequest`."""

    Request = f"{__name__}:ContextRequest"


def connect() -> None:
    for signal, receiver in (
        (signals.setup_logging, configure_logging),
        (signals.celeryd_init, warnings_to_logging),
        (signals.before_task_publish, carry_ids),
        (signals.task_received, log_context.clear),
        (signals.task_prerun, task_starts),
        (signals.task_postrun, log_context.clear),
    ):
        signal.connect(receiver, weak=False, dispatch_uid=f"dualsend.log_context.{signal.name}")
