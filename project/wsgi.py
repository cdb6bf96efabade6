"""WSGI entry point for gunicorn."""

import os

import django
from django.core.handlers.wsgi import WSGIHandler

from dualsend_app import metrics_directory, tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# What get_wsgi_application() does, with tracing (only when OTEL_* asks for it) set up in
# between: after the apps are ready, before the handler loads the middleware.
django.setup(set_prefix=False)
tracing.setup_from_environment("web")
# Prometheus: the web process serves the host's metrics directory and tidies it as it starts
# (dualsend_app/metrics_directory.py: only the files of processes that have exited).
metrics_directory.remove_files_of_exited_processes()
application = WSGIHandler()
