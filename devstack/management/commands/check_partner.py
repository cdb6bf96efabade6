"""``manage.py check_partner``: check a partner's sandbox against partner-apis.md.

    python manage.py check_partner \\
        --inventory-url https://inventory.sandbox.example --inventory-token T \\
        --payment-url https://payments.sandbox.example --payment-key K

Prints a pass/fail table with the evidence (credentials and card data masked), undoes
whatever it reserved or charged, and exits 0 when every check passed, 1 when one failed,
2 on bad usage, 130 when interrupted (after its cleanup). See devstack/conformance/.
"""

from argparse import ArgumentParser, ArgumentTypeError
from typing import Any
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError

from devstack.conformance import report
from devstack.conformance.contract import INVENTORY, PAYMENT, PartnerUnderTest, SandboxData
from devstack.conformance.runner import HttpOptions, run_checks

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class Command(BaseCommand):
    help = (
        "Check a partner's sandbox against partner-apis.md: auth, idempotent replays, "
        "422 on a reused key, 404 on undoing an unknown order, rate-limit headers, the error "
        "shape. Undoes whatever it made. Exit 0 when every check passed, 1 otherwise."
    )

    # It talks to the partners only: no database, Redis or broker needs to be up.
    requires_system_checks = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--inventory-url", required=True, type=base_url)
        parser.add_argument("--inventory-token", required=True, type=non_empty)
        parser.add_argument("--payment-url", required=True, type=base_url)
        parser.add_argument("--payment-key", required=True, type=non_empty)
        defaults = SandboxData()
        parser.add_argument(
            "--sku", default=defaults.sku, type=non_empty,
            help=f"a SKU the sandbox has in stock ({defaults.sku})",
        )  # fmt: skip
        parser.add_argument(
            "--amount", default=defaults.amount, type=positive_int,
            help=f"the charge, in minor units ({defaults.amount})",
        )  # fmt: skip
        parser.add_argument("--currency", default=defaults.currency, type=non_empty)
        parser.add_argument(
            "--card-source", default=defaults.card_source, type=non_empty,
            help="a card token the sandbox accepts (tok_visa); never printed",
        )  # fmt: skip
        parser.add_argument(
            "--timeout", default=10.0, type=positive_float,
            help="seconds to connect, and to wait for each answer (10)",
        )  # fmt: skip
        parser.add_argument(
            "--retries", default=3, type=non_negative_int,
            help="retries of a transient answer (408, 409 in progress, 429, 5xx, none) (3)",
        )  # fmt: skip
        parser.add_argument(
            "--max-wait", default=60.0, type=positive_float,
            help="the longest Retry-After the kit waits for before a retry (60 s)",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        data = SandboxData(
            sku=options["sku"],
            amount=options["amount"],
            currency=options["currency"],
            card_source=options["card_source"],
        )
        partners = [
            PartnerUnderTest(INVENTORY, options["inventory_url"], options["inventory_token"], data),
            PartnerUnderTest(PAYMENT, options["payment_url"], options["payment_key"], data),
        ]
        http_options = HttpOptions(
            timeout=options["timeout"], retries=options["retries"], max_wait=options["max_wait"]
        )
        outcome = run_checks(partners, http_options)
        self.stdout.write(report.render(outcome, partners), ending="")
        if outcome.interrupted:
            raise CommandError("interrupted (cleanup done)", returncode=EXIT_INTERRUPTED)
        if outcome.failed:
            names = ", ".join(f"{r.check} ({r.partner})" for r in outcome.failed)
            raise CommandError(
                f"{len(outcome.failed)} of {len(outcome.results)} checks failed: {names}",
                returncode=EXIT_FAILED,
            )


# Option types: a bad value is a usage error (exit 2), before anything is sent.


def base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ArgumentTypeError("expected an http:// or https:// URL")
    return value


def non_empty(value: str) -> str:
    if not value.strip():
        raise ArgumentTypeError("must not be empty")
    return value


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ArgumentTypeError("must be a positive integer")
    return number


def non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ArgumentTypeError("must be 0 or more")
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ArgumentTypeError("must be more than 0")
    return number
