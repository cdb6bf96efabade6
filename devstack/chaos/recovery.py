"""How quickly the orders each fault caught settled: the promise is "at most 30 s after".

`waiting_on()` is the snapshot taken at each fault's start (which order waits on what);
`recoveries()` turns the fault records and the orders' timestamps into one `Recovery`
per fault: how many orders it caught, how many are still not final, and the seconds
from the fault (from the component's return, for an outage or a database crash) to the
last caught order settling. faults.py says what "caught" means.
"""

import datetime
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.db.models import Q

from dualsend_app.models import Order, Send

from .faults import FaultRecord

FINAL = tuple(str(status) for status in Order.FINAL_STATUSES)
BUSY = (Send.Status.PENDING, Send.Status.IN_FLIGHT)
# Which worker runs what, as CELERY_TASK_ROUTES routes it (tests/test_chaos.py holds the
# two together): a header send on its partner's queue; a compensation, settle and the
# closing of compensations on the default queue.
HEADER_SEND_WORKER = {"inventory": "inventory", "payment": "payment"}
DEFAULT_WORKER = "default"


def worker_tag(role: str) -> str:
    return f"worker:{role}"


def partner_tag(partner: str) -> str:
    return f"partner:{partner}"


@dataclass(frozen=True)
class OrderTimes:
    created_at: datetime.datetime
    settled_at: datetime.datetime | None


@dataclass(frozen=True)
class Recovery:
    fault: FaultRecord
    caught: int
    unsettled: int  # caught orders not final at the end of the run
    seconds: float | None  # the last caught order settled this long after; None: not all did
    last_order: str  # the order that settled last ("" when none was caught)

    def within(self, bound: float) -> bool:
        return self.seconds is not None and self.seconds <= bound


def waiting_on() -> dict[str, frozenset[str]]:
    """Every order not final → what its next step waits on: for each send pending or in
    flight, the worker that runs it and the partner it calls; an order with none waits
    for settle or for closing its compensations, on the default worker."""
    open_orders = Order.objects.exclude(status__in=FINAL).values_list("pk", flat=True)
    busy_sends = Send.objects.filter(status__in=BUSY).exclude(order__status__in=FINAL)
    tags: dict[str, set[str]] = defaultdict(set)
    for order_id, partner, operation in busy_sends.values_list("order_id", "partner", "operation"):
        header = operation in Send.HEADER_OPERATIONS
        worker = HEADER_SEND_WORKER[partner] if header else DEFAULT_WORKER
        tags[str(order_id)] |= {worker_tag(worker), partner_tag(partner)}
    return {
        str(pk): frozenset(tags.get(str(pk)) or {worker_tag(DEFAULT_WORKER)}) for pk in open_orders
    }


def unsettled(record: FaultRecord) -> int:
    """How many of the orders `record` caught are not final yet."""
    caught = Q(pk__in=list(record.caught))
    if record.lasting:
        down = (_aware(record.started_wall), _aware(record.back_wall))
        caught |= Q(created_at__gte=down[0], created_at__lt=down[1])
    return Order.objects.filter(caught).exclude(status__in=FINAL).count()


def order_times() -> dict[str, OrderTimes]:
    """Every order of the run's own database, by id."""
    rows = Order.objects.values_list("pk", "created_at", "settled_at")
    return {str(pk): OrderTimes(created, settled) for pk, created, settled in rows}


def caught_ids(record: FaultRecord, times: Mapping[str, OrderTimes]) -> set[str]:
    """The orders caught at the fault's start, and, for a lasting fault, every order
    created while its component was down."""
    caught = set(record.caught)
    if record.lasting:
        start, back = _aware(record.started_wall), _aware(record.back_wall)
        caught |= {pk for pk, t in times.items() if start <= t.created_at < back}
    return caught


def recoveries(faults: Iterable[FaultRecord], times: Mapping[str, OrderTimes]) -> list[Recovery]:
    return [_recovery(fault, times) for fault in faults]


def _recovery(fault: FaultRecord, times: Mapping[str, OrderTimes]) -> Recovery:
    caught = caught_ids(fault, times)
    settled = {pk: times[pk].settled_at for pk in caught if pk in times}
    waiting = len(caught) - sum(at is not None for at in settled.values())
    if not caught:
        return Recovery(fault, 0, 0, 0.0, "")
    if waiting:
        return Recovery(fault, len(caught), waiting, None, "")
    last_order = max(settled, key=lambda pk: settled[pk])
    seconds = settled[last_order].timestamp() - fault.measured_from_wall
    return Recovery(fault, len(caught), 0, max(0.0, seconds), last_order)


def _aware(epoch_seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch_seconds, tz=datetime.UTC)
