"""DUALSEND_API_TOKENS names the API's clients; a bad entry stops start-up, token unsaid.

Start-up is tested as in tests/test_configuration.py: `manage.py check` in a fresh
process with the variable set, its exit status and its output read.
"""

import hashlib
import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from project.api_clients import ApiClient, parse_api_clients
from tests.processes import ROOT

SECRET = "s3cret-T0ken"


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


def sha_id(token):
    return hashlib.sha256(token.encode()).hexdigest()[:16]


# --- reading the variable ---------------------------------------------------------------


def test_named_and_plain_entries_are_each_a_client():
    """`name:token` is a client called name; a plain token is a client known by its hash."""
    clients = parse_api_clients(f"shop:{SECRET}, legacy-token ,backoffice:b:with:colons")

    assert [(c.id, c.name, c.token) for c in clients] == [
        ("shop", "shop", SECRET),
        (sha_id("legacy-token"), "", "legacy-token"),
        ("backoffice", "backoffice", "b:with:colons"),
    ]


def test_a_plain_token_keeps_the_client_id_its_orders_were_stored_under():
    """The id of a plain token is the sha256 prefix orders recorded before names existed."""
    (client,) = parse_api_clients("test-token")

    assert client.id == sha_id("test-token")
    assert client.label == client.id


def test_an_empty_value_is_no_client():
    assert parse_api_clients("") == ()
    assert parse_api_clients("  ") == ()


def test_the_token_never_shows_in_a_repr():
    (client,) = parse_api_clients(f"shop:{SECRET}")

    assert SECRET not in repr(client)
    assert isinstance(client, ApiClient)


BAD_ENTRIES = [
    (f":{SECRET}", "empty name"),
    ("shop:", "empty token"),
    (f"shop:{SECRET},", "empty entry"),
    (f"{SECRET},,other", "empty entry"),
    (f"{SECRET},{SECRET}", "duplicate plain token"),
    (f"shop:{SECRET},other:{SECRET}", "duplicate token"),
    (f"shop:{SECRET},shop:another-token", "duplicate name"),
    (f"shop:{SECRET} x", "space in token"),
    (f"shop:{SECRET}\tx", "tab in token"),
    (f"{SECRET}\x07", "control character in token"),
    (f"shop:{SECRET}é", "non-ASCII token"),
    (f"sh op:{SECRET}", "space in name"),
    (f"0123456789abcdef:{SECRET}", "name looking like a token id"),
]


@pytest.mark.parametrize(("value", "why"), BAD_ENTRIES, ids=[why for _, why in BAD_ENTRIES])
def test_a_bad_entry_is_refused_naming_the_variable_never_the_token(value, why):
    """ImproperlyConfigured names DUALSEND_API_TOKENS and the entry, not the secret."""
    with pytest.raises(ImproperlyConfigured) as refused:
        parse_api_clients(value)

    message = str(refused.value)
    assert message.startswith("DUALSEND_API_TOKENS")
    assert SECRET not in message


# --- start-up ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [f"shop:{SECRET},shop:{SECRET}2", f":{SECRET}", f"shop:{SECRET} tail", f"{SECRET},"],
    ids=["duplicate-name", "empty-name", "space-in-token", "empty-entry"],
)
def test_a_bad_token_list_stops_start_up_naming_it(value):
    """`manage.py check` fails, naming DUALSEND_API_TOKENS; no token in its output."""
    result = manage_check(DJANGO_DEBUG="1", DUALSEND_API_TOKENS=value)

    assert result.returncode != 0
    assert "DUALSEND_API_TOKENS" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_named_tokens_pass_the_checks():
    result = manage_check(DJANGO_DEBUG="1", DUALSEND_API_TOKENS=f"shop:{SECRET},plain-token")

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DUALSEND_CLIENT_RATE_LIMIT", "fast"),
        ("DUALSEND_CLIENT_RATE_LIMIT", "0/second"),
        ("DUALSEND_MAX_WAITERS", "-1"),
    ],
)
def test_a_bad_client_limit_stops_start_up_naming_it(variable, value):
    result = manage_check(DJANGO_DEBUG="1", **{variable: value})

    assert result.returncode != 0
    assert variable in result.stderr


@pytest.mark.parametrize("rate", ["50/s", "50/second", "600 per minute"])
def test_client_rates_in_either_syntax_pass_the_checks(rate):
    result = manage_check(DJANGO_DEBUG="1", DUALSEND_CLIENT_RATE_LIMIT=rate)

    assert result.returncode == 0, result.stderr
