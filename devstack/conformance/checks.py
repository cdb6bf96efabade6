"""The checks: what partner-apis.md says, asked of one partner, one small function each.

| check                               | partner-apis.md                                       |
| ----------------------------------- | ----------------------------------------------------- |
| auth refused without credentials    | "Auth: …"; 401 and 403 are its refusals               |
| auth refused with wrong credentials | the same, with a credential that is not the partner's |
| {effect} made                       | `201` and the body of the success row                 |
| replay: same answer, one effect     | "the same key and the same body gets the first answer |
|                                     | again … and no second side effect": the same id       |
| replay marked Idempotent-Replayed   | "… with `Idempotent-Replayed: true`"                  |
| key reused, other body: 422         | "`422` (`idempotency_key_reused`)"                    |
| {undo} of an unknown order: 404     | "`404 not_found`": nothing reserved / no charge       |
| rate-limit headers on every answer  | `X-RateLimit-Limit`, `-Remaining`, `-Reset`: numbers  |
| error body shape                    | "every error in one shape": `{"error": {"code",       |
|                                     | "message"}}`                                          |
| cleanup: {undo} everything          | not a rule: the kit undoes whatever it may have made  |

"One effect" is judged by the effect's id: the contract has no way to read a reservation
or a charge back. Every order the kit sends an effect for is noted *before* it is sent
(a timeout may still have acted), and the cleanup undoes each one; `404` there means
nothing had happened, as the contract says.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .contract import Credentials, PartnerUnderTest
from .http import KEY_PREFIX, RATE_LIMIT_HEADERS, Exchange, PartnerHttp

# The contract lists 401 and 403 among the definite refusals; it names no other for auth.
AUTH_REFUSALS = (401, 403)
REPLAY_STATUSES = (200, 201)  # "201 (or 200 replayed)"


@dataclass(frozen=True)
class Verdict:
    passed: bool
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class CheckResult:
    """One row of the table."""

    check: str
    partner: str
    passed: bool
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class Created:
    """The effect the replay and key-reuse checks build on."""

    order_id: str
    key: str
    exchange: Exchange


@dataclass
class PartnerRun:
    """One partner's checks in progress: what was sent, what the later checks need."""

    partner: PartnerUnderTest
    http: PartnerHttp
    run_id: str
    # Every order an effect was requested for, whatever the answer: the cleanup's list.
    orders_sent: list[str] = field(default_factory=list)
    created: Created | None = None
    replay: Exchange | None = None
    no_answer: bool = False  # a request got no answer: the checks after it are not run
    cleanup_interrupted: bool = False

    def new_key(self, purpose: str) -> str:
        return f"{KEY_PREFIX}{self.run_id}-{self.partner.name}-{purpose}"

    def send(
        self, method: str, path: str, body: dict[str, Any] | None, key: str, creds: Credentials
    ) -> Exchange:
        exchange = self.http.send(method, path, body=body, key=key, credentials=creds)
        self.no_answer = self.no_answer or exchange.status is None
        return exchange

    def send_effect(self, order_id: str, key: str, creds: Credentials) -> Exchange:
        """Ask for a reservation or a charge, noting the order for the cleanup first."""
        self.orders_sent.append(order_id)
        body = self.partner.create_body(order_id)
        return self.send("POST", self.partner.side.create_path, body, key, creds)


def new_order_id() -> str:
    """A fresh order id, as dualsend's own are: a UUID, never used by any other run."""
    return str(uuid.uuid4())


def verdict(passed: bool, *evidence: str) -> Verdict:
    return Verdict(passed, tuple(line for line in evidence if line))


# --- the checks ---------------------------------------------------------------------


def auth_refused_without_credentials(run: PartnerRun) -> Verdict:
    return _auth_refused(run, run.partner.no_credentials(), "no-credentials")


def auth_refused_with_wrong_credentials(run: PartnerRun) -> Verdict:
    return _auth_refused(run, run.partner.wrong_credentials(), "wrong-credentials")


def _auth_refused(run: PartnerRun, creds: Credentials, purpose: str) -> Verdict:
    exchange = run.send_effect(new_order_id(), run.new_key(purpose), creds)
    refused = exchange.status in AUTH_REFUSALS
    why = "" if refused else f"expected {' or '.join(map(str, AUTH_REFUSALS))}"
    return verdict(refused, exchange.describe(), why)


def effect_made(run: PartnerRun) -> Verdict:
    side = run.partner.side
    order_id, key = new_order_id(), run.new_key("effect")
    exchange = run.send_effect(order_id, key, run.partner.good_credentials())
    effect_id = exchange.body_field(side.id_field)
    if (exchange.status or 0) // 100 == 2 and effect_id:
        run.created = Created(order_id, key, exchange)
    if exchange.status != 201:
        return verdict(False, exchange.describe(), "expected 201", _hint(exchange))
    problems = [] if isinstance(effect_id, str) and effect_id else [f"no {side.id_field}"]
    for name, expected in run.partner.expected_fields(order_id).items():
        if exchange.body_field(name) != expected:
            problems.append(f"{name} is {exchange.body_field(name)!r}, expected {expected!r}")
    return verdict(not problems, exchange.describe(), "; ".join(problems))


def replay_same_answer(run: PartnerRun) -> Verdict:
    if run.created is None:
        return verdict(False, f"not run: no {run.partner.side.effect} to replay")
    first = run.created.exchange
    replay = run.send(
        "POST",
        run.partner.side.create_path,
        run.partner.create_body(run.created.order_id),
        run.created.key,
        run.partner.good_credentials(),
    )
    run.replay = replay
    problems = [] if replay.status in REPLAY_STATUSES else ["expected 200 or 201"]
    id_field = run.partner.side.id_field
    for name in (id_field, "order_id", "status"):
        if replay.body_field(name) != first.body_field(name):
            problems.append(
                f"{name}: first {first.body_field(name)!r}, replay {replay.body_field(name)!r}"
            )
    effects = (
        f"one {run.partner.side.effect}: the same {id_field}"
        if replay.body_field(id_field) == first.body_field(id_field)
        else f"not the same {id_field}: the replay may have acted again"
    )
    first_id = f"first: {first.status}, {id_field} {first.body_field(id_field)!r}"
    return verdict(
        not problems, first_id, f"replay: {replay.describe()}", "; ".join(problems) or effects
    )


def replay_marked(run: PartnerRun) -> Verdict:
    replay = run.replay
    if replay is None or replay.status is None:
        return verdict(False, "not run: no replay answered")
    value = replay.headers.get("Idempotent-Replayed")
    shown = "absent" if value is None else repr(value)
    return verdict(
        value is not None and value.strip().lower() == "true",
        f"{replay.method} {replay.path} replayed -> {replay.status}, Idempotent-Replayed {shown}",
    )


def key_reused_refused(run: PartnerRun) -> Verdict:
    if run.created is None:
        return verdict(False, f"not run: no {run.partner.side.effect} whose key to reuse")
    # Another body: the same request for another (new) order, so that a partner that
    # wrongly acts on it acts on an order of its own, which the cleanup then undoes.
    exchange = run.send_effect(new_order_id(), run.created.key, run.partner.good_credentials())
    passed = exchange.status == 422 and exchange.error_code == "idempotency_key_reused"
    why = "" if passed else "expected 422 idempotency_key_reused"
    note = f"the key of the {run.partner.side.effect} above, with a body for another order"
    return verdict(passed, exchange.describe(), note, why)


def undo_unknown_order(run: PartnerRun) -> Verdict:
    method, path, body = run.partner.undo_request(new_order_id())
    key = run.new_key("unknown-order")
    exchange = run.send(method, path, body, key, run.partner.good_credentials())
    passed = exchange.status == 404 and exchange.error_code == "not_found"
    return verdict(passed, exchange.describe(), "" if passed else "expected 404 not_found")


def rate_limit_headers(run: PartnerRun) -> Verdict:
    """On every answer to an authenticated request (a refused caller has no quota of its
    own to be told about); each a number, as dualsend reads them."""
    answered = [e for e in run.http.exchanges if e.status is not None and e.authenticated]
    if not answered:
        return verdict(False, "not run: no answer to an authenticated request")
    faults = [
        f"{e.method} {e.path} -> {e.status}: {', '.join(missing)} missing or not a number"
        for e in answered
        if (missing := [name for name in RATE_LIMIT_HEADERS if not _count(e.headers.get(name))])
    ]
    last = answered[-1]
    seen = ", ".join(f"{name}: {last.headers.get(name, '(absent)')}" for name in RATE_LIMIT_HEADERS)
    return verdict(not faults, f"{len(answered)} answers checked; the last had {seen}", *faults)


def error_body_shape(run: PartnerRun) -> Verdict:
    errors = [e for e in run.http.exchanges if e.status is not None and e.status >= 400]
    if not errors:
        return verdict(False, "not run: no error answer to judge")
    faults = [f"{e.method} {e.path} -> {e.answer()}" for e in errors if not _error_shaped(e.body)]
    statuses = ", ".join(str(e.status) for e in errors)
    return verdict(not faults, f"{len(errors)} error answers checked ({statuses})", *faults)


def cleanup(run: PartnerRun) -> Verdict:
    """Undo every effect asked for; 2xx (undone) or 404 (nothing there) is clean."""
    orders = list(dict.fromkeys(run.orders_sent))
    if not orders:
        return verdict(True, "nothing was asked for: nothing to undo")
    lines, undone, nothing, left = [], 0, 0, []
    for index, order_id in enumerate(orders):
        try:
            exchange = _undo(run, order_id, index)
        except KeyboardInterrupt:
            run.cleanup_interrupted = True
            left.extend(orders[index:])
            lines.append("interrupted")
            break
        shown = exchange.describe()
        lines.append(shown if order_id in exchange.path else f"order {order_id}: {shown}")
        if (exchange.status or 0) // 100 == 2:
            undone += 1
        elif exchange.status == 404:
            nothing += 1
        else:
            left.append(order_id)
    summary = f"orders: {len(orders)}; {undone} undone (2xx), {nothing} had nothing to undo (404)"
    if left:
        summary += f"; {len(left)} NOT undone, {run.partner.side.undo} by hand: {', '.join(left)}"
    return verdict(not left, summary, *lines)


def _undo(run: PartnerRun, order_id: str, index: int) -> Exchange:
    method, path, body = run.partner.undo_request(order_id)
    key = run.new_key(f"undo-{index}")
    creds = run.partner.good_credentials()
    return run.http.send(method, path, body=body, key=key, credentials=creds)


def _hint(exchange: Exchange) -> str:
    """What to try when the sandbox said no to the kit's own data or credential."""
    if exchange.status in AUTH_REFUSALS:
        return "hint: the credential given was refused (--inventory-token / --payment-key)"
    if exchange.error_code in ("out_of_stock", "card_declined"):
        return "hint: a business decline; pass test data the sandbox accepts (--sku, --card-source)"
    return ""


def _count(value: str | None) -> bool:
    """Whether a rate-limit header holds a non-negative number."""
    try:
        return value is not None and float(value) >= 0
    except ValueError:
        return False


def _error_shaped(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and bool(error["code"])
        and isinstance(error.get("message"), str)
    )


# --- the order they run in ------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """A check and its name in the table ({effect} and {undo} name the partner's)."""

    title: str
    judge: Callable[[PartnerRun], Verdict]

    def name_for(self, partner: PartnerUnderTest) -> str:
        return self.title.format(effect=partner.side.effect, undo=partner.side.undo)


CHECKS = (
    Check("auth refused without credentials", auth_refused_without_credentials),
    Check("auth refused with wrong credentials", auth_refused_with_wrong_credentials),
    Check("{effect} made", effect_made),
    Check("replay: same answer, one effect", replay_same_answer),
    Check("replay marked Idempotent-Replayed", replay_marked),
    Check("key reused, other body: 422", key_reused_refused),
    Check("{undo} of an unknown order: 404", undo_unknown_order),
    Check("rate-limit headers on every answer", rate_limit_headers),
    Check("error body shape", error_body_shape),
)
CLEANUP = Check("cleanup: {undo} everything", cleanup)
