"""The dashboard's numbers. The database counts, groups and ranks; Python never loads the
rows it sums up, only the few it shows (20 failed calls, the orders that need attention).

Latency percentiles are continuous: between the two nearest ranks, interpolated linearly,
as PostgreSQL's `percentile_cont` defines them. Two ways to ask for them:

- PostgreSQL: `percentile_cont(f) WITHIN GROUP (ORDER BY duration_ms)`, an ordered-set
  aggregate (`PercentileCont`), in the one GROUP BY query that also counts the calls.
- Any other database (SQLite, which the demo and a checkout use: Python's build of it has
  no percentile function): window functions rank each operation's durations, and the
  database returns only the rows within one rank of each percentile's position: at most
  3 per percentile and operation, however many attempts the window holds. Python
  interpolates between two of them (`ranked_percentiles`). Same definition, same answers:
  tests/test_dashboard.py holds both to known data.
"""

import datetime
import math
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Aggregate, Count, F, FloatField, Q
from django.db.models.functions import TruncMinute
from django.urls import reverse
from django.utils import timezone

from ..models import Attempt, BreakerTransition, Order, Send
from ..partners.outcomes import AnswerOutcome
from ..partners.redaction import without_credentials
from ..resilience.admin import live_breaker

# The windows the page offers for the call statistics, in seconds.
WINDOWS = {300: "5 min", 900: "15 min", 3600: "1 h", 86400: "24 h"}
DEFAULT_WINDOW_SECONDS = 900
PERCENTILES = {"p50_ms": 0.5, "p95_ms": 0.95, "p99_ms": 0.99}
CHART_MINUTES = 60
LATEST_FAILURES = 20
# Beyond this many, the page says how many more and links to the admin's filtered list.
NEEDS_ATTENTION_SHOWN = 100
# The chart stacks the statuses in this order from the bottom: the final ones first.
STATUS_ORDER = (
    Order.Status.COMPLETED,
    Order.Status.COMPENSATED,
    Order.Status.FAILED,
    Order.Status.NEEDS_ATTENTION,
    Order.Status.COMPENSATING,
    Order.Status.DISPATCHED,
    Order.Status.PENDING,
)
PERCENTILE_CONT = "percentile_cont"
RANKS = "ranks"
UNKNOWN_STATE = "unknown"


def order_admin_url(order_id: uuid.UUID | str) -> str:
    return reverse("admin:dualsend_app_order_change", args=[order_id])


# --- orders by status, minute by minute ---------------------------------------------------


@dataclass(frozen=True)
class MinuteCounts:
    """The orders created in one minute, by their status now."""

    start: datetime.datetime
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class OrdersByStatus:
    since: datetime.datetime
    minutes: list[MinuteCounts]

    @property
    def by_status(self) -> dict[str, int]:
        return {
            status: sum(minute.counts[status] for minute in self.minutes) for status in STATUS_ORDER
        }

    @property
    def total(self) -> int:
        return sum(minute.total for minute in self.minutes)


def orders_last_hour(now: datetime.datetime) -> OrdersByStatus:
    """Orders created in the last `CHART_MINUTES` minutes (the current one included), per
    minute and by their current status."""
    last = now.replace(second=0, microsecond=0)
    first = last - datetime.timedelta(minutes=CHART_MINUTES - 1)
    counts = {
        first + datetime.timedelta(minutes=i): dict.fromkeys(STATUS_ORDER, 0)
        for i in range(CHART_MINUTES)
    }
    rows = (
        # Every status named: the range on created_at then serves the index
        # order_status_created (status, created_at) instead of scanning the table.
        Order.objects.filter(status__in=STATUS_ORDER, created_at__gte=first)
        .annotate(minute=TruncMinute("created_at"))
        .values("minute", "status")
        .annotate(orders=Count("id"))
        .order_by()
    )
    for row in rows:
        # An order stamped a moment after `now` (another process's clock) counts as now.
        counts[min(row["minute"], last)][row["status"]] += row["orders"]
    return OrdersByStatus(
        since=first,
        minutes=[MinuteCounts(start, by_status) for start, by_status in counts.items()],
    )


# --- calls per partner operation ----------------------------------------------------------


class PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate: `percentile_cont(f) WITHIN GROUP (ORDER BY x)`."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, fraction: float, **extra: Any) -> None:
        fraction = float(fraction)
        if not 0 <= fraction <= 1:
            raise ValueError(f"a percentile is a fraction from 0 to 1, not {fraction}")
        # A float of ours, checked above, written into the SQL as a literal.
        super().__init__(expression, fraction=repr(fraction), **extra)


@dataclass(frozen=True)
class OperationCalls:
    """One partner operation's HTTP calls (Attempt rows) in the window."""

    partner: str
    operation: str
    calls: int
    succeeded: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def success_rate(self) -> float | None:
        """Calls whose answer was a success (AnswerOutcome.SUCCEEDED) over all calls: a
        retried 5xx, a timeout, a 429 or a definite no all count against it."""
        return self.succeeded / self.calls if self.calls else None

    @property
    def success_percent(self) -> float | None:
        rate = self.success_rate
        return None if rate is None else rate * 100


def percentile_method() -> str:
    return PERCENTILE_CONT if connection.vendor == "postgresql" else RANKS


def calls_by_operation(
    window_seconds: int, now: datetime.datetime, *, method: str | None = None
) -> list[OperationCalls]:
    """Every operation, those without a call in the window included (zero, no latency)."""
    since = now - datetime.timedelta(seconds=window_seconds)
    method = method or percentile_method()
    grouped = (
        Attempt.objects.filter(started_at__gte=since)
        .values(operation=F("send__operation"))
        .annotate(
            calls=Count("id"),
            succeeded=Count("id", filter=Q(outcome=AnswerOutcome.SUCCEEDED)),
        )
        .order_by()
    )
    if method == PERCENTILE_CONT:
        grouped = grouped.annotate(
            **{name: PercentileCont("duration_ms", f) for name, f in PERCENTILES.items()}
        )
    rows = {row["operation"]: row for row in grouped}
    if method == RANKS:
        percentiles = ranked_percentiles(since)
        for operation, row in rows.items():
            row |= percentiles.get(operation, {})
    return [
        operation_calls(operation, rows.get(operation, {})) for operation in Send.Operation.values
    ]


def operation_calls(operation: str, row: dict[str, Any]) -> OperationCalls:
    """One operation's row of the grouped query; an empty one when it had no call."""
    return OperationCalls(
        partner=Send.partner_of(operation),
        operation=operation,
        calls=row.get("calls", 0),
        succeeded=row.get("succeeded", 0),
        **{name: row.get(name) for name in PERCENTILES},
    )


def ranked_percentiles(since: datetime.datetime) -> dict[str, dict[str, float]]:
    """Each operation's percentiles from the rows around their ranks (module docstring)."""
    near_a_percentile = " OR ".join(["ABS(nth - (1 + %s * (calls - 1))) <= 1"] * len(PERCENTILES))
    quote = connection.ops.quote_name
    # Table names from the models, fractions and the time as parameters: nothing typed by
    # a user reaches this SQL.
    sql = f"""
        SELECT operation, calls, nth, duration_ms FROM (
            SELECT s.operation AS operation, a.duration_ms AS duration_ms,
                   ROW_NUMBER() OVER (PARTITION BY s.operation ORDER BY a.duration_ms) AS nth,
                   COUNT(*) OVER (PARTITION BY s.operation) AS calls
            FROM {quote(Attempt._meta.db_table)} a
            JOIN {quote(Send._meta.db_table)} s ON s.id = a.send_id
            WHERE a.started_at >= %s
        ) ranked
        WHERE {near_a_percentile}
    """  # noqa: S608
    params = [connection.ops.adapt_datetimefield_value(since), *PERCENTILES.values()]
    by_operation: dict[str, tuple[int, dict[int, float]]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for operation, calls, nth, duration_ms in cursor.fetchall():
            by_operation.setdefault(operation, (calls, {}))[1][nth] = duration_ms
    return {
        operation: {
            name: interpolate(durations, calls, fraction) for name, fraction in PERCENTILES.items()
        }
        for operation, (calls, durations) in by_operation.items()
    }


def interpolate(by_rank: dict[int, float], count: int, fraction: float) -> float:
    """percentile_cont from the values at the ranks (1-based) around its position."""
    position = 1 + fraction * (count - 1)
    lower, upper = math.floor(position), math.ceil(position)
    low, high = by_rank[lower], by_rank[upper]
    return low + (position - lower) * (high - low)


# --- breakers, failures, orders needing attention -----------------------------------------


@dataclass(frozen=True)
class BreakerNow:
    """A partner's circuit breaker as Redis has it now; `unknown` when Redis is down."""

    partner: str
    state: str
    detail: str
    calls: int | None
    failures: int | None
    open_until: datetime.datetime | None
    paused_seconds: float | None
    rule: str


def breakers_now() -> list[BreakerNow]:
    """Each configured partner's breaker, read as the admin's breaker page reads it (which
    turns Redis being unreachable into an "unknown: …" state, never an error)."""
    breakers = []
    for partner in settings.DUALSEND_PARTNERS:
        live = live_breaker(partner)
        state, detail = live["state"], ""
        if state not in BreakerTransition.State.values:
            state, detail = UNKNOWN_STATE, live["state"]
        breakers.append(
            BreakerNow(
                partner=partner,
                state=state,
                detail=detail,
                calls=live["calls"],
                failures=live["failures"],
                open_until=live["open_until"],
                paused_seconds=live["paused_seconds"],
                rule=live["rule"],
            )
        )
    return breakers


@dataclass(frozen=True)
class FailedCall:
    """An HTTP call whose answer was not a success: retried, or a definite no."""

    attempt_id: int
    order_id: uuid.UUID
    operation: str
    number: int
    started_at: datetime.datetime
    duration_ms: int
    status_code: int | None
    error: str
    outcome: str
    will_retry: bool

    @property
    def admin_url(self) -> str:
        return order_admin_url(self.order_id)


def latest_failures(limit: int = LATEST_FAILURES) -> list[FailedCall]:
    """The last failed calls recorded, newest first."""
    rows = (
        Attempt.objects.exclude(outcome=AnswerOutcome.SUCCEEDED)
        .order_by("-started_at", "-id")
        .values(
            "number",
            "started_at",
            "duration_ms",
            "status_code",
            "error",
            "outcome",
            "will_retry",
            attempt_id=F("id"),
            order_id=F("send__order_id"),
            operation=F("send__operation"),
        )[:limit]
    )
    # Errors are scrubbed when recorded; once more here, as this page may be on a screen.
    return [FailedCall(**row | {"error": without_credentials(row["error"])}) for row in rows]


@dataclass(frozen=True)
class OrderNeedingAttention:
    id: uuid.UUID
    created_at: datetime.datetime
    settled_at: datetime.datetime | None
    status_reason: str

    @property
    def admin_url(self) -> str:
        return order_admin_url(self.id)


@dataclass(frozen=True)
class NeedsAttention:
    total: int
    orders: list[OrderNeedingAttention]

    @property
    def admin_list_url(self) -> str:
        changelist = reverse("admin:dualsend_app_order_changelist")
        return f"{changelist}?status__exact={Order.Status.NEEDS_ATTENTION}"


def needs_attention(limit: int = NEEDS_ATTENTION_SHOWN) -> NeedsAttention:
    """Every order waiting for an operator (the newest `limit` listed), newest first."""
    # Both queries are served by the index order_status_created (status, created_at).
    waiting = Order.objects.filter(status=Order.Status.NEEDS_ATTENTION)
    rows = waiting.order_by("-created_at").values(
        "id", "created_at", "settled_at", "status_reason"
    )[:limit]
    return NeedsAttention(
        total=waiting.count(), orders=[OrderNeedingAttention(**row) for row in rows]
    )


# --- all of it ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    generated_at: datetime.datetime
    window_seconds: int
    percentile_method: str
    orders: OrdersByStatus
    calls: list[OperationCalls]
    breakers: list[BreakerNow]
    failures: list[FailedCall]
    needs_attention: NeedsAttention

    @property
    def window_label(self) -> str:
        return WINDOWS[self.window_seconds]


def snapshot(window_seconds: int, now: datetime.datetime | None = None) -> Snapshot:
    """Everything the page shows, for call statistics over `window_seconds` (a WINDOWS key)."""
    if window_seconds not in WINDOWS:
        raise ValueError(f"window {window_seconds!r} is not one of {sorted(WINDOWS)}")
    now = now or timezone.now()
    return Snapshot(
        generated_at=now,
        window_seconds=window_seconds,
        percentile_method=percentile_method(),
        orders=orders_last_hour(now),
        calls=calls_by_operation(window_seconds, now),
        breakers=breakers_now(),
        failures=latest_failures(),
        needs_attention=needs_attention(),
    )
