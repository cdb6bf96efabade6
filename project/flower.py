"""`celery -A project flower`: on loopback, and behind basic auth outside development.

Flower reads its own options from FLOWER_* variables (FLOWER_BASIC_AUTH, FLOWER_PORT,
FLOWER_ADDRESS, …; README, "Flower"), then from a `flowerconfig.py` in the working
directory, then from its command line. This module runs when the Celery app loads for the
flower command, before Flower reads them, so it holds wherever Flower is started from:

- it binds to 127.0.0.1 unless FLOWER_ADDRESS or --address says otherwise (Flower's own
  default is every interface);
- its task list shows each task's arguments, where the order id is (dualsend_app/enqueue.py);
- with DJANGO_DEBUG off it refuses to start without FLOWER_BASIC_AUTH: Flower shows every
  task and can revoke them and stop workers, so it is never open to whoever reaches it.
"""

import os

import click
from django.conf import settings

BASIC_AUTH_VARIABLE = "FLOWER_BASIC_AUTH"
DEFAULTS = {
    "FLOWER_ADDRESS": "127.0.0.1",
    "FLOWER_TASKS_COLUMNS": "name,uuid,state,args,kwargs,received,runtime,worker",
}


def configure_if_running() -> None:
    """Set Flower's defaults and refuse an open Flower, when the command is `flower`."""
    if _celery_command() != "flower":
        return
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    problem = basic_auth_problem(os.environ.get(BASIC_AUTH_VARIABLE, ""), debug=settings.DEBUG)
    if problem:
        raise SystemExit(f"dualsend: {problem}")


def basic_auth_problem(value: str, *, debug: bool) -> str | None:
    """Why Flower must not start with this FLOWER_BASIC_AUTH, or None. The value is never
    quoted: it holds passwords."""
    if not value:
        if debug:
            return None
        return (
            f"{BASIC_AUTH_VARIABLE} must be set when DJANGO_DEBUG is off "
            "(user:password, or several separated by commas)"
        )
    for position, entry in enumerate(value.split(","), start=1):
        user, _, password = entry.partition(":")
        if not user or not password:
            return f"{BASIC_AUTH_VARIABLE}: entry {position} is not user:password"
    return None


def _celery_command() -> str | None:
    """The `celery` sub-command being started (worker, beat, flower, …), if any: the app is
    loaded inside the `celery` group's callback, whose context names it."""
    context = click.get_current_context(silent=True)
    return context.invoked_subcommand if context is not None else None
