"""Where dualsend's time goes, step by step, for the orders placed one at a time.

Everything comes from the client's clock and the orders' own timestamps as the API
returns them (created_at, each send's first_attempt_at and finished_at, settled_at); all
processes run on this machine, so their clocks agree.
"""

import datetime
from dataclasses import dataclass, field
from typing import Self

from rich.table import Table

from devstack.bench.traffic import BenchOrder
from devstack.demo.report import milliseconds, ms_cell, percentile
from dualsend_app.models import Send

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
