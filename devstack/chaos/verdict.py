"""What the chaos run did, read from the records and the partners' ledger, and the verdict.

The facts come from two sides that do not trust each other: dualsend's own records
(Order, Send, Redrive, BreakerTransition) say what dualsend believes; the simulators'
ledger says what the partners really did, counted per order. The checks hold one
against the other:

* every POST was accepted (202, or 200 on a retry of the client's own request; a
  `5xx` is a failure), and every order reached a final state within the bound;
* no order was reserved or charged more than once, and the partners acted for no
  order that dualsend does not know;
* a `completed` order has exactly one reservation and one charge standing; a `failed`
  or `compensated` one has none;
* a `needs_attention` order is final and an operator is told, but here it must have
  nothing standing either: the run gives compensations ten attempts against a 25 %
  fault rate, so one that ran out (with its effect still standing) means the safety net
  did not hold. Each such order is listed with its reason whatever the verdict;
* the faults really happened: the kills, the Redis restarts, and the outage opened the
  downed partner's breaker; and no process died of them on its own (a worker that exits
  when Redis restarts would leave every order waiting).
"""

import datetime
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Sum

from dualsend_app.models import Attempt, BreakerTransition, Order, Redrive, Send

from .faults import Action, FaultRecord
from .traffic import ChaosOrder

FINAL = frozenset(str(status) for status in Order.FINAL_STATUSES)
NOTHING_STANDING = (Order.Status.FAILED, Order.Status.COMPENSATED, Order.Status.NEEDS_ATTENTION)
ACCEPTED_ANSWERS = (200, 202)
# Answers a retrying client may see on the way to 200/202: dualsend did nothing wrong.
TRANSIENT_ANSWERS = (409,)
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
    redis_restarts: int
    outage_partner: str
    settle_bound: float


@dataclass
class RunFacts:
    orders: list[ChaosOrder]  # the client's side, answers included
    records: list[OrderRecord]  # for every placed order
    stray_ledger_orders: list[str]  # order ids the partners acted for that dualsend lacks
    redrives: Counter[str]
    orders_redriven: int
    breaker_openings: Counter[str]
    deferrals: Counter[str]
    http_calls: int
    faults: list[FaultRecord]
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
    return RunFacts(
        orders=orders,
        records=records,
        stray_ledger_orders=sorted(set(ledger_orders) - set(ids)),
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
            every_post_accepted(facts),
            every_order_final(facts, expected),
            nothing_done_twice(facts),
            nothing_done_for_unknown_orders(facts),
            completed_orders_stand(facts),
            undone_orders_leave_nothing(facts),
            faults_happened(facts, expected),
            no_process_died_on_its_own(facts),
            outage_opened_the_breaker(facts, expected),
        ]
    )


def every_post_accepted(facts: RunFacts) -> Check:
    refused = [order for order in facts.orders if not order.placed]
    wrong = [
        order for order in facts.orders if any(_unexpected(answer) for answer in order.answers)
    ]
    answers = Counter(answer for order in facts.orders for answer in order.answers)
    problems = [f"order {o.number}: answers {o.answers} ({o.error})" for o in refused + wrong]
    summary = ", ".join(f"{answer} x{count}" for answer, count in sorted(answers.items(), key=str))
    return Check(
        not refused and not wrong,
        f"every POST /api/orders answered 202 (or 200/409 to a retry), no 5xx: {summary}",
        problems,
    )


def _unexpected(answer: int | str) -> bool:
    """A status code other than accepted or in flight; a connection error is retried."""
    return isinstance(answer, int) and answer not in ACCEPTED_ANSWERS + TRANSIENT_ANSWERS


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
    return Check(
        not facts.stray_ledger_orders,
        "the partners acted only for orders dualsend accepted",
        [f"{order_id}: unknown to dualsend" for order_id in facts.stray_ledger_orders],
    )


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
    kills = sum(record.action == Action.KILL_WORKER for record in facts.faults)
    restarts = sum(record.action == Action.RESTART_REDIS for record in facts.faults)
    return Check(
        kills >= expected.kills and restarts >= expected.redis_restarts,
        f"the worker was SIGKILLed {kills}x (wanted {expected.kills}), Redis restarted "
        f"{restarts}x (wanted {expected.redis_restarts})",
    )


def no_process_died_on_its_own(facts: RunFacts) -> Check:
    return Check(
        not facts.exits,
        "no process of the stack exited on its own (only the faults' kills)",
        facts.exits,
    )


def outage_opened_the_breaker(facts: RunFacts, expected: Expectations) -> Check:
    partner = expected.outage_partner
    if not partner:
        return Check(True, "no partner outage was asked for")
    outages = [record for record in facts.faults if record.action == Action.OUTAGE]
    openings = facts.breaker_openings.get(partner, 0)
    return Check(
        bool(outages) and openings > 0,
        f"the {partner} outage opened its breaker ({openings} opening(s))",
    )


def _effects(record: OrderRecord) -> str:
    ledger = record.ledger
    return (
        f"reserved {ledger.get('reserved', 0)}, released {ledger.get('released', 0)}, "
        f"charged {ledger.get('charged', 0)}, refunded {ledger.get('refunded', 0)}"
    )
