"""The demo's summary, read from the records (Order, Send, Attempt), not from the client.

The latency table puts each order's end-to-end time next to the partners' own call
times, so a reader sees that an order takes about the slower of its two calls, not
their sum: both calls run at once.
"""

import datetime
import math
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django.db.models import Q, QuerySet, Sum
from rich.table import Table

from devstack.traffic.client import DemoOrder, Kind
from dualsend_app.models import Attempt, Order, Send

NOT_PLACED = "not placed"
STATUS_MEANING = {
    Order.Status.COMPLETED: "both partners said yes",
    Order.Status.FAILED: "nothing took effect, nothing to undo",
    Order.Status.COMPENSATED: "one side said yes, and was undone",
    Order.Status.NEEDS_ATTENTION: "an undo ran out of retries: see the admin",
    Order.Status.COMPENSATING: "still undoing (not final)",
    Order.Status.DISPATCHED: "partners still being called (not final)",
    Order.Status.PENDING: "never reached the broker (not final)",
    NOT_PLACED: "the API refused or never answered the POST",
}
STATUS_ORDER = list(STATUS_MEANING)
HEADERS = (Send.Operation.INVENTORY_RESERVE, Send.Operation.PAYMENT_CHARGE)
COMPENSATIONS = tuple(Send.COMPENSATION_OF.values())
PLAIN_PATH_HEADING = "completed orders, no retry, never put off:"


@dataclass
class RunStats:
    statuses: dict = field(default_factory=lambda: defaultdict(Counter))  # status → kinds
    http_calls: int = 0
    deferrals: int = 0
    sends_called: int = 0
    compensations: Counter = field(default_factory=Counter)
    latencies: dict = field(default_factory=dict)  # label → list of milliseconds

    @property
    def retries(self) -> int:
        return self.http_calls - self.sends_called


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def milliseconds(start: datetime.datetime, end: datetime.datetime) -> float:
    return (end - start).total_seconds() * 1000


def ms_cell(value: float | None) -> str:
    """A table cell: whole milliseconds, or "-" when there is no value."""
    return "-" if value is None else f"{value:.0f}"


# --- reading the records ---------------------------------------------------------------------


def refresh_statuses(demo_orders: list[DemoOrder]) -> list[DemoOrder]:
    """Each order's status as the database has it now (the client saw it a moment ago)."""
    ids = [order.order_id for order in demo_orders if order.order_id]
    statuses = {
        str(pk): status
        for pk, status in Order.objects.filter(pk__in=ids).values_list("pk", "status")
    }
    for order in demo_orders:
        order.status = statuses.get(order.order_id, order.status)
    return demo_orders


def collect(demo_orders: list[DemoOrder]) -> RunStats:
    """Everything the summary shows, for this run's orders only."""
    stats = RunStats()
    ids = [order.order_id for order in demo_orders if order.order_id]
    records = {str(pk): order for pk, order in Order.objects.in_bulk(ids).items()}
    for demo_order in demo_orders:
        record = records.get(demo_order.order_id)
        status = record.status if record else NOT_PLACED
        stats.statuses[status][demo_order.kind] += 1
    sends = Send.objects.filter(order_id__in=ids)
    attempts = Attempt.objects.filter(send__order_id__in=ids)
    stats.http_calls = attempts.count()
    stats.sends_called = sends.filter(attempts__gt=0).count()
    stats.deferrals = sends.aggregate(total=Sum("deferrals"))["total"] or 0
    stats.compensations = _compensation_outcomes(sends.filter(operation__in=COMPENSATIONS))
    stats.latencies = _latencies(records.values(), sends, attempts)
    return stats


def _compensation_outcomes(compensations: QuerySet[Send]) -> Counter[str]:
    outcomes = Counter()
    for send in compensations:
        if send.status == Send.Status.FAILED:
            outcomes["failed"] += 1
        elif send.nothing_to_undo:
            outcomes["nothing to undo"] += 1
        elif send.status == Send.Status.SUCCEEDED:
            outcomes["undone"] += 1
        else:
            outcomes["in progress"] += 1
    return outcomes


def _latencies(
    orders: Iterable[Order], sends: QuerySet[Send], attempts: QuerySet[Attempt]
) -> dict[str, list[float]]:
    """Every call per partner; then, on the plain path, how one order's two calls combine."""
    header_attempts = attempts.filter(send__operation__in=HEADERS)
    per_partner = defaultdict(list)
    for partner, duration in header_attempts.values_list("send__partner", "duration_ms"):
        per_partner[partner].append(duration)
    settled = [order for order in orders if order.settled_at]
    plain = _completed_without_retry(settled, sends)
    calls = _calls_by_order(header_attempts.filter(send__order_id__in=[o.pk for o in plain]))
    pairs = [calls[order.pk] for order in plain if len(calls[order.pk]) == 2]
    return {
        "inventory (reserve), each call": per_partner["inventory"],
        "payment (charge), each call": per_partner["payment"],
        PLAIN_PATH_HEADING: [],
        "  the two calls added up (one after the other)": [sum(d for _, d in p) for p in pairs],
        "  the slower of the two calls": [max(d for _, d in p) for p in pairs],
        "  both calls in flight: first start to last end": [_span(pair) for pair in pairs],
        "  the order, created to settled": [_end_to_end(order) for order in plain],
        "every order, created to settled": [_end_to_end(order) for order in settled],
    }


def _completed_without_retry(orders: list[Order], sends: QuerySet[Send]) -> list[Order]:
    """Completed orders whose two sends each took one call, never put off: the plain path."""
    retried = set(
        sends.filter(Q(attempts__gt=1) | Q(deferrals__gt=0), operation__in=HEADERS).values_list(
            "order_id", flat=True
        )
    )
    return [
        order
        for order in orders
        if order.status == Order.Status.COMPLETED and order.pk not in retried
    ]


def _calls_by_order(
    attempts: QuerySet[Attempt],
) -> defaultdict[uuid.UUID, list[tuple[datetime.datetime, float]]]:
    """Order id → [(started_at, duration_ms)] of its header calls."""
    calls = defaultdict(list)
    for order_id, started, duration in attempts.values_list(
        "send__order_id", "started_at", "duration_ms"
    ):
        calls[order_id].append((started, duration))
    return calls


def _span(calls: list[tuple[datetime.datetime, float]]) -> float:
    """From the first call's start to the last call's end, in milliseconds."""
    start = min(started for started, _ in calls)
    end = max(started + datetime.timedelta(milliseconds=ms) for started, ms in calls)
    return milliseconds(start, end)


def _end_to_end(order: Order) -> float:
    return milliseconds(order.created_at, order.settled_at)


# --- the tables ------------------------------------------------------------------------------


def status_table(stats: RunStats, kinds: list[Kind]) -> Table:
    """Final status by kind of order, with what each status means underneath."""
    statuses = sorted(stats.statuses, key=STATUS_ORDER.index)
    table = Table(
        title="Orders by final status",
        title_justify="left",
        caption="\n".join(f"{status}: {STATUS_MEANING[status]}" for status in statuses),
        caption_justify="left",
    )
    table.add_column("status")
    table.add_column("orders", justify="right")
    for kind in kinds:
        table.add_column(str(kind), justify="right", style="dim")
    for status in statuses:
        counts = stats.statuses[status]
        table.add_row(
            str(status),
            str(sum(counts.values())),
            *(str(counts[kind] or "") for kind in kinds),
        )
    return table


def work_table(stats: RunStats) -> Table:
    table = Table(title="Work done", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("", style="dim")
    table.add_row("HTTP calls to the partners", str(stats.http_calls), "one Attempt row each")
    table.add_row("retries", str(stats.retries), "calls beyond each send's first")
    table.add_row("calls put off", str(stats.deferrals), "breaker open, rate limit or Retry-After")
    outcomes = ", ".join(f"{count} {name}" for name, count in sorted(stats.compensations.items()))
    table.add_row("compensations", str(stats.compensations.total()), outcomes)
    return table


def latency_table(stats: RunStats) -> Table:
    table = Table(
        title="Latency (ms)",
        title_justify="left",
        caption="Both partners are called at once: together the two calls take about the "
        "slower one, not the sum. Created to settled adds dualsend's own work (API, "
        "broker, database, settle).",
        caption_justify="left",
    )
    table.add_column("measured")
    for name in ("n", "p50", "p95", "p99"):
        table.add_column(name, justify="right")
    for label, values in stats.latencies.items():
        if label == PLAIN_PATH_HEADING:
            table.add_row(label)
            continue
        cells = [ms_cell(percentile(values, pct)) for pct in (50, 95, 99)]
        table.add_row(label, str(len(values)), *cells)
    return table
