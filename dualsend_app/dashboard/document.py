"""The JSON the page refreshes itself from (`GET /dashboard/data.json?window=900`).

Times in ISO 8601 (UTC), durations in milliseconds rounded to 0.1, each row that names an
order with the link to its admin page. Nothing secret: no payment source, no request
body, no token; attempt errors scrubbed of credentials (stats.latest_failures).
"""

import datetime
from typing import Any

from .stats import STATUS_ORDER, WINDOWS, OperationCalls, Snapshot


def snapshot_document(snapshot: Snapshot) -> dict[str, Any]:
    orders = snapshot.orders
    return {
        "generated_at": iso(snapshot.generated_at),
        "window": {
            "seconds": snapshot.window_seconds,
            "label": snapshot.window_label,
            "choices": [{"seconds": s, "label": label} for s, label in WINDOWS.items()],
        },
        "orders": {
            "since": iso(orders.since),
            "statuses": list(STATUS_ORDER),
            "total": orders.total,
            "by_status": orders.by_status,
            "minutes": [
                {"start": iso(minute.start), "counts": minute.counts} for minute in orders.minutes
            ],
        },
        "percentile_method": snapshot.percentile_method,
        "calls": [calls_document(calls) for calls in snapshot.calls],
        "breakers": [
            {
                "partner": breaker.partner,
                "state": breaker.state,
                "detail": breaker.detail,
                "calls": breaker.calls,
                "failures": breaker.failures,
                "open_until": iso(breaker.open_until),
                "paused_seconds": breaker.paused_seconds,
                "rule": breaker.rule,
            }
            for breaker in snapshot.breakers
        ],
        "failures": [
            {
                "attempt": failure.attempt_id,
                "order": str(failure.order_id),
                "operation": failure.operation,
                "number": failure.number,
                "started_at": iso(failure.started_at),
                "duration_ms": failure.duration_ms,
                "status_code": failure.status_code,
                "error": failure.error,
                "outcome": failure.outcome,
                "will_retry": failure.will_retry,
                "admin_url": failure.admin_url,
            }
            for failure in snapshot.failures
        ],
        "needs_attention": {
            "total": snapshot.needs_attention.total,
            "admin_list_url": snapshot.needs_attention.admin_list_url,
            "orders": [
                {
                    "id": str(order.id),
                    "created_at": iso(order.created_at),
                    "settled_at": iso(order.settled_at),
                    "status_reason": order.status_reason,
                    "admin_url": order.admin_url,
                }
                for order in snapshot.needs_attention.orders
            ],
        },
    }


def calls_document(calls: OperationCalls) -> dict[str, Any]:
    rate = calls.success_rate
    return {
        "partner": calls.partner,
        "operation": calls.operation,
        "calls": calls.calls,
        "succeeded": calls.succeeded,
        "success_rate": None if rate is None else round(rate, 4),
        "p50_ms": milliseconds(calls.p50_ms),
        "p95_ms": milliseconds(calls.p95_ms),
        "p99_ms": milliseconds(calls.p99_ms),
    }


def milliseconds(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def iso(moment: datetime.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
