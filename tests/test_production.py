"""Production fails closed (DJANGO_DEBUG off): nothing defaults to a development value.

It needs DATABASE_URL and https:// partners (plain http:// only to this machine, or with
DUALSEND_ALLOW_HTTP_PARTNERS=1), refuses a credential holding white space or a control
character without showing it, turns on HTTPS and secure cookies, and passes
`manage.py check --deploy` with no warning. docker-compose.yml defaults no partner setting
and keeps the simulators in its `dev` profile.
"""

import json
import os
import re
import secrets
import subprocess
import sys

import environ
import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured

from project.partner_settings import ALLOW_HTTP_VARIABLE, read_partner, required_in_production
from tests.processes import ROOT

INVENTORY_TOKEN = "inv-" + secrets.token_urlsafe(24)
PAYMENT_KEY = "pay-" + secrets.token_urlsafe(24)
PARTNER_VARIABLES = (
    "INVENTORY_API_URL",
    "INVENTORY_API_TOKEN",
    "PAYMENT_API_URL",
    "PAYMENT_API_KEY",
)


SECURITY_SETTINGS = (
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_SSL_REDIRECT",
    "SECURE_CONTENT_TYPE_NOSNIFF",
    "X_FRAME_OPTIONS",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_PROXY_SSL_HEADER",
)


def production_database_url():
    """The test run's PostgreSQL when there is one; else a realistic URL nobody connects to
    (`check` does not open the database)."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        return url
    return "postgres://dualsend:db-password@db.internal:5432/dualsend"


def production_environment():
    """What a real deployment sets: every secret, https partners, a real database."""
    return {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "dualsend.example.com",
        "DATABASE_URL": production_database_url(),
        "DUALSEND_API_TOKENS": f"shop:{secrets.token_urlsafe(24)}",
        "INVENTORY_API_URL": "https://inventory.example.com",
        "INVENTORY_API_TOKEN": INVENTORY_TOKEN,
        "PAYMENT_API_URL": "https://payment.example.com",
        "PAYMENT_API_KEY": PAYMENT_KEY,
    }


def manage(*arguments, **env):
    """`manage.py <arguments>` in a fresh process: the test environment, then `env`;
    a value of None removes the variable."""
    environment = os.environ | production_environment() | env
    environment = {name: value for name, value in environment.items() if value is not None}
    return subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def production_settings(**env):
    """The security settings as a production process reads them (each value's repr)."""
    names = ", ".join(repr(name) for name in SECURITY_SETTINGS)
    code = (
        "from django.conf import settings; import json; "
        f"print(json.dumps({{name: repr(getattr(settings, name)) for name in ({names},)}}))"
    )
    result = manage("shell", "--no-imports", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- the whole process --------------------------------------------------------------------


def test_check_deploy_passes_without_a_warning_in_production():
    """`manage.py check --deploy --fail-level WARNING` exits 0 with production settings."""
    result = manage("check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr


def test_https_and_secure_cookies_are_on_in_production():
    """Secure by default; X-Forwarded-Proto is believed only when asked to."""
    assert production_settings() == {
        "SESSION_COOKIE_SECURE": "True",
        "CSRF_COOKIE_SECURE": "True",
        "SECURE_SSL_REDIRECT": "True",
        "SECURE_CONTENT_TYPE_NOSNIFF": "True",
        "X_FRAME_OPTIONS": "'DENY'",
        "SECURE_HSTS_SECONDS": "3600",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "True",
        "SECURE_PROXY_SSL_HEADER": "None",
    }


def test_behind_a_tls_proxy_the_redirect_and_hsts_follow_the_environment():
    """A TLS-terminating proxy: trust its X-Forwarded-Proto; the redirect and HSTS can be
    set from the environment."""
    read = production_settings(
        DJANGO_SECURE_PROXY_SSL_HEADER="1",
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_SECURE_HSTS_SECONDS="31536000",
    )

    assert read["SECURE_PROXY_SSL_HEADER"] == "('HTTP_X_FORWARDED_PROTO', 'https')"
    assert read["SECURE_SSL_REDIRECT"] == "False"
    assert read["SECURE_HSTS_SECONDS"] == "31536000"


def test_production_refuses_to_start_without_database_url():
    """No silent SQLite file in production: DATABASE_URL is required, by name."""
    result = manage("check", DATABASE_URL=None)

    assert result.returncode != 0
    assert "DATABASE_URL must be set when DJANGO_DEBUG is off" in result.stderr


@pytest.mark.parametrize("variable", ["INVENTORY_API_URL", "PAYMENT_API_URL"])
def test_production_refuses_a_plain_http_partner(variable):
    """http:// to another host is refused at start, naming the variable and the way out."""
    result = manage("check", **{variable: "http://partner.example.com"})

    assert result.returncode != 0
    assert f"{variable} must be https://" in result.stderr
    assert ALLOW_HTTP_VARIABLE in result.stderr


@pytest.mark.parametrize(
    "variable", ["DJANGO_SECRET_KEY", "INVENTORY_API_TOKEN", "PAYMENT_API_KEY"]
)
def test_a_secret_with_a_trailing_newline_stops_start_up_unshown(variable):
    """A pasted newline is refused at start: the variable is named, the value never shown."""
    value = "pasted-" + secrets.token_urlsafe(16)

    result = manage("check", **{variable: value + "\n"})

    assert result.returncode != 0
    assert f"{variable} holds white space or a control character" in result.stderr
    assert value not in result.stderr + result.stdout


# --- the partner URL rule, read as the settings read it ----------------------------------


def read_inventory_in_production(monkeypatch, url, **env):
    monkeypatch.setenv("INVENTORY_API_URL", url)
    monkeypatch.setenv("INVENTORY_API_TOKEN", INVENTORY_TOKEN)
    monkeypatch.delenv(ALLOW_HTTP_VARIABLE, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return read_partner(
        environ.Env(),
        "inventory",
        prefix="INVENTORY_API",
        url="http://127.0.0.1:8101",
        credential_name="INVENTORY_API_TOKEN",
        development_credential="dev-inventory-token",
        debug=False,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8101",
        "http://127.0.0.1:8101",
        "http://127.8.9.10",
        "http://[::1]:8101/",
        "https://inventory.example.com/",
    ],
)
def test_https_or_loopback_http_is_accepted_in_production(monkeypatch, url):
    """Plain http:// to this machine (localhost, 127.0.0.0/8, ::1) is no wire to sniff."""
    assert read_inventory_in_production(monkeypatch, url).base_url == url.rstrip("/")


@pytest.mark.parametrize(
    "url", ["http://inventory.example.com", "http://10.0.0.7:8101", "http://127.0.0.1.example.com"]
)
def test_plain_http_elsewhere_is_refused_in_production(monkeypatch, url):
    with pytest.raises(ImproperlyConfigured, match="INVENTORY_API_URL must be https://"):
        read_inventory_in_production(monkeypatch, url)


def test_plain_http_elsewhere_is_accepted_when_explicitly_allowed(monkeypatch):
    """DUALSEND_ALLOW_HTTP_PARTNERS=1: a private network the operator trusts."""
    config = read_inventory_in_production(
        monkeypatch, "http://inventory.internal:8101", **{ALLOW_HTTP_VARIABLE: "1"}
    )

    assert config.base_url == "http://inventory.internal:8101"


def test_a_partner_url_with_user_info_is_refused_without_showing_it(monkeypatch):
    """user:password@ in the URL would put a secret where errors show URLs."""
    with pytest.raises(ImproperlyConfigured) as refused:
        read_inventory_in_production(monkeypatch, "https://user:hunter2-secret@inventory.example")

    assert str(refused.value).startswith("INVENTORY_API_URL must not hold user:password@")
    assert "hunter2-secret" not in str(refused.value)


@pytest.mark.parametrize(
    "value", ["two words", "tab\tinside", "trailing-newline\n", "\x1b[31mred", "nbsp\u00a0key"]
)
@pytest.mark.parametrize("debug", [False, True])
def test_a_credential_with_white_space_or_a_control_character_is_refused(monkeypatch, value, debug):
    """Refused in production and in development alike, the value never in the message."""
    monkeypatch.setenv("PAYMENT_API_KEY", value)

    with pytest.raises(ImproperlyConfigured) as refused:
        required_in_production(
            environ.Env(), "PAYMENT_API_KEY", debug=debug, development_value="dev-payment-key"
        )

    message = str(refused.value)
    assert message.startswith("PAYMENT_API_KEY holds white space or a control character")
    assert value.strip() not in message


# --- docker-compose.yml -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_requires_every_partner_setting(compose):
    """Each partner URL and credential is `${VAR:?message}`: no simulator default."""
    environment = compose["x-app"]["environment"]
    for variable in PARTNER_VARIABLES:
        assert re.fullmatch(rf"\$\{{{variable}:\?[^}}]+\}}", environment[variable]), variable


def test_compose_runs_the_simulators_only_in_the_dev_profile(compose):
    """`docker compose up` starts no simulator; `--profile dev` does; nothing needs them."""
    services = compose["services"]
    assert services["partners"]["profiles"] == ["dev"]
    for name, service in services.items():
        if name != "partners":
            assert "profiles" not in service, name
            assert "partners" not in (service.get("depends_on") or {}), name


def test_compose_says_how_to_run_with_the_simulators():
    text = (ROOT / "docker-compose.yml").read_text()

    assert "docker compose --profile dev up" in text
    assert "INVENTORY_API_URL=http://partners:8101" in text
    assert "PAYMENT_API_URL=http://partners:8102" in text
