"""How a log line looks: one JSON object per line in production, readable text in development.

`DUALSEND_LOG_FORMAT` (`json` or `text`) chooses; unset, it is `json` with `DJANGO_DEBUG`
off and `text` with it on. The web and the workers (`LOGGING` in project/settings.py),
Celery's worker and beat (`task_log_context.py`) and gunicorn's own logs, its access log
included (gunicorn.conf.py), all use the formatters here, and every handler carries
`ContextFilter` (the order's ids). Importing this module reads no setting and loads no
Celery: gunicorn's master process reads it before any app is loaded.

A JSON line keeps only the fields named here. Records carry other things that must not
reach a log: Django puts the request object on its `django.request` lines, Celery a dict
of the task's arguments on its task lines, and gunicorn hands its access line every
request header, `Authorization` included.
"""

import copy
import logging
from collections.abc import Mapping
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from .log_context import FIELDS as CONTEXT_FIELDS

FORMATS = ("json", "text")
CONTEXT_FILTER = "dualsend_app.log_context.ContextFilter"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def log_format(value: str, *, debug: bool) -> str:
    """DUALSEND_LOG_FORMAT's value checked, or the default for DJANGO_DEBUG."""
    chosen = value.strip().lower() or ("text" if debug else "json")
    if chosen not in FORMATS:
        raise ValueError(f"DUALSEND_LOG_FORMAT must be json or text, got {value!r}")
    return chosen


class JsonLogFormatter(JsonFormatter):
    """python-json-logger's formatter, writing only the fields it names.

    `time` (ISO 8601, UTC), `level`, `logger`, `message`; the order's `order_id` and
    `correlation_id` when the line concerns one; a Celery task line's `task_id` and
    `task_name`; Django's `status_code`; `exc_info` with the traceback.
    """

    KEPT = (
        "time",
        "level",
        "logger",
        "message",
        *CONTEXT_FIELDS,
        "task_id",
        "task_name",
        "status_code",
        "exc_info",
        "stack_info",
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            **options,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        # Celery's "Task … received / succeeded" lines: the task, not its arguments.
        task = record.__dict__.get("data")
        if isinstance(task, Mapping) and record.name.startswith("celery"):
            log_data["task_id"] = task.get("id")
            log_data["task_name"] = task.get("name")

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {name: log_data[name] for name in self.KEPT if log_data.get(name) is not None}


class AccessJsonFormatter(JsonLogFormatter):
    """gunicorn's access line: the request's fields, picked from gunicorn's atoms.

    `correlation_id` is the answer's `X-Request-ID` (the API sends one on every answer),
    `order_id` the order the view was about (from the context, still set when gunicorn
    writes this line).
    """

    ATOMS = {
        "h": "remote_addr",
        "m": "method",
        "U": "path",
        "q": "query",
        "s": "status",
        "B": "bytes",
        "M": "duration_ms",
    }
    KEPT = (*JsonLogFormatter.KEPT, *ATOMS.values())

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        atoms = record.args if isinstance(record.args, Mapping) else {}
        # dict.get: gunicorn's atoms answer "-" for a missing key, we want nothing.
        for atom, field in self.ATOMS.items():
            value = dict.get(atoms, atom)
            log_data[field] = None if value in ("", "-") else value
        status = log_data["status"]
        if isinstance(status, str) and status.isdigit():
            log_data["status"] = int(status)
        request_id = dict.get(atoms, "{x-request-id}o")
        if request_id:
            log_data["correlation_id"] = request_id


class TextLogFormatter(logging.Formatter):
    """`time LEVEL logger message`, then `[order_id=… correlation_id=…]` when set."""

    def __init__(self, **options: Any) -> None:
        super().__init__(TEXT_FORMAT, **options)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        ids = " ".join(
            f"{name}={value}"
            for name in CONTEXT_FIELDS
            if (value := record.__dict__.get(name)) is not None
        )
        return f"{line} [{ids}]" if ids else line


def logging_config(fmt: str, *, level: str) -> dict[str, Any]:
    """The `LOGGING` of the web and the workers: every line to stderr, in `fmt`."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"log_context": {"()": CONTEXT_FILTER}},
        "formatters": _formatters(),
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": fmt,
                "filters": ["log_context"],
            },
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "urllib3": {"level": "WARNING"},
            # Django's own console handler (development only) would write each of its
            # lines a second time, unformatted: they go to the root's handler alone.
            "django": {"handlers": [], "propagate": True},
        },
    }


def for_celery(config: dict[str, Any], *, level: int | str | None, logfile: str | None) -> dict:
    """`config` for a Celery worker or beat: its `--loglevel` on the root, and its lines in
    `--logfile` when given (`celery multi` gives one) instead of on stderr."""
    config = copy.deepcopy(config)
    if level:
        config["root"]["level"] = logging.getLevelName(level) if isinstance(level, int) else level
    if logfile:
        console = config["handlers"]["console"]
        config["handlers"]["console"] = {
            "class": "logging.handlers.WatchedFileHandler",
            "filename": logfile,
            "formatter": console["formatter"],
            "filters": console.get("filters", []),
        }
    return config


def gunicorn_logging_config(fmt: str) -> dict[str, Any]:
    """gunicorn's `logconfig_dict`: its error log on stderr and its access log on stdout,
    in `fmt`, each line with the request's ids."""
    access_formatter = "access_json" if fmt == "json" else "text"

    def handler(stream: str, formatter: str) -> dict[str, Any]:
        return {
            "class": "logging.StreamHandler",
            "stream": f"ext://sys.{stream}",
            "formatter": formatter,
            "filters": ["log_context"],
        }

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"log_context": {"()": CONTEXT_FILTER}},
        "formatters": _formatters() | {"access_json": {"()": f"{__name__}.AccessJsonFormatter"}},
        "handlers": {
            "console": handler("stderr", fmt),
            "error_console": handler("stderr", fmt),
            "access_console": handler("stdout", access_formatter),
        },
        "root": {"handlers": ["console"], "level": "INFO"},
        # No level: gunicorn's own (--log-level) stays.
        "loggers": {
            "gunicorn.error": {"handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"handlers": ["access_console"], "propagate": False},
        },
    }


def _formatters() -> dict[str, Any]:
    return {
        "json": {"()": f"{__name__}.JsonLogFormatter"},
        "text": {"()": f"{__name__}.TextLogFormatter"},
    }
