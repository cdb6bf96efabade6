"""A bad configuration stops start-up with a message naming the setting."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def manage_check(**env):
    """`manage.py check` in a fresh process with these environment variables."""
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_default_development_configuration_passes():
    """DJANGO_DEBUG on and nothing else set: the checks pass."""
    result = manage_check(DJANGO_DEBUG="1")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("INVENTORY_API_RATE_LIMIT", "fast", "INVENTORY_API_RATE_LIMIT"),
        ("PAYMENT_API_READ_TIMEOUT", "-1", "PAYMENT_API_READ_TIMEOUT"),
        ("INVENTORY_API_MAX_ATTEMPTS", "0", "INVENTORY_API_MAX_ATTEMPTS"),
        ("PAYMENT_API_BREAKER_FAILURE_RATE", "1.5", "PAYMENT_API_BREAKER_FAILURE_RATE"),
        ("INVENTORY_API_URL", "ftp://inventory", "INVENTORY_API_URL"),
        # A countdown longer than the Redis visibility timeout would run twice.
        ("DUALSEND_MAX_COUNTDOWN_SECONDS", "7200", "CELERY_VISIBILITY_TIMEOUT"),
    ],
)
def test_a_bad_value_stops_start_up_naming_it(variable, value, named):
    """Each of these refuses to start, and the message names the variable."""
    result = manage_check(DJANGO_DEBUG="1", **{variable: value})
    assert result.returncode != 0
    assert named in result.stderr


@pytest.mark.parametrize(
    "missing",
    ["DJANGO_SECRET_KEY", "DUALSEND_API_TOKENS", "INVENTORY_API_TOKEN", "PAYMENT_API_KEY"],
)
def test_production_refuses_to_start_without_its_secrets(missing):
    """DJANGO_DEBUG off: every secret and partner credential is required, by name."""
    production = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "s3cret-for-the-test",
        "DUALSEND_API_TOKENS": "t",
        "INVENTORY_API_URL": "https://inventory.example",
        "INVENTORY_API_TOKEN": "i",
        "PAYMENT_API_URL": "https://payment.example",
        "PAYMENT_API_KEY": "p",
    }
    result = manage_check(**(production | {missing: ""}))
    assert result.returncode != 0
    assert missing in result.stderr
