"""OpenTelemetry tracing: on when the standard `OTEL_*` variables ask for it, off otherwise.

On when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set or
`OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`), unless `OTEL_SDK_DISABLED` is
`true`. Each process that serves requests or runs tasks then calls
`setup_from_environment` (the web in `project/wsgi.py`, each worker process from the
Celery signals in `project/celery.py`): a tracer provider that exports in batches over
OTLP `http/protobuf`, and the Django, Celery and `requests` instrumentations. An order is
one trace: the `POST /api/orders` span, the order's dispatch, each task (the context
travels in the Celery message headers), each partner call (both partners receive a W3C
`traceparent` with the order's trace id), settle and the compensations it enqueues.

Off (the default), nothing of OpenTelemetry is imported, nothing is instrumented, and
`span()` hands back a `nullcontext`: tracing then costs one attribute read.

Every other `OTEL_*` variable keeps its standard meaning, read by the SDK itself
(`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
`OTEL_BSP_SCHEDULE_DELAY`, `OTEL_TRACES_SAMPLER`, …).
"""

import contextlib
import importlib
import logging
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: importing them is what tracing off avoids
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

logger = logging.getLogger(__name__)

SUPPORTED_PROTOCOL = "http/protobuf"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
EXPORTERS = ("otlp", "console")
# Requests that start no trace unless OTEL_PYTHON_DJANGO_EXCLUDED_URLS says otherwise.
UNTRACED_PATHS = ("/healthz", "/readyz", "/metrics")
# Our own span attributes: `dualsend.order_id`, `dualsend.send_id`, …
ATTRIBUTE_PREFIX = "dualsend."


class _Tracing:
    """This process's tracing, once set up: None while tracing is off."""

    provider: "TracerProvider | None" = None
    tracer: "Tracer | None" = None


_current = _Tracing()


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the `OTEL_*` variables ask for tracing (see the module docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip():
        return exporter_names(environ) != []
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def exporter_names(environ: Mapping[str, str] = os.environ) -> list[str]:
    """`OTEL_TRACES_EXPORTER` as a list (`otlp` when unset; `none`: no exporter).

    A name we do not ship, or an OTLP protocol other than `http/protobuf`, stops start-up
    with the variable and its value, as any bad setting does."""
    raw = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if names == ["none"]:
        return []
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={raw!r}: {', '.join(unknown)} is not available"
            f" (use {' or '.join(EXPORTERS)}, or none)"
        )
    if "otlp" in names:
        for variable in PROTOCOL_VARIABLES:
            protocol = environ.get(variable, "").strip()
            if protocol and protocol != SUPPORTED_PROTOCOL:
                raise ValueError(f"{variable}={protocol!r}: only {SUPPORTED_PROTOCOL} is supported")
    return names


def setup_from_environment(role: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Trace this process if the `OTEL_*` variables ask for it; True if it is traced.

    `role` (`web`, `worker`) names the service when `OTEL_SERVICE_NAME` does not. Call it
    once per process, after any fork (a batch exporter's thread does not survive one),
    after `django.setup()` and, in the web, before the handler loads its middleware. A
    second call does nothing."""
    if _current.provider is not None:
        return True
    if not wanted(environ):
        return False
    names = exporter_names(environ)  # a bad value stops start-up before anything is set up
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: f"dualsend-{role}"}))
    provider = TracerProvider(resource=resource)
    for exporter in _exporters(names):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    start(provider)
    logger.info("tracing on: %s", resource.attributes.get(SERVICE_NAME))
    return True


def _exporters(names: list[str]) -> list["SpanExporter"]:
    exporters: list[SpanExporter] = []
    if "otlp" in names:
        # Reads OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT, … itself.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())
    if "console" in names:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporters.append(ConsoleSpanExporter())
    return exporters


def start(provider: "TracerProvider") -> None:
    """Instrument Django, Celery and `requests` with `provider` (the tests pass one that
    keeps spans in memory); `stop()` undoes it."""
    from celery import current_app
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    # The Celery instrumentation ends a publish span only for a task it finds in the
    # registry; the web enqueues by name, so it must know our tasks too.
    for module in current_app.conf.imports:
        importlib.import_module(module)
    DjangoInstrumentor().instrument(tracer_provider=provider, excluded_urls=_untraced_urls())
    CeleryInstrumentor().instrument(tracer_provider=provider)
    RequestsInstrumentor().instrument(tracer_provider=provider)
    _current.provider = provider
    _current.tracer = provider.get_tracer(__name__)


def _untraced_urls() -> str:
    """The probes' and the scraper's requests are no one's order: a trace each every few
    seconds would bury the orders'. The standard variables still win."""
    for variable in ("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"):
        if os.environ.get(variable):
            return os.environ[variable]
    return ",".join(UNTRACED_PATHS)


def stop() -> None:
    """Export what is left (a worker's last spans, at shutdown), then trace no more."""
    provider = _current.provider
    if provider is None:
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    _current.provider = _current.tracer = None
    for instrumentor in (DjangoInstrumentor(), CeleryInstrumentor(), RequestsInstrumentor()):
        instrumentor.uninstrument()
    provider.shutdown()  # flushes each processor first


def span(name: str, **attributes: str | int) -> AbstractContextManager[Any]:
    """A span around a step of ours, child of the current one; each attribute is named
    `dualsend.<name>`. With tracing off, a `nullcontext`."""
    tracer = _current.tracer
    if tracer is None:
        return contextlib.nullcontext()
    return tracer.start_as_current_span(name, attributes=_named(attributes))


def new_trace(name: str, **attributes: str | int) -> AbstractContextManager[Any]:
    """A span that starts a trace of its own, linked to the current span (a re-drive by
    the sweeper: one trace per order re-driven, not one for the whole sweep)."""
    tracer = _current.tracer
    if tracer is None:
        return contextlib.nullcontext()
    from opentelemetry import trace
    from opentelemetry.context import Context

    current = trace.get_current_span().get_span_context()
    links = [trace.Link(current)] if current.is_valid else []
    return tracer.start_as_current_span(
        name, context=Context(), links=links, attributes=_named(attributes)
    )


def _named(attributes: Mapping[str, str | int]) -> dict[str, str | int]:
    return {f"{ATTRIBUTE_PREFIX}{key}": value for key, value in attributes.items()}
