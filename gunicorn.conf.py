"""gunicorn's settings: read from the working directory by any `gunicorn project.wsgi …`.

Its own logs as the app's (dualsend_app/log_formats.py): one JSON object per line when
DJANGO_DEBUG is off, text when on, DUALSEND_LOG_FORMAT (json or text) to choose. The
access log goes to stdout, each line with the request's method, path, status, duration,
its `correlation_id` (the answer's X-Request-ID) and the `order_id` the request was about;
the error log to stderr. No request header is logged (gunicorn offers them all to the
access line, Authorization included), and no user either: `%(u)s` would decode a Basic
`Authorization` header.
"""

import os

import environ

# gunicorn puts its working directory (--chdir) on sys.path before it reads this file.
from dualsend_app.log_formats import gunicorn_logging_config, log_format

_format = log_format(
    os.environ.get("DUALSEND_LOG_FORMAT", ""),
    debug=environ.Env().bool("DJANGO_DEBUG", default=False),
)
logconfig_dict = gunicorn_logging_config(_format)
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'


def post_worker_init(worker: object) -> None:
    """The app is loaded: freeze what start-up made (project/startup_gc.py)."""
    from project.startup_gc import freeze_start_up_objects

    freeze_start_up_objects("web")
