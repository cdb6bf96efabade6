"""The bench's figures: percentiles, where an order's time goes, the tables, the verdict.

Everything comes from the client's clock and the orders' own timestamps as the API
returns them (created_at, each send's first_attempt_at and finished_at, settled_at); all
processes run on this machine, so their clocks agree.
"""

import datetime
from collections import Counter
from dataclasses import dataclass, field
from typing import Self

from rich.table import Table

from devstack.bench.traffic import BenchOrder
from devstack.demo.report import milliseconds, ms_cell, percentile
from dualsend_app.models import Order, Send

PERCENTILES = (50, 95, 99)
NOT_PLACED = "not placed"
NOT_FINAL = "not final"


# --- one order ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """One settled order's moments, from the body of GET /api/orders/<id>."""

    posted: datetime.datetime  # the client's clock from here...
    post_answered: datetime.datetime
    answered: datetime.datetime  # ...to here; the rest is the order's own timestamps
    created: datetime.datetime
    settled: datetime.datetime
    picked_up: dict[str, datetime.datetime]  # operation → the send's first_attempt_at
    recorded: dict[str, datetime.datetime]  # operation → the send's finished_at

    @classmethod
    def of(cls, order: BenchOrder) -> Self | None:
        body = order.body or {}
        if not body.get("settled_at"):
            return None
        sends = {send["operation"]: send for send in body.get("sends", [])}
        headers = [sends.get(operation) for operation in Send.HEADER_OPERATIONS]
        if not all(send and send["first_attempt_at"] and send["finished_at"] for send in headers):
            return None
        return cls(
            posted=_wall(order.posted_wall),
            post_answered=_wall(order.post_answered_wall),
            answered=_wall(order.answered_wall),
            created=_moment(body["created_at"]),
            settled=_moment(body["settled_at"]),
            picked_up={s["operation"]: _moment(s["first_attempt_at"]) for s in headers},
            recorded={s["operation"]: _moment(s["finished_at"]) for s in headers},
        )

    @property
    def post_to_created_ms(self) -> float:
        return milliseconds(self.posted, self.created)

    @property
    def post_round_trip_ms(self) -> float:
        return milliseconds(self.posted, self.post_answered)

    @property
    def settled_to_seen_ms(self) -> float:
        return milliseconds(self.settled, self.answered)

    @property
    def server_ms(self) -> float:
        return milliseconds(self.created, self.settled)

    def send_ms(self, operation: str) -> float:
        return milliseconds(self.picked_up[operation], self.recorded[operation])

    @property
    def to_first_pickup_ms(self) -> float:
        return milliseconds(self.created, min(self.picked_up.values()))

    @property
    def pickups_apart_ms(self) -> float:
        return milliseconds(min(self.picked_up.values()), max(self.picked_up.values()))

    @property
    def both_sends_ms(self) -> float:
        return milliseconds(min(self.picked_up.values()), max(self.recorded.values()))

    @property
    def settle_hop_ms(self) -> float:
        return milliseconds(max(self.recorded.values()), self.settled)


def _moment(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


def _wall(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


# --- one phase ---------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    orders: list[BenchOrder]
    timelines: list[Timeline] = field(init=False)

    def __post_init__(self) -> None:
        self.timelines = [t for t in map(Timeline.of, self.orders) if t is not None]

    @property
    def end_to_end(self) -> list[float]:
        return [o.end_to_end_ms for o in self.orders if o.is_final and o.end_to_end_ms is not None]

    @property
    def server(self) -> list[float]:
        return [timeline.server_ms for timeline in self.timelines]

    @property
    def statuses(self) -> Counter[str]:
        return Counter(_final_status(order) for order in self.orders)

    @property
    def all_completed(self) -> bool:
        return set(self.statuses) == {Order.Status.COMPLETED}

    @property
    def window_seconds(self) -> float | None:
        """First POST sent to the last order settled (server time); None if none settled."""
        posted = [o.posted_wall for o in self.orders if o.posted_wall is not None]
        if not posted or not self.timelines:
            return None
        last_settled = max(timeline.settled for timeline in self.timelines).timestamp()
        return last_settled - min(posted)

    @property
    def orders_per_second(self) -> float | None:
        window = self.window_seconds
        return len(self.timelines) / window if window else None


def _final_status(order: BenchOrder) -> str:
    if not order.order_id:
        return NOT_PLACED
    return order.status if order.is_final else NOT_FINAL


# --- the tables ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Partners:
    inventory_ms: float
    payment_ms: float

    @property
    def slower_ms(self) -> float:
        return max(self.inventory_ms, self.payment_ms)

    @property
    def sum_ms(self) -> float:
        return self.inventory_ms + self.payment_ms


def latency_table(phase: Phase, partners: Partners) -> Table:
    table = Table(
        title=f"Latency, one order at a time ({len(phase.orders)} orders, ms)",
        title_justify="left",
        caption=f"end-to-end: POST sent → GET ?wait=10 returned the order settled (the "
        f"client's clock); server-side: the order's created_at → settled_at. The calls: "
        f"inventory {partners.inventory_ms:g} ms, payment {partners.payment_ms:g} ms.",
        caption_justify="left",
    )
    table.add_column("measured")
    for name in ("n", *(f"p{pct}" for pct in PERCENTILES), "max", "p50÷slower"):
        table.add_column(name, justify="right")
    for label, values in (
        ("end-to-end (client)", phase.end_to_end),
        ("server-side", phase.server),
    ):
        cells = [ms_cell(percentile(values, pct)) for pct in PERCENTILES]
        p50 = percentile(values, 50)
        ratio = "-" if p50 is None else f"{p50 / partners.slower_ms:.2f}"
        table.add_row(label, str(len(values)), *cells, ms_cell(max(values, default=None)), ratio)
    table.add_section()
    for label, value in (
        ("the slower call", partners.slower_ms),
        ("the sum of both calls", partners.sum_ms),
    ):
        ratio = f"{value / partners.slower_ms:.2f}"
        table.add_row(
            label, "", *[ms_cell(value)] * len(PERCENTILES), ms_cell(value), ratio, style="dim"
        )
    return table


def breakdown_table(phase: Phase, partners: Partners, *, title: str) -> Table:
    """Where an order's time goes, step by step, the client's steps included."""
    table = Table(
        title=f"Where the time goes, {title} (ms)",
        title_justify="left",
        caption="picked up: a send's first_attempt_at (a worker thread took it); recorded: "
        "its finished_at (the answer written). The client's moments are its own clock; "
        "the rest are the order's timestamps from the API.",
        caption_justify="left",
    )
    table.add_column("step")
    for name in ("n", *(f"p{pct}" for pct in PERCENTILES), "max"):
        table.add_column(name, justify="right")
    t = phase.timelines
    inventory, payment = Send.HEADER_OPERATIONS
    steps = (
        ("POST sent → order created", [x.post_to_created_ms for x in t]),
        ("POST round trip (202 answered)", [x.post_round_trip_ms for x in t]),
        ("created → first send picked up", [x.to_first_pickup_ms for x in t]),
        ("the two sends picked up apart", [x.pickups_apart_ms for x in t]),
        (f"inventory send ({partners.inventory_ms:g} ms call)", [x.send_ms(inventory) for x in t]),
        (f"payment send ({partners.payment_ms:g} ms call)", [x.send_ms(payment) for x in t]),
        ("first pick-up → last send recorded", [x.both_sends_ms for x in t]),
        ("last send recorded → order settled", [x.settle_hop_ms for x in t]),
        ("created → settled (server-side)", [x.server_ms for x in t]),
        ("settled → GET ?wait returned it", [x.settled_to_seen_ms for x in t]),
    )
    for label, values in steps:
        cells = [ms_cell(percentile(values, pct)) for pct in PERCENTILES]
        table.add_row(label, str(len(values)), *cells, ms_cell(max(values, default=None)))
    return table


def throughput_table(phase: Phase, *, concurrency: int, worker_concurrency: int) -> Table:
    table = Table(
        title=f"Throughput, {concurrency} client threads, {worker_concurrency} worker threads",
        title_justify="left",
    )
    table.add_column("measured")
    table.add_column("value", justify="right")
    table.add_column("", style="dim")
    window = phase.window_seconds
    rate = phase.orders_per_second
    table.add_row("orders placed", str(len(phase.orders)), "")
    table.add_row("orders settled", str(len(phase.timelines)), "")
    table.add_row("first POST → last settled", "-" if window is None else f"{window:.1f} s", "")
    table.add_row("orders settled a second", "-" if rate is None else f"{rate:.1f}", "")
    for label, values in (
        ("end-to-end", phase.end_to_end),
        ("server-side", phase.server),
    ):
        table.add_row(
            f"{label} p50 / p99",
            f"{ms_cell(percentile(values, 50))} / {ms_cell(percentile(values, 99))} ms",
            "client's clock" if label == "end-to-end" else "created → settled",
        )
    statuses = ", ".join(f"{status} {count}" for status, count in sorted(phase.statuses.items()))
    table.add_row("final status", statuses, "all completed?")
    return table


def verdict(phase: Phase, partners: Partners) -> str:
    """One line: the p50 end-to-end next to the slower call and the sum, which one it is
    nearer, and whether the two calls overlapped (the evidence for why)."""
    p50 = percentile(phase.end_to_end, 50)
    if p50 is None:
        return "no order settled: no verdict"
    if p50 < (partners.slower_ms + partners.sum_ms) / 2:
        judgement = "the slower call, not the sum"
    elif p50 < partners.sum_ms:
        judgement = "nearer the sum than the slower call"
    else:
        judgement = "more than the sum"
    line = (
        f"p50 end-to-end {p50:.0f} ms vs slower call {partners.slower_ms:.0f} ms and sum "
        f"{partners.sum_ms:.0f} ms: {judgement}"
    )
    server = percentile(phase.server, 50)
    apart = percentile([timeline.pickups_apart_ms for timeline in phase.timelines], 50)
    if server is None or apart is None:
        return line
    overlap = (
        "so the calls ran at once"
        if apart < min(partners.inventory_ms, partners.payment_ms) / 2
        else "so the calls did not overlap"
    )
    return f"{line} (server-side {server:.0f} ms; sends picked up {apart:.0f} ms apart, {overlap})"
