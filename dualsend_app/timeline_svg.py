"""An order's timeline, drawn: inline SVG rendered on the server (no script, no CDN).

    order status  [pending|dispatched ........................|completed]
    inventory.reserve    [201]
    payment.charge       [503]~~backoff~~[502]~~backoff~~[201]
                                                             | completed

One shared time axis, from the order's creation to its settling (now while it is not
settled), stretched to cover every attempt. Each send is a row (reserve, charge, then
release and refund when they ran); each `Attempt` is a bar from its start to its end,
coloured by its outcome and labelled with its status code or error; the time between a
send's calls is a wait with its reason, from what the rows tell: the retry the attempt
planned (`will_retry`, `retry_in_seconds`), the send's deferrals (breaker, rate limit,
the partner's pause), the order's status history (an operator's re-drive). The top lane
is the order's status over time (`OrderStatusChange` rows); a vertical line marks the
settle, with the final status.

Markup other code and tests rely on (every text escaped; nothing from a request body):

    <svg class="order-timeline" data-order="<id>" ...>
      <g class="status-lane"> <rect class="status-span" data-status="dispatched" ...> ...
      <g class="send-row" data-operation="payment.charge" data-status="succeeded">
        <rect class="attempt" data-send="payment.charge" data-number="2"
              data-outcome="retry" data-status-code="503" x=... width=...><title>...
        <rect class="wait" data-send="payment.charge" data-after="2"
              data-reason="backoff: retry planned in 0.42 s" ...><title>...
      <line class="settle" data-status="completed" x1=...>   (or class="now" if not settled)
      <g class="legend"> ...
"""

import datetime
import math
from collections.abc import Iterable
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from .models import Order
from .partners.outcomes import AnswerOutcome
from .timeline import Bar, Row, Timeline, for_order

# Geometry, in SVG user units (the picture scales to the page's width).
WIDTH = 960
PLOT_LEFT = 170
PLOT_RIGHT = WIDTH - 24
AXIS_Y = 26
LANE_Y = 34
LANE_HEIGHT = 14
ROWS_TOP = 62
ROW_HEIGHT = 34
BAR_HEIGHT = 16
MIN_BAR_WIDTH = 2.0
CHARACTER_WIDTH = 6.0  # of the 9-unit labels, to tell whether a label fits

OUTCOME_COLOURS = {
    AnswerOutcome.SUCCEEDED: "#2e7d32",
    AnswerOutcome.RETRY: "#ef6c00",
    AnswerOutcome.FAILED: "#c62828",
}
STATUS_COLOURS = {
    Order.Status.PENDING: "#b0bec5",
    Order.Status.DISPATCHED: "#64b5f6",
    Order.Status.COMPENSATING: "#ffb74d",
    Order.Status.COMPLETED: "#66bb6a",
    Order.Status.FAILED: "#e57373",
    Order.Status.COMPENSATED: "#ba68c8",
    Order.Status.NEEDS_ATTENTION: "#d32f2f",
}
WAIT_COLOUR = "#cfd8dc"
TEXT_COLOUR = "#263238"


def order_timeline_svg(order: Order) -> SafeString:
    """The order's timeline as inline SVG, read from its rows (three queries)."""
    return render(for_order(order))


# --- to SVG --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    start: datetime.datetime
    seconds: float

    def x(self, at: datetime.datetime) -> float:
        offset = (at - self.start).total_seconds() / self.seconds
        return PLOT_LEFT + min(max(offset, 0.0), 1.0) * (PLOT_RIGHT - PLOT_LEFT)

    def label(self, at: datetime.datetime) -> str:
        return duration_label((at - self.start).total_seconds())


def render(timeline: Timeline) -> SafeString:
    """The SVG element; every text goes through format_html, so it is escaped."""
    span = max((timeline.end - timeline.start).total_seconds(), 0.001)
    # A little room after the end, so the settle line and its label are not on the edge.
    scale = Scale(timeline.start, span * 1.02)
    rows_bottom = ROWS_TOP + ROW_HEIGHT * len(timeline.rows)
    height = rows_bottom + 64
    parts = [
        _row_backgrounds(len(timeline.rows)),
        _axis(scale, span, rows_bottom),
        _status_lane(timeline, scale),
        *(_send_row(row, index, scale) for index, row in enumerate(timeline.rows)),
        _status_ticks(timeline, scale, rows_bottom),
        _settle_marker(timeline, scale, rows_bottom),
        _legend(rows_bottom + 40),
    ]
    return format_html(
        '<svg class="order-timeline" data-order="{}" xmlns="http://www.w3.org/2000/svg" '
        'viewBox="0 0 {} {}" width="{}" height="{}" style="max-width:100%;height:auto" '
        'role="img" font-family="sans-serif" font-size="11" fill="{}">'
        "<title>{}</title>{}</svg>",
        timeline.order_id,
        WIDTH,
        height,
        WIDTH,
        height,
        TEXT_COLOUR,
        f"timeline of order {timeline.order_id}",
        _join(parts),
    )


def _join(parts: Iterable[SafeString]) -> SafeString:
    return format_html_join("", "{}", ((part,) for part in parts))


def _number(value: float) -> str:
    return f"{value:.1f}"


def _axis(scale: Scale, span: float, rows_bottom: int) -> SafeString:
    step = tick_step(span)
    ticks = []
    for index in range(int(span / step) + 1):
        seconds = index * step
        x = _number(scale.x(scale.start + datetime.timedelta(seconds=seconds)))
        ticks.append(
            format_html(
                '<line class="tick" x1="{}" x2="{}" y1="{}" y2="{}" stroke="#eceff1"/>'
                '<text x="{}" y="{}" text-anchor="middle" font-size="9">{}</text>',
                x,
                x,
                AXIS_Y,
                rows_bottom,
                x,
                AXIS_Y - 6,
                duration_label(seconds),
            )
        )
    return format_html(
        '<g class="axis"><text x="4" y="{}" font-size="9">since created</text>{}'
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#90a4ae"/></g>',
        AXIS_Y - 6,
        _join(ticks),
        PLOT_LEFT,
        PLOT_RIGHT,
        AXIS_Y,
        AXIS_Y,
    )


def tick_step(span_seconds: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving at most 10 ticks."""
    rough = span_seconds / 10
    magnitude = 10 ** math.floor(math.log10(rough)) if rough > 0 else 0.001
    for multiple in (1, 2, 5, 10):
        if multiple * magnitude >= rough:
            return multiple * magnitude
    return 10 * magnitude


def duration_label(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


def _status_lane(timeline: Timeline, scale: Scale) -> SafeString:
    """The order's status over time, one span per status history row."""
    spans = []
    for change, following in zip(timeline.changes, [*timeline.changes[1:], None], strict=True):
        end = following.at if following else timeline.end
        x1, x2 = scale.x(change.at), scale.x(end)
        title = f"{change.to_status} from {scale.label(change.at)}: {change.reason}"
        if change.by:
            title += f" (by {change.by})"
        spans.append(
            format_html(
                '<rect class="status-span" data-status="{}" x="{}" y="{}" width="{}" '
                'height="{}" fill="{}"><title>{}</title></rect>',
                change.to_status,
                _number(x1),
                LANE_Y,
                _number(max(x2 - x1, 1.0)),
                LANE_HEIGHT,
                STATUS_COLOURS.get(change.to_status, WAIT_COLOUR),
                title,
            )
        )
    return format_html(
        '<g class="status-lane"><text x="4" y="{}">order status</text>{}</g>',
        LANE_Y + 11,
        _join(spans),
    )


def _row_backgrounds(rows: int) -> SafeString:
    """Every other row shaded, under the axis' tick lines (drawn first)."""
    return format_html_join(
        "",
        '<rect x="0" y="{}" width="{}" height="{}" fill="#f5f7f8"/>',
        ((ROWS_TOP + index * ROW_HEIGHT, WIDTH, ROW_HEIGHT) for index in range(1, rows, 2)),
    )


def _send_row(row: Row, index: int, scale: Scale) -> SafeString:
    top = ROWS_TOP + index * ROW_HEIGHT
    bar_y = top + (ROW_HEIGHT - BAR_HEIGHT) // 2 + 4
    waits = [
        format_html(
            '<rect class="wait" data-send="{}" data-after="{}" data-reason="{}" x="{}" y="{}" '
            'width="{}" height="{}" fill="{}" fill-opacity="0.6" stroke="#90a4ae" '
            'stroke-dasharray="3 2"><title>{}</title></rect>',
            wait.operation,
            wait.after_number,
            wait.reason,
            _number(scale.x(wait.start)),
            bar_y + 4,
            _number(max(scale.x(wait.end) - scale.x(wait.start), 1.0)),
            BAR_HEIGHT - 8,
            WAIT_COLOUR,
            f"waited {duration_label((wait.end - wait.start).total_seconds())}: {wait.reason}",
        )
        for wait in row.waits
    ]
    bars = []
    for bar, following in zip(row.bars, [*row.bars[1:], None], strict=True):
        x = scale.x(bar.start)
        width = max(scale.x(bar.end) - x, MIN_BAR_WIDTH)
        room = (scale.x(following.start) - x) if following else WIDTH
        bars.append(
            format_html(
                '<rect class="attempt" data-send="{}" data-number="{}" data-outcome="{}" '
                'data-status-code="{}" x="{}" y="{}" width="{}" height="{}" fill="{}" rx="2">'
                "<title>{}</title></rect>{}",
                bar.operation,
                bar.number,
                bar.outcome,
                "" if bar.status_code is None else bar.status_code,
                _number(x),
                bar_y,
                _number(width),
                BAR_HEIGHT,
                OUTCOME_COLOURS.get(bar.outcome, WAIT_COLOUR),
                bar.title,
                _bar_label(bar, x, bar_y, room),
            )
        )
    return format_html(
        '<g class="send-row" data-operation="{}" data-status="{}">'
        '<text class="row-label" x="4" y="{}">{}</text>'
        '<text x="4" y="{}" font-size="9" fill="#607d8b">{}</text>{}{}</g>',
        row.operation,
        row.status,
        top + 14,
        row.operation,
        top + 26,
        f"{row.status}, {len(row.bars)} call(s)",
        _join(waits),
        _join(bars),
    )


def _bar_label(bar: Bar, x: float, bar_y: int, room: float) -> SafeString:
    """The status code or error above the bar, when it fits before the next bar."""
    if len(bar.label) * CHARACTER_WIDTH > room:
        return format_html("{}", "")
    return format_html(
        '<text class="attempt-label" x="{}" y="{}" font-size="9">{}</text>',
        _number(x),
        bar_y - 2,
        bar.label,
    )


def _status_ticks(timeline: Timeline, scale: Scale, rows_bottom: int) -> SafeString:
    """A thin line across the rows at each status change after the creation."""
    ticks = [
        format_html(
            '<line class="status-change" data-from="{}" data-to="{}" x1="{}" x2="{}" y1="{}" '
            'y2="{}" stroke="{}" stroke-dasharray="2 3"><title>{}</title></line>',
            change.from_status,
            change.to_status,
            _number(scale.x(change.at)),
            _number(scale.x(change.at)),
            LANE_Y,
            rows_bottom,
            STATUS_COLOURS.get(change.to_status, WAIT_COLOUR),
            f"{change.from_status} → {change.to_status} at {scale.label(change.at)}: "
            f"{change.reason}" + (f" (by {change.by})" if change.by else ""),
        )
        for change in timeline.changes
        if change.from_status
    ]
    return format_html('<g class="status-changes">{}</g>', _join(ticks))


def _settle_marker(timeline: Timeline, scale: Scale, rows_bottom: int) -> SafeString:
    """The settle, with the final status; or `now`, with the status so far."""
    settled = timeline.settled_at is not None and timeline.status in Order.FINAL_STATUSES
    at = timeline.settled_at if settled else timeline.end
    x = _number(scale.x(at))
    label = (
        f"settled {timeline.status} at {scale.label(at)}"
        if settled
        else f"now: {timeline.status} ({scale.label(at)})"
    )
    return format_html(
        '<g class="{}-marker"><line class="{}" data-status="{}" x1="{}" x2="{}" y1="{}" y2="{}" '
        'stroke="{}" stroke-width="2"><title>{}</title></line>'
        '<text x="{}" y="{}" text-anchor="end" font-weight="bold">{}</text></g>',
        "settle" if settled else "now",
        "settle" if settled else "now",
        timeline.status,
        x,
        x,
        LANE_Y,
        rows_bottom + 4,
        STATUS_COLOURS.get(timeline.status, TEXT_COLOUR) if settled else TEXT_COLOUR,
        label,
        x,
        rows_bottom + 18,
        label,
    )


LEGEND = (
    ("attempt succeeded", OUTCOME_COLOURS[AnswerOutcome.SUCCEEDED]),
    ("attempt to retry", OUTCOME_COLOURS[AnswerOutcome.RETRY]),
    ("attempt failed", OUTCOME_COLOURS[AnswerOutcome.FAILED]),
    ("wait (hover: why)", WAIT_COLOUR),
)


def _legend(y: int) -> SafeString:
    items = [
        format_html(
            '<rect x="{}" y="{}" width="12" height="10" fill="{}"/><text x="{}" y="{}">{}</text>',
            PLOT_LEFT + index * 150,
            y,
            colour,
            PLOT_LEFT + index * 150 + 16,
            y + 9,
            text,
        )
        for index, (text, colour) in enumerate(LEGEND)
    ]
    return format_html(
        '<g class="legend"><text x="4" y="{}">legend</text>{}'
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="2"/>'
        '<text x="{}" y="{}">settle: final status</text></g>',
        y + 9,
        _join(items),
        PLOT_LEFT + 4 * 150,
        PLOT_LEFT + 4 * 150,
        y - 1,
        y + 11,
        TEXT_COLOUR,
        PLOT_LEFT + 4 * 150 + 6,
        y + 9,
    )
