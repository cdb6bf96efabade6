"""`manage.py check_partner`: the partner conformance kit, against our simulators and
against partners of the tests' own making, some keeping the contract, some breaking it.

A partner is judged by partner-apis.md alone: a server that keeps the contract in another
dialect than our simulators' (200 on a replay, 403 for a wrong key, a 429 first) passes;
a server that breaks one rule fails that check by name. Whatever happens, the kit undoes
what it reserved or charged, which the partners' own ledgers show.
"""

import base64
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from devstack import free_port
from devstack.conformance import checks
from tests import environment
from tests.processes import ROOT

INVENTORY_URL = environment.TEST_ENVIRONMENT["INVENTORY_API_URL"]
PAYMENT_URL = environment.TEST_ENVIRONMENT["PAYMENT_API_URL"]
INVENTORY_TOKEN = environment.TEST_ENVIRONMENT["INVENTORY_API_TOKEN"]
PAYMENT_KEY = environment.TEST_ENVIRONMENT["PAYMENT_API_KEY"]
CARD_SOURCE = "tok_visa_for_the_kit"  # what --card-source sends; never to be printed

EVERY_CHECK = (
    "auth refused without credentials",
    "auth refused with wrong credentials",
    "replay: same answer, one effect",
    "replay marked Idempotent-Replayed",
    "key reused, other body: 422",
    "rate-limit headers on every answer",
    "error body shape",
)


def kit_options(inventory_url=INVENTORY_URL, payment_url=PAYMENT_URL, *extra):
    return [
        "--inventory-url", inventory_url, "--inventory-token", INVENTORY_TOKEN,
        "--payment-url", payment_url, "--payment-key", PAYMENT_KEY,
        "--card-source", CARD_SOURCE, *extra,
    ]  # fmt: skip


def run_kit(*options):
    """(exit code, printed table) of the command run in this process."""
    out = StringIO()
    try:
        call_command("check_partner", *options, stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue()
    return 0, out.getvalue()


def row(table, check, partner):
    """The row of `check` for `partner` (its first line), or ''."""
    for line in table.splitlines():
        if line.startswith(check) and line[len(check) :].split()[:1] == [partner]:
            return line
    return ""


def failed_checks(table):
    return {
        line.removeprefix("FAILED: ") for line in table.splitlines() if line.startswith("FAILED:")
    }


def secrets_printed(text):
    forms = {
        INVENTORY_TOKEN,
        PAYMENT_KEY,
        base64.b64encode(f"{PAYMENT_KEY}:".encode()).decode(),
        CARD_SOURCE,
    }
    return sorted(form for form in forms if form in text)


def totals(ledger):
    """The simulators' effect counters summed over every order, and the orders standing."""
    orders = ledger["orders"].values()
    counts = Counter()
    for entry in orders:
        counts.update(
            {name: entry[name] for name in ("reserved", "released", "charged", "refunded")}
        )
    standing = [o["order_id"] for o in orders if o["reservation_standing"] or o["charge_standing"]]
    return counts, standing


# --- against our simulators ---------------------------------------------------------------


def test_every_check_passes_against_the_simulators_and_nothing_stays_reserved_or_charged(sim):
    """One reservation and one charge made (the replay acts no more), both undone."""
    code, table = run_kit(*kit_options())

    assert code == 0, table
    assert "20 checks: 20 passed, 0 failed" in table
    for check in (*EVERY_CHECK, "reservation made", "release of an unknown order: 404"):
        assert "PASS" in row(table, check, "inventory").split(), check
    for check in (*EVERY_CHECK, "charge made", "refund of an unknown order: 404"):
        assert "PASS" in row(table, check, "payment").split(), check
    counts, standing = totals(sim.ledger())
    assert counts == Counter(reserved=1, released=1, charged=1, refunded=1)
    assert standing == []
    assert secrets_printed(table) == []


def test_as_a_command_line_it_exits_0_prints_the_table_and_no_secret(sim):
    result = subprocess.run(
        [sys.executable, "manage.py", "check_partner", *kit_options()],
        cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[3].split() == ["CHECK", "PARTNER", "RESULT", "EVIDENCE"]
    assert "cleanup: refund everything" in result.stdout
    assert secrets_printed(result.stdout + result.stderr) == []
    assert totals(sim.ledger())[1] == []


def test_a_missing_option_is_a_usage_error_exit_2():
    result = subprocess.run(
        [sys.executable, "manage.py", "check_partner", "--inventory-url", INVENTORY_URL,
         "--inventory-token", INVENTORY_TOKEN, "--payment-url", PAYMENT_URL],
        cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 2
    assert "the following arguments are required: --payment-key" in result.stderr
    assert result.stdout == ""


def test_an_unreachable_partner_is_a_fail_with_its_evidence_not_a_traceback(sim):
    closed = f"http://127.0.0.1:{free_port()}"

    code, table = run_kit(*kit_options(closed, PAYMENT_URL, "--retries", "0"))

    assert code == 1
    assert "Connection refused" in row(table, "auth refused without credentials", "inventory")
    assert "not run: inventory gave no answer" in row(table, "reservation made", "inventory")
    assert "FAIL" in row(table, "cleanup: release everything", "inventory").split()
    assert "PASS" in row(table, "cleanup: refund everything", "payment").split()
    assert "Traceback" not in table
    assert totals(sim.ledger())[1] == []


def test_ctrl_c_in_the_middle_still_undoes_what_was_made(sim, monkeypatch):
    """Interrupted right after the reservation: it is released, and nothing else was made."""

    def interrupt(run):
        raise KeyboardInterrupt

    made_then_interrupted = (*checks.CHECKS[:3], checks.Check("Ctrl-C here", interrupt))
    monkeypatch.setattr(checks, "CHECKS", made_then_interrupted)

    code, table = run_kit(*kit_options())

    assert code == 130
    assert "INTERRUPTED" in table
    assert "PASS" in row(table, "cleanup: release everything", "inventory").split()
    counts, standing = totals(sim.ledger())
    assert counts == Counter(reserved=1, released=1)
    assert standing == []


# --- against partners of our own making --------------------------------------------------


class FakePartner(ThreadingHTTPServer):
    """Both partner APIs on one port, keeping the contract unless told to break a rule.

    breaks: "ignores_idempotency_keys" (every request acts, a replay makes a new id),
    "no_rate_limit_headers", "accepts_no_credentials". dialect: keeps the contract unlike
    our simulators do (a 429 with Retry-After first, 200 on a replay, 403 for a wrong
    credential, a fractional X-RateLimit-Reset).
    """

    def __init__(self, breaks=None, dialect=False):
        super().__init__(("127.0.0.1", 0), FakePartnerHandler)
        self.breaks, self.dialect = breaks, dialect
        self.lock = threading.Lock()
        self.keys = {}
        self.standing = Counter()  # (what, order id) -> reservations or charges standing
        self.effects = 0
        self.throttled = set()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, method, path, headers, body):
        """(status, JSON body, extra headers) of one request."""
        if not self.authorized(path, headers.get("Authorization")):
            return (
                (403 if self.dialect and headers.get("Authorization") else 401),
                error("unauthorized"),
                {},
            )
        if (
            self.dialect
            and path in ("/v1/reservations", "/v1/charges")
            and path not in self.throttled
        ):
            self.throttled.add(path)
            return 429, error("rate_limited"), {"Retry-After": "1"}
        key = headers.get("Idempotency-Key")
        with self.lock:
            if key in self.keys and self.breaks != "ignores_idempotency_keys":
                fingerprint, status, stored = self.keys[key]
                if fingerprint != (method, path, body):
                    return 422, error("idempotency_key_reused"), {}
                return (200 if self.dialect else status), stored, {"Idempotent-Replayed": "true"}
            status, answer = self.act(method, path, json.loads(body) if body else {})
            self.keys[key] = ((method, path, body), status, answer)
        return status, answer, {}

    def act(self, method, path, payload):
        if method == "DELETE":
            return self.undo(("reserved", path.rsplit("/", 1)[-1]), "released")
        if path == "/v1/refunds":
            return self.undo(("charged", payload["order_id"]), "refunded")
        self.effects += 1
        if path == "/v1/reservations":
            self.standing["reserved", payload["order_id"]] += 1
            return 201, payload | {"reservation_id": f"res_{self.effects}", "status": "reserved"}
        self.standing["charged", payload["order_id"]] += 1
        fields = {"order_id": payload["order_id"], "amount": payload["amount"]}
        return 201, fields | {"charge_id": f"ch_{self.effects}", "status": "captured",
                              "currency": payload["currency"]}  # fmt: skip

    def undo(self, what, status):
        if not self.standing[what]:
            return 404, error("not_found")
        self.standing[what] = 0
        return (200 if status == "released" else 201), {"order_id": what[1], "status": status}

    def authorized(self, path, header):
        if header is None:
            return self.breaks == "accepts_no_credentials"
        if path.startswith("/v1/reservations"):
            return header == f"Bearer {INVENTORY_TOKEN}"
        return header == "Basic " + base64.b64encode(f"{PAYMENT_KEY}:".encode()).decode()

    def rate_limit_headers(self):
        if self.breaks == "no_rate_limit_headers":
            return {}
        reset = "0.75" if self.dialect else "1"
        return {
            "X-RateLimit-Limit": "100",
            "X-RateLimit-Remaining": "99",
            "X-RateLimit-Reset": reset,
        }


class FakePartnerHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.respond()

    def do_DELETE(self):
        self.respond()

    def respond(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, answer, extra = self.server.answer(self.command, self.path, self.headers, body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data)),
                   **self.server.rate_limit_headers(), **extra}  # fmt: skip
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass


def error(code):
    return {"error": {"code": code, "message": f"fake partner: {code}"}}


@pytest.fixture
def fake_partner():
    servers = []

    def start(**behaviour):
        server = FakePartner(**behaviour)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_partner_keeping_the_contract_in_another_dialect_passes(fake_partner):
    """429 with Retry-After first (waited for, same key), 200 on replays, 403 for a wrong
    credential, a fractional reset: all within partner-apis.md."""
    partner = fake_partner(dialect=True)

    code, table = run_kit(*kit_options(partner.url, partner.url))

    assert code == 0, table
    assert "429 rate_limited, waited 1 s" in row(table, "reservation made", "inventory")
    assert "-> 403" in row(table, "auth refused with wrong credentials", "payment")
    assert sum(partner.standing.values()) == 0
    assert partner.effects == 2


@pytest.mark.parametrize(
    ("breaks", "failing"),
    [
        (
            "ignores_idempotency_keys",
            {"replay: same answer, one effect", "replay marked Idempotent-Replayed",
             "key reused, other body: 422"},
        ),
        ("no_rate_limit_headers", {"rate-limit headers on every answer"}),
        ("accepts_no_credentials", {"auth refused without credentials"}),
    ],
)  # fmt: skip
def test_a_partner_breaking_a_rule_fails_that_check_and_is_still_cleaned_up(
    fake_partner, breaks, failing
):
    partner = fake_partner(breaks=breaks)

    code, table = run_kit(*kit_options(partner.url, partner.url))

    assert code == 1
    expected = {f"{check} ({name})" for check in failing for name in ("inventory", "payment")}
    assert failed_checks(table) == expected
    assert "PASS" in row(table, "cleanup: release everything", "inventory").split()
    assert "PASS" in row(table, "cleanup: refund everything", "payment").split()
    assert partner.effects >= 2
    assert sum(partner.standing.values()) == 0
