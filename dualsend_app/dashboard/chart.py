"""The orders chart of the page's first view, as SVG shapes the template writes out.

One bar per minute, stacked by status in `stats.STATUS_ORDER`; each status's colour is a
CSS class (static/dashboard/dashboard.css). static/dashboard/dashboard.js draws the same
chart from the JSON at every refresh, with the same geometry: change both together.
"""

import datetime
from dataclasses import dataclass

from .stats import STATUS_ORDER, OrdersByStatus

WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 10, 22
PLOT_WIDTH, PLOT_HEIGHT = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
BAR_GAP = 2


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    status: str
    title: str


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    rects: list[Rect]
    labels: list[Label]
    # The horizontal axis: from (LEFT, baseline) to (WIDTH - RIGHT, baseline).
    left: int
    right: int
    baseline: int


def scale_top(value: int) -> int:
    """The axis's top: the smallest 1, 2 or 5 times 10^k at or above `value` (at least 1)."""
    top = 1
    while top < value:
        top = next_step(top)
    return top


def next_step(top: int) -> int:
    """1 → 2 → 5 → 10 → 20 → 50 → 100 …"""
    digits = str(top)
    leading, zeros = int(digits[0]), len(digits) - 1
    return {1: 2, 2: 5, 5: 10}[leading] * 10**zeros


def orders_chart(orders: OrdersByStatus) -> Chart:
    top = scale_top(max((minute.total for minute in orders.minutes), default=0))
    slot = PLOT_WIDTH / len(orders.minutes)
    rects = []
    for index, minute in enumerate(orders.minutes):
        x = LEFT + index * slot + BAR_GAP / 2
        y = TOP + PLOT_HEIGHT
        for status in STATUS_ORDER:
            count = minute.counts[status]
            if not count:
                continue
            height = count / top * PLOT_HEIGHT
            y -= height
            title = f"{minute_label(minute.start)} {status}: {count}"
            rects.append(Rect(x, y, slot - BAR_GAP, height, status, title))
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        rects=rects,
        labels=axis_labels(orders, top),
        left=LEFT,
        right=WIDTH - RIGHT,
        baseline=TOP + PLOT_HEIGHT,
    )


def axis_labels(orders: OrdersByStatus, top: int) -> list[Label]:
    """The vertical scale (0 and its top), and the first, middle and last minute."""
    slot = PLOT_WIDTH / len(orders.minutes)
    below = TOP + PLOT_HEIGHT + 16
    middle = len(orders.minutes) // 2
    return [
        Label(LEFT - 6, TOP + PLOT_HEIGHT, "0", "end"),
        Label(LEFT - 6, TOP + 10, str(top), "end"),
        Label(LEFT, below, minute_label(orders.minutes[0].start), "start"),
        Label(
            LEFT + (middle + 0.5) * slot,
            below,
            minute_label(orders.minutes[middle].start),
            "middle",
        ),
        Label(WIDTH - RIGHT, below, minute_label(orders.minutes[-1].start) + " UTC", "end"),
    ]


def minute_label(start: datetime.datetime) -> str:
    return start.astimezone(datetime.UTC).strftime("%H:%M")
