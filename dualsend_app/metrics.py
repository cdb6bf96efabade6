"""Prometheus metrics: the series dualsend records, and one helper per fact recorded.

The code paths that know a fact call its helper: `sending.py` each partner call, retry
and deferral; `orders.py` each order reaching a final status. Each helper is a counter
increment or a histogram observation in this process's memory-mapped file (no network,
no database): cheap enough for every call. What lives elsewhere (breaker state in Redis,
queue depth in the broker) is read when /metrics is scraped (`metrics_state.py`).

Multiprocess mode: every process of a host writes to files in PROMETHEUS_MULTIPROC_DIR
(`project/settings.py` chooses it before anything imports prometheus_client, which reads
it once) and `registry_for_scrape` adds them up. No gauge is recorded in those files: the
gauges are read at scrape time, so none needs a `multiprocess_mode`.

Labels are few and bounded: partner, operation, status class, outcome, reason, order
status. Never an order id.
"""

import datetime

from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .partners.clients import PartnerResult
from .resilience import gate

# A partner call lasts from a few milliseconds to its timeouts (3.05 + 10 s by default).
CALL_SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0,
)  # fmt: skip
# An order settles in about its slower call; with retries and compensations, in seconds
# to minutes; an order that expires, after DUALSEND_ORDER_MAX_AGE_SECONDS (3 h).
ORDER_SECONDS_BUCKETS = (
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
    1800.0, 3600.0, 10800.0,
)  # fmt: skip

PARTNER_CALL_SECONDS = Histogram(
    "dualsend_partner_call_duration_seconds",
    "One HTTP call to a partner, from sending the request to its answer or error.",
    ["partner", "operation"],
    buckets=CALL_SECONDS_BUCKETS,
)
PARTNER_CALLS = Counter(
    "dualsend_partner_calls",
    "Partner calls by HTTP status class (2xx, 4xx, 5xx, none: no answer) and what the "
    "answer meant for the send (succeeded, retry, failed).",
    ["partner", "operation", "status_class", "outcome"],
)
SEND_RETRIES = Counter(
    "dualsend_send_retries",
    "Retries scheduled after a transient answer; wait=retry_after when the partner's "
    "Retry-After set the earliest time, else backoff.",
    ["partner", "operation", "wait"],
)
SEND_DEFERRALS = Counter(
    "dualsend_send_deferrals",
    "Sends put off before a call by the gate: reason=breaker (open or half-open), rate_limit "
    "(our pace), retry_after (the partner asked every caller to wait: Retry-After, or "
    "X-RateLimit-Remaining at its floor).",
    ["partner", "operation", "reason"],
)
ORDERS_SETTLED = Counter(
    "dualsend_orders_settled",
    "Orders reaching a final status (an order re-driven by an operator counts again).",
    ["status"],
)
ORDER_SECONDS = Histogram(
    "dualsend_order_latency_seconds",
    "From an order's creation to its final status.",
    ["status"],
    buckets=ORDER_SECONDS_BUCKETS,
)

# The gate's reasons (`resilience/gate.py`), as a label of few values.
DEFERRAL_REASONS = {
    gate.PARTNER_ASKED_TO_WAIT: "retry_after",
    gate.RATE_LIMIT: "rate_limit",
    gate.BREAKER_OPEN: "breaker",
    gate.BREAKER_PROBES_IN_USE: "breaker",
    gate.BREAKER_FRESH_FIRST: "breaker",
}


def status_class(status_code: int | None) -> str:
    """`2xx`, `4xx`, `5xx`…, or `none` when the call got no answer (timeout, connection)."""
    return "none" if status_code is None else f"{status_code // 100}xx"


def record_partner_call(partner: str, operation: str, result: PartnerResult) -> None:
    """One HTTP call made: its latency, its status class and what it meant."""
    answer = result.answer
    PARTNER_CALL_SECONDS.labels(partner, operation).observe(answer.duration_ms / 1000)
    outcome = str(result.decision.outcome)
    PARTNER_CALLS.labels(partner, operation, status_class(answer.status_code), outcome).inc()


def record_retry_scheduled(partner: str, operation: str, *, retry_after: float | None) -> None:
    """A send will be tried again after a transient answer."""
    wait = "backoff" if retry_after is None else "retry_after"
    SEND_RETRIES.labels(partner, operation, wait).inc()


def record_deferral(partner: str, operation: str, gate_reason: str) -> None:
    """The gate put a send off without calling (`gate.Admission.reason`)."""
    reason = DEFERRAL_REASONS.get(gate_reason, "other")
    SEND_DEFERRALS.labels(partner, operation, reason).inc()


def record_order_settled(status: str, created_at: datetime.datetime) -> None:
    """An order reached a final status: count it, and how long it took since creation."""
    ORDERS_SETTLED.labels(status).inc()
    ORDER_SECONDS.labels(status).observe((timezone.now() - created_at).total_seconds())


def registry_for_scrape(*collectors: Collector) -> CollectorRegistry:
    """A registry that adds up every process's files in PROMETHEUS_MULTIPROC_DIR, plus
    `collectors` (read at scrape time). Not the default registry: in multiprocess mode it
    would show this process's own values only."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    for collector in collectors:
        registry.register(collector)
    return registry
