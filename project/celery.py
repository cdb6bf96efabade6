"""The Celery app. Everything else (queues, routes, acks, time limits) is in settings."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("dualsend")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Our tasks live in the top-level `tasks` package, not in an app: name its modules.
app.conf.imports = ("tasks.sends", "tasks.settle", "tasks.compensations", "tasks.sweeper")
