"""What the chaos run did, read from the records and the partners' ledger, and the verdict.

The facts come from two sides that do not trust each other: dualsend's own records
(Order, Send, Redrive, BreakerTransition) say what dualsend believes; the simulators'
ledger says what the partners really did, counted per order. The checks hold one
against the other:

* every order was accepted (202, or 200 on a retry of the client's own request), no
  answer the clients saw was a `500` (every answer code is counted, POSTs and GETs),
  and every other answer was one a retrying client expects (`409`, `429`, `503`, no
  answer), on the way to its order;
* every order reached a final state within the run's bound, and the orders each fault
  caught settled within the recovery bound of it (30 s; recovery.py);
* no order was reserved or charged more than once, and the partners' ledger holds no
  order id that dualsend's API never returned to a client (no effect for an order that
  was never accepted);
* a `completed` order has exactly one reservation and one charge standing; a `failed`
  or `compensated` one has none;
* a `needs_attention` order is final and an operator is told, but here it must have
  nothing standing either: the run gives compensations ten attempts against a 25 %
  fault rate, so one that ran out (with its effect still standing) means the safety net
  did not hold. Each such order is listed with its reason whatever the verdict;
* the faults really happened: the kills (each queue's worker at least once), the Redis
  restarts, the PostgreSQL crashes, and each partner's outage opened its breaker; and no
  process died of them on its own (a worker that exits when Redis restarts would leave
  every order waiting).
"""

import datetime
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Sum

from dualsend_app.models import Attempt, BreakerTransition, Order, Redrive, Send

from . import recovery
from .faults import Action, FaultRecord
from .recovery import Recovery
from .traffic import GET, POST, ChaosOrder

FINAL = frozenset(str(status) for status in Order.FINAL_STATUSES)
NOTHING_STANDING = (Order.Status.FAILED, Order.Status.COMPENSATED, Order.Status.NEEDS_ATTENTION)
ACCEPTED_ANSWERS = (200, 202)
INTERNAL_ERROR = 500
# Answers a retrying client may see on the way: dualsend did nothing wrong (a 503 names a
# dependency that is down, a 429 asks to slow down, a 409 says the first try still runs).
EXPECTED_ANSWERS = {POST: (200, 202, 409, 429, 503), GET: (200, 429, 503)}
# Problems listed under a failed check; the rest are counted.
SHOWN_PROBLEMS = 10


@dataclass
class OrderRecord:
    """One placed order as dualsend and the partners see it at the end."""

    order_id: str
    kind: str
    status: str
    reason: str
    created_at: datetime.datetime
    settled_at: datetime.datetime | None
    redrives: int
    ledger: dict[str, Any]  # the order's entry in GET /_sim/ledger

    @property
    def reservations_standing(self) -> int:
        return self.ledger.get("reserved", 0) - self.ledger.get("released", 0)

    @property
    def charges_standing(self) -> int:
        return self.ledger.get("charged", 0) - self.ledger.get("refunded", 0)

    @property
    def settle_seconds(self) -> float | None:
        if self.settled_at is None:
            return None
        return (self.settled_at - self.created_at).total_seconds()


@dataclass
class Expectations:
    """What the run set out to do."""

    kills: int
    worker_roles: tuple[str, ...]
    redis_restarts: int
    postgres_crashes: int
    outage_partners: tuple[str, ...]
    settle_bound: float
    recovery_bound: float


@dataclass
class RunFacts:
    orders: list[ChaosOrder]  # the client's side, answers included
    records: list[OrderRecord]  # for every placed order
    stray_ledger_orders: list[str]  # order ids in the partners' ledger no client was given
    unreturned_orders: list[str]  # orders dualsend created whose id no client was given
    answers: Counter[tuple[str, int | str]]  # (method, status code or exception) → how many
    redrives: Counter[str]
    orders_redriven: int
    breaker_openings: Counter[str]
    deferrals: Counter[str]
    http_calls: int
    faults: list[FaultRecord]
    recoveries: list[Recovery]
    settled_within: float | None  # seconds from the first order until all were final
    run_seconds: float
    exits: list[str]  # processes of the stack that exited on their own, and how


@dataclass
class Check:
    passed: bool
    text: str
    problems: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def word(self) -> str:
        return "PASS" if self.passed else "FAIL"


# --- the facts -----------------------------------------------------------------------------


def collect(
    orders: list[ChaosOrder],
    ledger: dict[str, Any],
    faults: list[FaultRecord],
    *,
    settled_within: float | None,
    run_seconds: float,
    exits: Iterable[str] = (),
) -> RunFacts:
    """Everything the report and the verdict need; `ledger` is GET /_sim/ledger's."""
    ledger_orders = ledger.get("orders", {})
    ids = [order.order_id for order in orders if order.placed]
    # in_bulk's keys are UUIDs; the API gave strings.
    rows = {str(pk): row for pk, row in Order.objects.in_bulk(ids).items()}
    records = [
        _record(order, rows[order.order_id], ledger_orders)
        for order in orders
        if order.order_id in rows
    ]
    redrives = Redrive.objects.filter(order_id__in=ids)
    sends = Send.objects.filter(order_id__in=ids)
    # The run's database is its own: every order in it came from the run's clients.
    times = recovery.order_times()
    return RunFacts(
        orders=orders,
        records=records,
        stray_ledger_orders=sorted(set(ledger_orders) - set(ids)),
        unreturned_orders=sorted(set(times) - set(ids)),
        answers=Counter(answer for order in orders for answer in order.all_answers()),
        redrives=Counter(dict(redrives.values_list("kind").annotate(n=Count("id")))),
        orders_redriven=redrives.values("order_id").distinct().count(),
        breaker_openings=Counter(
            dict(
                BreakerTransition.objects.filter(to_state=BreakerTransition.State.OPEN)
                .values_list("partner")
                .annotate(n=Count("id"))
            )
        ),
        deferrals=Counter(
            {
                partner: total or 0
                for partner, total in sends.values_list("partner").annotate(n=Sum("deferrals"))
            }
        ),
        http_calls=Attempt.objects.filter(send__order_id__in=ids).count(),
        faults=faults,
        recoveries=recovery.recoveries(faults, times),
        settled_within=settled_within,
        run_seconds=run_seconds,
        exits=list(exits),
    )


def _record(order: ChaosOrder, row: Order, ledger_orders: dict[str, dict[str, Any]]) -> OrderRecord:
    return OrderRecord(
        order_id=order.order_id,
        kind=str(order.kind),
        status=row.status,
        reason=row.status_reason,
        created_at=row.created_at,
        settled_at=row.settled_at,
        redrives=row.redrive_count,
        ledger=ledger_orders.get(order.order_id, {}),
    )


# --- the checks ----------------------------------------------------------------------------


def judge(facts: RunFacts, expected: Expectations) -> Verdict:
    return Verdict(
        checks=[
            every_order_accepted(facts),
            no_internal_error(facts),
            answers_as_expected(facts),
            every_order_final(facts, expected),
            recovered_quickly(facts, expected),
            nothing_done_twice(facts),
            nothing_done_for_unknown_orders(facts),
            completed_orders_stand(facts),
            undone_orders_leave_nothing(facts),
            faults_happened(facts, expected),
            no_process_died_on_its_own(facts),
            outages_opened_the_breakers(facts, expected),
        ]
    )


def every_order_accepted(facts: RunFacts) -> Check:
    refused = [order for order in facts.orders if not order.placed]
    return Check(
        not refused,
        f"every order was accepted: {len(facts.orders) - len(refused)}/{len(facts.orders)} "
        "answered 202 (or 200 to a retry with the same Idempotency-Key)",
        [f"order {o.number}: {o.error}" for o in refused],
    )


def no_internal_error(facts: RunFacts) -> Check:
    count = sum(n for (_, answer), n in facts.answers.items() if answer == INTERNAL_ERROR)
    hit = [order for order in facts.orders if INTERNAL_ERROR in order.answers + order.reads]
    return Check(
        count == 0,
        f"no 500 answer at all: {count} among {facts.answers.total()} answers "
        f"({answer_summary(facts.answers)})",
        [f"order {o.number} ({o.order_id or 'not placed'}): POST {o.answers}, GET {o.reads}"
         for o in hit],
    )  # fmt: skip


def answers_as_expected(facts: RunFacts) -> Check:
    """Any answer but a 500 (counted above) that a retrying client should never see."""
    odd = [
        order
        for order in facts.orders
        if any(_unexpected(method, answer) for method, answer in order.all_answers())
    ]
    return Check(
        not odd,
        "every other answer was one a retrying client expects (POST 202/200/409/429/503, "
        "GET 200/429/503, or no answer)",
        [f"order {o.number}: POST {o.answers}, GET {o.reads} ({o.error})" for o in odd],
    )


def answer_summary(answers: Counter[tuple[str, int | str]]) -> str:
    """'POST 202 x990, 503 x12; GET 200 x1000'."""
    parts = []
    for method in (POST, GET):
        mine = sorted(((a, n) for (m, a), n in answers.items() if m == method), key=str)
        if mine:
            parts.append(f"{method} " + ", ".join(f"{a} x{n}" for a, n in mine))
    return "; ".join(parts) or "none"


def _unexpected(method: str, answer: int | str) -> bool:
    """A status code neither expected nor a 500; a connection error is retried."""
    return (
        isinstance(answer, int)
        and answer != INTERNAL_ERROR
        and answer not in EXPECTED_ANSWERS[method]
    )


def every_order_final(facts: RunFacts, expected: Expectations) -> Check:
    unfinished = [record for record in facts.records if record.status not in FINAL]
    within = facts.settled_within
    timing = (
        f"all final {within:.0f} s after the first order" if within is not None else "not all final"
    )
    return Check(
        not unfinished and within is not None and within <= expected.settle_bound,
        f"every order reached a final state within {expected.settle_bound:g} s ({timing})",
        [f"{r.order_id} ({r.kind}) still {r.status}: {r.reason}" for r in unfinished],
    )


def recovered_quickly(facts: RunFacts, expected: Expectations) -> Check:
    bound = expected.recovery_bound
    slow = [r for r in facts.recoveries if not r.within(bound)]
    worst = max((r.seconds for r in facts.recoveries if r.seconds is not None), default=0.0)
    return Check(
        not slow,
        f"the orders each fault caught settled within {bound:g} s of it "
        f"(slowest {worst:.1f} s; see Recovery)",
        [
            f"t={r.fault.at:6.1f} {r.fault.name}: "
            + (f"{r.unsettled} of {r.caught} caught order(s) never settled"
               if r.seconds is None
               else f"last of {r.caught} caught order(s), {r.last_order}, settled "
                    f"{r.seconds:.1f} s after")
            for r in slow
        ],
    )  # fmt: skip


def nothing_done_twice(facts: RunFacts) -> Check:
    doubled = [
        record
        for record in facts.records
        if record.ledger.get("reserved", 0) > 1 or record.ledger.get("charged", 0) > 1
    ]
    return Check(
        not doubled,
        "no order reserved or charged more than once (the partners' ledger)",
        [f"{r.order_id} {r.status}: {_effects(r)}" for r in doubled],
    )


def nothing_done_for_unknown_orders(facts: RunFacts) -> Check:
    unreturned = (
        f"; {len(facts.unreturned_orders)} order(s) created whose id no client was given"
        if facts.unreturned_orders
        else ""
    )
    return Check(
        not facts.stray_ledger_orders,
        "no partner effect for an order that was never accepted: the partners' ledger holds "
        f"no order id the API did not return{unreturned}",
        [f"{order_id}: in the ledger, never returned by the API"
         for order_id in facts.stray_ledger_orders],
    )  # fmt: skip


def completed_orders_stand(facts: RunFacts) -> Check:
    wrong = [
        record
        for record in facts.records
        if record.status == Order.Status.COMPLETED
        and (record.reservations_standing, record.charges_standing) != (1, 1)
    ]
    return Check(
        not wrong,
        "every completed order has exactly one reservation and one charge standing",
        [f"{r.order_id}: {_effects(r)}" for r in wrong],
    )


def undone_orders_leave_nothing(facts: RunFacts) -> Check:
    wrong = [
        record
        for record in facts.records
        if record.status in NOTHING_STANDING
        and (record.reservations_standing or record.charges_standing)
    ]
    return Check(
        not wrong,
        "every failed, compensated or needs_attention order has nothing standing",
        [f"{r.order_id} {r.status} ({r.reason}): {_effects(r)}" for r in wrong],
    )


def faults_happened(facts: RunFacts, expected: Expectations) -> Check:
    done = Counter(record.action for record in facts.faults)
    killed = Counter(r.target for r in facts.faults if r.action == Action.KILL_WORKER)
    # With at least as many kills as workers, each queue's worker is killed at least once.
    roles = expected.worker_roles if expected.kills >= len(expected.worker_roles) else ()
    down = {r.target for r in facts.faults if r.action == Action.OUTAGE}
    wanted = (
        (done[Action.KILL_WORKER], expected.kills),
        (done[Action.RESTART_REDIS], expected.redis_restarts),
        (done[Action.CRASH_POSTGRES], expected.postgres_crashes),
    )
    kills = ", ".join(f"{role} {n}" for role, n in sorted(killed.items())) or "none"
    outages = ", ".join(sorted(down)) or "none"
    return Check(
        all(got >= want for got, want in wanted)
        and all(killed[role] for role in roles)
        and set(expected.outage_partners) <= down,
        f"worker SIGKILLs {done[Action.KILL_WORKER]} (wanted {expected.kills}: {kills}), "
        f"Redis restarts {done[Action.RESTART_REDIS]} (wanted {expected.redis_restarts}), "
        f"PostgreSQL crashes {done[Action.CRASH_POSTGRES]} (wanted {expected.postgres_crashes}), "
        f"partner outages: {outages} (wanted {', '.join(expected.outage_partners) or 'none'})",
    )


def no_process_died_on_its_own(facts: RunFacts) -> Check:
    return Check(
        not facts.exits,
        "no process of the stack exited on its own (only the faults' kills)",
        facts.exits,
    )


def outages_opened_the_breakers(facts: RunFacts, expected: Expectations) -> Check:
    if not expected.outage_partners:
        return Check(True, "no partner outage was asked for")
    openings = {p: facts.breaker_openings.get(p, 0) for p in expected.outage_partners}
    return Check(
        all(openings.values()),
        "each partner's outage opened its breaker ("
        + ", ".join(f"{p} {n} opening(s)" for p, n in openings.items())
        + ")",
    )


def _effects(record: OrderRecord) -> str:
    ledger = record.ledger
    return (
        f"reserved {ledger.get('reserved', 0)}, released {ledger.get('released', 0)}, "
        f"charged {ledger.get('charged', 0)}, refunded {ledger.get('refunded', 0)}"
    )
