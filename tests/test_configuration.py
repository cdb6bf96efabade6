"""A bad configuration stops start-up with a message naming the setting."""

import dataclasses
import os
import subprocess
import sys

import environ
import kombu
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from dualsend_app import checks
from project import redis_transport
from project.partner_settings import parse_rate, read_partner
from tests.processes import ROOT


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
    [
        "DJANGO_SECRET_KEY",
        "DUALSEND_API_TOKENS",
        "INVENTORY_API_TOKEN",
        "PAYMENT_API_KEY",
        "PAYMENT_API_URL",
        "DATABASE_URL",
    ],
)
def test_production_refuses_to_start_without_its_secrets(missing):
    """DJANGO_DEBUG off: every secret and partner credential is required, by name."""
    production = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "s3cret-for-the-test",
        "DATABASE_URL": "postgres://dualsend@db.internal:5432/dualsend",
        "DUALSEND_API_TOKENS": "t",
        "INVENTORY_API_URL": "https://inventory.example",
        "INVENTORY_API_TOKEN": "i",
        "PAYMENT_API_URL": "https://payment.example",
        "PAYMENT_API_KEY": "p",
    }
    result = manage_check(**(production | {missing: ""}))
    assert result.returncode != 0
    assert missing in result.stderr


# --- each partner value, checked as the settings read it -------------------------------


def read_inventory(*, debug=True):
    """The inventory partner's settings, read from the environment as settings.py does."""
    return read_partner(
        environ.Env(),
        "inventory",
        prefix="INVENTORY_API",
        url="http://127.0.0.1:8101",
        credential_name="INVENTORY_API_TOKEN",
        development_credential="dev-inventory-token",
        debug=debug,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INVENTORY_API_URL", "ftp://inventory"),
        ("INVENTORY_API_CONNECT_TIMEOUT", "0"),
        ("INVENTORY_API_READ_TIMEOUT", "-1"),
        ("INVENTORY_API_READ_TIMEOUT", "soon"),
        ("INVENTORY_API_READ_TIMEOUT", "nan"),
        ("INVENTORY_API_MAX_ATTEMPTS", "0"),
        ("INVENTORY_API_MAX_ATTEMPTS", "2.5"),
        ("INVENTORY_API_BACKOFF_BASE", "-0.5"),
        ("INVENTORY_API_BACKOFF_MAX", "0"),
        ("INVENTORY_API_DEADLINE", "0"),
        ("INVENTORY_API_POOL_SIZE", "0"),
        ("INVENTORY_API_RATE_LIMIT", "fast"),
        ("INVENTORY_API_RATE_LIMIT", "0/s"),
        ("INVENTORY_API_SLOWDOWN_BELOW", "-1"),
        ("INVENTORY_API_BREAKER_WINDOW", "0"),
        ("INVENTORY_API_BREAKER_MIN_CALLS", "0"),
        ("INVENTORY_API_BREAKER_FAILURE_RATE", "0"),
        ("INVENTORY_API_BREAKER_SLOW_CALL_SECONDS", "0"),
        ("INVENTORY_API_BREAKER_SLOW_CALL_RATE", "1.5"),
        ("INVENTORY_API_BREAKER_OPEN_SECONDS", "-1"),
        ("INVENTORY_API_BREAKER_HALF_OPEN_PROBES", "0"),
    ],
)
def test_a_bad_partner_value_is_refused_when_read_naming_variable_and_value(
    monkeypatch, variable, value
):
    """Reading the partner raises ImproperlyConfigured: the variable first, then the value."""
    monkeypatch.setenv(variable, value)

    with pytest.raises(ImproperlyConfigured) as refused:
        read_inventory()

    message = str(refused.value)
    assert message.startswith(variable)
    assert value in message


@pytest.mark.parametrize(
    "rate", ["50/s", "50/m", "50/h", "50/second", "50 per second", "50/minute", "10/2 seconds"]
)
def test_rates_in_either_syntax_are_accepted(monkeypatch, rate):
    """Our short form (N/s, N/m, N/h) and the limits syntax both parse."""
    monkeypatch.setenv("INVENTORY_API_RATE_LIMIT", rate)

    assert read_inventory().rate_limit == rate
    assert parse_rate(rate).amount in (50, 10)


def test_production_has_no_default_partner_url(monkeypatch):
    """DJANGO_DEBUG off: the simulator's URL is no default, the variable is required."""
    monkeypatch.delenv("INVENTORY_API_URL", raising=False)
    monkeypatch.setenv("INVENTORY_API_TOKEN", "i")

    with pytest.raises(ImproperlyConfigured, match="INVENTORY_API_URL must be set"):
        read_inventory(debug=False)


def test_partner_settings_are_frozen_and_typed():
    """Read once into attributes, not string keys; nobody changes them afterwards."""
    payment = settings.DUALSEND_PARTNERS["payment"]

    assert payment.longest_call_seconds == payment.connect_timeout + payment.read_timeout
    assert 0 < payment.breaker.failure_rate <= 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        payment.read_timeout = 1


def test_the_credential_never_shows_in_a_repr():
    """The payment key is a secret: not in the repr a log line or a traceback would show."""
    payment = settings.DUALSEND_PARTNERS["payment"]

    assert payment.credential
    assert payment.credential not in repr(payment)
    assert payment.credential not in repr(settings.DUALSEND_PARTNERS)


# --- the kombu fix names the kombu it was checked against -------------------------------


def test_the_kombu_fix_check_passes_on_the_pinned_kombu():
    """The installed kombu is the one project/redis_transport.py was checked against."""
    assert kombu.__version__ == redis_transport.CHECKED_AGAINST_KOMBU
    assert checks.check_the_kombu_fix_matches_kombu(None) == []


def test_another_kombu_fails_the_check_until_the_fix_is_rechecked(monkeypatch):
    """An upgraded kombu is an error naming both versions and what to do."""
    monkeypatch.setattr(kombu, "__version__", "5.8.0")

    errors = checks.check_the_kombu_fix_matches_kombu(None)

    assert [error.id for error in errors] == ["dualsend.E005"]
    assert "5.8.0" in errors[0].msg
    assert redis_transport.CHECKED_AGAINST_KOMBU in errors[0].msg
    assert "CHECKED_AGAINST_KOMBU" in errors[0].hint
