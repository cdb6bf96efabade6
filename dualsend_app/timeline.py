"""An order's timeline: what happened to its sends in time, from its rows.

The admin's order page draws it (`timeline_svg.render`). One shared time axis, from the
order's creation to its settling (now while it is not settled), stretched to cover every
attempt. Each send is a row (reserve, charge, then release and refund when they ran);
each `Attempt` is a bar from its start to its end; the time between a send's calls is a
wait with its reason, from what the rows tell: the retry the attempt planned
(`will_retry`, `retry_in_seconds`), the send's deferrals (breaker, rate limit, the
partner's pause), the order's status history (an operator's re-drive). The order's
status over time comes from its `OrderStatusChange` rows.

Nothing from a request body is read; texts that could quote the order's card token
have it masked.
"""

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django.utils import timezone

from .masking import mask_payment_source
from .models import Attempt, Order, OrderStatusChange, Send

# Rows in the order the flow runs them.
OPERATION_ORDER = (
    Send.Operation.INVENTORY_RESERVE,
    Send.Operation.PAYMENT_CHARGE,
    Send.Operation.INVENTORY_RELEASE,
    Send.Operation.PAYMENT_REFUND,
)
# A wait longer than planned by this much (and this share) was held by something else.
HELD_LONGER_SECONDS = 0.5
HELD_LONGER_SHARE = 0.5

# --- what is drawn ---------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One HTTP call: one Attempt row."""

    operation: str
    number: int
    start: datetime.datetime
    end: datetime.datetime
    outcome: str
    status_code: int | None
    error: str
    duration_ms: int
    retry_in_seconds: float | None

    @property
    def label(self) -> str:
        """The status code, else the error (a call with no answer: its exception)."""
        if self.status_code is not None:
            return str(self.status_code)
        return (self.error.split(":", 1)[0] or "no answer")[:24]

    @property
    def title(self) -> str:
        answer = f"{self.status_code}" if self.status_code is not None else "no answer"
        text = f"{self.operation} attempt {self.number}: {answer}, {self.outcome}"
        if self.error:
            text += f" ({self.error})"
        text += f", {self.duration_ms} ms"
        if self.retry_in_seconds is not None:
            text += f"; retry planned in {self.retry_in_seconds:.2f} s"
        return text


@dataclass(frozen=True)
class Wait:
    """Time a send spent between its calls (or before the first, or after the last)."""

    operation: str
    start: datetime.datetime
    end: datetime.datetime
    reason: str
    after_number: int  # the attempt it follows; 0 before the first


@dataclass(frozen=True)
class Row:
    operation: str
    status: str
    bars: list[Bar] = field(default_factory=list)
    waits: list[Wait] = field(default_factory=list)


@dataclass(frozen=True)
class Change:
    """One row of the order's status history."""

    at: datetime.datetime
    from_status: str
    to_status: str
    reason: str
    by: str


@dataclass(frozen=True)
class Timeline:
    order_id: str
    start: datetime.datetime
    end: datetime.datetime
    rows: list[Row]
    changes: list[Change]
    status: str
    settled_at: datetime.datetime | None


# --- from the rows -----------------------------------------------------------------------


def for_order(order: Order, now: datetime.datetime | None = None) -> Timeline:
    sends = list(order.sends.all())
    attempts = list(Attempt.objects.filter(send__order=order))
    changes = list(order.status_changes.all())
    return build(order, sends, attempts, changes, now=now or timezone.now())


def build(
    order: Order,
    sends: Iterable[Send],
    attempts: Iterable[Attempt],
    changes: Iterable[OrderStatusChange],
    *,
    now: datetime.datetime,
) -> Timeline:
    """What to draw, from the order's rows as read (no query here)."""
    scrub = _scrubber(order)
    by_send: dict[int, list[Attempt]] = {}
    for attempt in attempts:
        by_send.setdefault(attempt.send_id, []).append(attempt)
    history = _history(order, changes, scrub)
    ordered = sorted(sends, key=lambda s: (_operation_rank(s.operation), s.created_at))
    end_of_story = order.settled_at or now
    rows = [
        _row(send, sorted(by_send.get(send.pk, []), key=lambda a: a.number), history, scrub, now)
        for send in ordered
    ]
    moments = [end_of_story]
    moments += [bar.end for row in rows for bar in row.bars]
    moments += [wait.end for row in rows for wait in row.waits]
    moments += [change.at for change in history]
    return Timeline(
        order_id=str(order.pk),
        start=order.created_at,
        end=max(moments),
        rows=rows,
        changes=history,
        status=order.status,
        settled_at=order.settled_at,
    )


def _operation_rank(operation: str) -> int:
    return (
        OPERATION_ORDER.index(operation) if operation in OPERATION_ORDER else len(OPERATION_ORDER)
    )


@dataclass(frozen=True)
class Scrub:
    """A text with the order's card token masked, should any error ever quote it."""

    secret: str

    def __call__(self, text: str) -> str:
        if not self.secret or self.secret not in text:
            return text
        return text.replace(self.secret, mask_payment_source(self.secret))


def _scrubber(order: Order) -> Scrub:
    source = (order.payload or {}).get("payment_source")
    return Scrub(source if isinstance(source, str) else "")


def _history(order: Order, changes: Iterable[OrderStatusChange], scrub: Scrub) -> list[Change]:
    """The order's status history; for an order older than its history rows, what its
    own timestamps tell."""
    history = [
        Change(
            at=change.at,
            from_status=change.from_status,
            to_status=change.to_status,
            reason=scrub(change.reason),
            by=change.by_username,
        )
        for change in sorted(changes, key=lambda c: (c.at, c.pk or 0))
    ]
    if history:
        return history
    told = "no status history recorded: from the order's timestamps"
    history = [Change(order.created_at, "", Order.Status.PENDING, told, "")]
    if order.dispatched_at:
        history.append(Change(order.dispatched_at, "pending", "dispatched", told, ""))
    if order.status not in (Order.Status.PENDING, Order.Status.DISPATCHED):
        at = order.settled_at or order.updated_at
        history.append(Change(at, history[-1].to_status, order.status, told, ""))
    return history


def _row(
    send: Send,
    attempts: Sequence[Attempt],
    history: Sequence[Change],
    scrub: Scrub,
    now: datetime.datetime,
) -> Row:
    row = Row(operation=send.operation, status=send.status)
    for attempt in attempts:
        end = attempt.started_at + datetime.timedelta(milliseconds=attempt.duration_ms)
        row.bars.append(
            Bar(
                operation=send.operation,
                number=attempt.number,
                start=attempt.started_at,
                end=end,
                outcome=attempt.outcome,
                status_code=attempt.status_code,
                error=scrub(attempt.error),
                duration_ms=attempt.duration_ms,
                retry_in_seconds=attempt.retry_in_seconds if attempt.will_retry else None,
            )
        )
    row.waits.extend(_waits(send, attempts, row.bars, history, scrub, now))
    return row


def _waits(
    send: Send,
    attempts: Sequence[Attempt],
    bars: Sequence[Bar],
    history: Sequence[Change],
    scrub: Scrub,
    now: datetime.datetime,
) -> list[Wait]:
    """Before the first call, between calls, and after a last call that planned another."""
    waits = []
    if bars:
        first = bars[0]
        reason = _queued_reason(send, first.start - send.created_at)
        waits.append(Wait(send.operation, send.created_at, first.start, reason, 0))
    for attempt, bar, following in zip(attempts, bars, bars[1:], strict=False):
        reason = _between_reason(send, attempt, bar.end, following.start, history)
        waits.append(Wait(send.operation, bar.end, following.start, reason, attempt.number))
    if not bars:
        end = send.finished_at or now
        reason = scrub(send.error) or "waiting for a worker"
        waits.append(Wait(send.operation, send.created_at, end, _with_deferrals(send, reason), 0))
    elif attempts[-1].will_retry:
        end = send.finished_at or now
        planned = f"retry planned in {attempts[-1].retry_in_seconds or 0:.2f} s"
        reason = f"{planned}; {scrub(send.error)}" if send.is_final else planned
        waits.append(Wait(send.operation, bars[-1].end, end, reason, attempts[-1].number))
    return [wait for wait in waits if wait.end > wait.start]


def _queued_reason(send: Send, waited: datetime.timedelta) -> str:
    if send.is_compensation:
        reason = "created by settle, waiting for a worker"
    else:
        reason = "dispatched, waiting for a worker"
    if waited.total_seconds() > HELD_LONGER_SECONDS:
        return _with_deferrals(send, reason)
    return reason


def _between_reason(
    send: Send,
    attempt: Attempt,
    end: datetime.datetime,
    next_start: datetime.datetime,
    history: Sequence[Change],
) -> str:
    """Why the send waited from one call to the next."""
    operator = [change for change in history if end <= change.at <= next_start and change.by]
    if operator:
        change = operator[-1]
        return f"{change.reason} (by {change.by})"
    if not attempt.will_retry:
        return "called again: its earlier delivery was lost or re-driven"
    planned = attempt.retry_in_seconds or 0.0
    if attempt.status_code == 429:
        reason = f"rate limited by the partner: retry planned in {planned:.2f} s"
    else:
        reason = f"backoff: retry planned in {planned:.2f} s"
    waited = (next_start - end).total_seconds()
    if waited - planned > max(HELD_LONGER_SECONDS, planned * HELD_LONGER_SHARE):
        return _with_deferrals(send, reason)
    return reason


def _with_deferrals(send: Send, reason: str) -> str:
    """A wait longer than planned: the send's deferrals say why, when it had any."""
    if not send.deferrals:
        return reason
    return (
        f"{reason}; held longer: deferred {send.deferrals} time(s) "
        "(breaker, rate limit or the partner's pause)"
    )
