"""The order a log line concerns: its id and correlation id, set once, on every line.

Code never types the ids into a message. Whoever knows them sets them here (the API view
for its request, a task from its message's headers: `task_log_context.py`, a loop over
orders with `bound`), and `ContextFilter` puts them on every record its handler writes,
Django's, Celery's and gunicorn's access line included. They live in context variables:
each web thread, each worker thread has its own.

A web request's ids stay set until the next request starts on that thread (or this one
finishes): the lines Django and gunicorn write after the view returned (`Not Found: …`,
the access line) still carry them.
"""

import contextlib
import logging
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from django.core.signals import request_finished, request_started

Id = uuid.UUID | str | None

# The fields a record gets, named as they appear in a JSON line.
ORDER_ID = "order_id"
CORRELATION_ID = "correlation_id"
FIELDS = (ORDER_ID, CORRELATION_ID)

_order_id: ContextVar[str | None] = ContextVar(ORDER_ID, default=None)
_correlation_id: ContextVar[str | None] = ContextVar(CORRELATION_ID, default=None)

_UNCHANGED: Any = object()


def current() -> tuple[str | None, str | None]:
    """(order id, correlation id) as set here now; None for what is not set."""
    return _order_id.get(), _correlation_id.get()


def bind(order_id: Id = _UNCHANGED, correlation_id: Id = _UNCHANGED) -> None:
    """Set the ids the lines from here on carry; an id not given stays as it is, None
    unsets it."""
    if order_id is not _UNCHANGED:
        _order_id.set(_text(order_id))
    if correlation_id is not _UNCHANGED:
        _correlation_id.set(_text(correlation_id))


def clear(**_signal_arguments: Any) -> None:
    """No order from here on (also the receiver of Django's request signals)."""
    _order_id.set(None)
    _correlation_id.set(None)


@contextlib.contextmanager
def bound(order_id: Id = _UNCHANGED, correlation_id: Id = _UNCHANGED) -> Iterator[None]:
    """`bind` for the block, then the ids as they were: for lines about an order that is
    not the current one (the sweeper's loop, one order of a batch)."""
    before = current()
    bind(order_id, correlation_id)
    try:
        yield
    finally:
        bind(*before)


def connect_request_signals() -> None:
    """A web thread starts each request, and ends it, with no order set."""
    request_started.connect(clear, dispatch_uid="dualsend.log_context.started")
    request_finished.connect(clear, dispatch_uid="dualsend.log_context.finished")


class ContextFilter(logging.Filter):
    """Puts the current ids on each record as `order_id` and `correlation_id` (only those
    that are set). Two context variable reads a line: put it on handlers, where it sees
    the records of every logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        order_id = _order_id.get()
        if order_id is not None:
            record.order_id = order_id
        correlation_id = _correlation_id.get()
        if correlation_id is not None:
            record.correlation_id = correlation_id
        return True


def _text(value: Id) -> str | None:
    return None if value is None or value == "" else str(value)
