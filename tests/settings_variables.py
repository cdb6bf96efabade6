"""Every environment variable that project/settings.py reads, collected two ways.

- Run: the settings are loaded in a fresh process whose `os.environ` records each name
  looked up (django-environ, SettingReader, read_partner and `os.environ` itself all end
  there), once in development (DJANGO_DEBUG on, SQLite) and once in production
  (DJANGO_DEBUG off, PostgreSQL, RabbitMQ), so both sides of each branch are read. A lookup
  counts when settings.py's own code made it, directly or through any call (our helpers,
  a library); what a module reads while it is being imported does not.
- Read: every `env.<cast>("NAME", ...)` call in settings.py, parsed with `ast`, so a
  variable read only in a branch neither run reaches (a new one, say) is still found.

The union is what the README's configuration table and .env.example must list.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ROOT / "project" / "settings.py"

RECORDER = f"""
import json, os, sys

SETTINGS = {str(SETTINGS)!r}
read = set()


def asked_by_settings(frame):
    # Outward from the lookup: settings.py's own code first means it asked (through
    # django-environ, a helper of ours, a library call); an import first means a module
    # reading as it loads (Celery, kombu: not settings).
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename == SETTINGS:
            return True
        if filename.startswith("<frozen importlib"):
            return False
        frame = frame.f_back
    return False


class Recording(type(os.environ)):
    def __getitem__(self, key):
        if asked_by_settings(sys._getframe(1)):
            read.add(key)
        return super().__getitem__(key)


os.environ.__class__ = Recording
import project.settings  # noqa: E402

print(json.dumps(sorted(read)))
"""

DEVELOPMENT = {"DJANGO_DEBUG": "1"}
PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "settings-variables-test",
    "DATABASE_URL": "postgres://dualsend@db.invalid:5432/dualsend",
    "CELERY_BROKER_URL": "amqp://guest:guest@broker.invalid:5672//",
    "DUALSEND_API_TOKENS": "settings-variables-test",
    "INVENTORY_API_URL": "https://inventory.invalid",
    "INVENTORY_API_TOKEN": "settings-variables-test",
    "PAYMENT_API_URL": "https://payment.invalid",
    "PAYMENT_API_KEY": "settings-variables-test",
}


def read_when_run(environment: dict[str, str]) -> set[str]:
    """The names settings.py looks up when loaded with only this environment (and PATH)."""
    result = subprocess.run(
        [sys.executable, "-c", RECORDER],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"} | environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def read_in_the_source() -> set[str]:
    """The first argument of every `env.<cast>("NAME", ...)` call in settings.py."""
    names = set()
    for node in ast.walk(ast.parse(SETTINGS.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "env"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def settings_variables() -> set[str]:
    """Every variable the settings read, in development and in production."""
    return read_when_run(DEVELOPMENT) | read_when_run(PRODUCTION) | read_in_the_source()
