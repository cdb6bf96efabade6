"""A Celery worker's side of the metrics: its own port (many hosts), and its exit.

One host: nothing to do here. The worker writes its series to the host's directory and the
web process's /metrics adds them up.

Many hosts: a worker started with `DUALSEND_METRICS_PORT` serves its own series on that
port, at any path (Prometheus asks for /metrics), on every interface, to the same clients
as /metrics (`metrics_access.py`). Its files are in a directory of its own (settings: the
port's directory), tidied here as it starts and added up at each scrape, so the processes
of a prefork pool are in it too. The breaker and queue series are not: they are the same
whichever process reads them, and the web's /metrics has them.

Called from the Celery signals in `project/celery.py`, once the settings have loaded.
"""

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from celery import signals
from django.conf import settings
from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.multiprocess import mark_process_dead

from . import metrics, metrics_access, metrics_directory

logger = logging.getLogger(__name__)

BIND_ADDRESS = "0.0.0.0"  # noqa: S104  (many hosts: Prometheus scrapes from elsewhere)

WsgiApp = Callable[[dict[str, Any], Callable], Iterable[bytes]]


def on_worker_init(**_: object) -> None:
    """The worker starts: serve its port if it has one; tidy its files when it exits."""
    signals.worker_process_shutdown.connect(on_process_exit, weak=False)
    signals.worker_shutdown.connect(on_process_exit, weak=False)
    if settings.DUALSEND_METRICS_PORT:
        serve_own_port(settings.DUALSEND_METRICS_PORT)


def on_process_exit(**_: object) -> None:
    """prometheus_client's bookkeeping for a process that ends: its live gauges (none of
    ours today, but any added later) stop counting."""
    mark_process_dead(os.getpid())


def serve_own_port(port: int) -> ThreadingWSGIServer | None:
    """Serve this worker's series on `port` from a daemon thread; None if it is taken."""
    metrics_directory.remove_files_of_exited_processes()
    app = guarded(make_wsgi_app(metrics.registry_for_scrape()))
    try:
        server = make_server(BIND_ADDRESS, port, app, ThreadingWSGIServer, QuietHandler)
    except OSError as exc:
        logger.error(
            "metrics: cannot serve on port %s (%s); this worker has no metrics port", port, exc
        )
        return None
    threading.Thread(target=server.serve_forever, name="metrics-port", daemon=True).start()
    logger.info("metrics: this worker's series on port %s", port)
    return server


def guarded(app: WsgiApp) -> WsgiApp:
    """`app` for the clients that may read the metrics; 403 in the API's error shape for
    the others."""
    refusal = json.dumps(
        {
            "error": {
                "code": metrics_access.FORBIDDEN_CODE,
                "message": metrics_access.FORBIDDEN_MESSAGE,
            }
        }
    ).encode()

    def guarded_app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if metrics_access.may_read_metrics(environ):
            return app(environ, start_response)
        start_response("403 Forbidden", [("Content-Type", "application/json")])
        return [refusal]

    return guarded_app


class QuietHandler(WSGIRequestHandler):
    """No access log line for every scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        pass
