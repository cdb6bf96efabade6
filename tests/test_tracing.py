"""OpenTelemetry tracing: off unless OTEL_* asks, and then one trace per order.

In the test process, spans are kept by the SDK's in-memory exporter; on the real
processes (gunicorn, a Celery worker), they are exported over OTLP/HTTP to a small
collector (tests/otlp_collector.py), and the partner simulators record the `traceparent`
each request carried.
"""

import datetime
import json
import os
import subprocess
import sys

import pytest
import requests
import responses
from django.utils import timezone
from kombu.messaging import Producer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dualsend_app import enqueue, recovery, tracing
from dualsend_app.models import Order, Send
from dualsend_app.partners import clients
from tests.factories import create_order, stranded_order
from tests.helpers import API_TOKEN, new_request_id, order_body, wait_final, wait_until
from tests.otlp_collector import OtlpCollector, tree
from tests.processes import ROOT, Gunicorn, Worker

Op = Send.Operation


def trace_id_of(traceparent):
    """The trace id of a W3C `traceparent` (version-traceid-parentid-flags)."""
    version, trace_id, parent_id, _flags = traceparent.split("-")
    assert (version, len(trace_id), len(parent_id)) == ("00", 32, 16), traceparent
    return trace_id


def hex_trace_id(span):
    return format(span.context.trace_id, "032x")


# --- switched on by the standard variables ---------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "dualsend"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ],
)
def test_tracing_is_on_only_when_the_otel_variables_ask(environ, expected):
    assert tracing.wanted(environ) is expected


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL='grpc'",
        ),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER='zipkin'"),
    ],
)
def test_an_exporter_we_do_not_ship_stops_start_up_naming_the_variable(environ, named):
    with pytest.raises(ValueError, match=named):
        tracing.setup_from_environment("web", environ)


# The web's entry point and a worker's signals, as a process started with `otel` runs them.
# (redis-py imports OpenTelemetry's API and metrics SDK whenever they are installed, and
# leaves them unused: what tracing off must not do is set up tracing.)
PROCESS_START = """
import json, sys, threading, types
import requests
import project.wsgi
from celery import signals
from project import celery
celery._trace_worker(sender=types.SimpleNamespace(pool_cls="threads"))
celery._trace_pool_process()
from django.conf import settings
from dualsend_app import tracing
with tracing.span("step") as step:
    pass
api = sys.modules.get("opentelemetry.trace")
print(json.dumps({
    "tracing_modules": sorted(
        m for m in sys.modules
        if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.instrumentation",
                         "opentelemetry.exporter"))
    ),
    "tracer_provider": type(getattr(api, "_TRACER_PROVIDER", None)).__name__,
    "django_traced": any("opentelemetry" in m for m in settings.MIDDLEWARE),
    "celery_traced": any(
        "opentelemetry" in repr(receiver) for receiver in signals.before_task_publish.receivers
    ),
    "requests_traced": hasattr(requests.Session.send, "__wrapped__"),
    "exporter_threads": [t.name for t in threading.enumerate() if t.name.startswith("Otel")],
    "span": repr(step),
}))
celery._flush_traces()
"""


def start_a_process(**otel):
    environ = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", PROCESS_START],
        cwd=ROOT,
        env=environ | otel,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_with_no_otel_variable_nothing_is_traced_nor_set_up_for_it():
    """Tracing off costs nothing: no tracer provider, no exporter thread, nothing
    instrumented, no span object; the SDK's tracing modules are not even imported."""
    off = start_a_process()

    assert off == {
        "tracing_modules": [],
        "tracer_provider": "NoneType",
        "django_traced": False,
        "celery_traced": False,
        "requests_traced": False,
        "exporter_threads": [],
        "span": "None",
    }


def test_with_an_endpoint_the_web_and_worker_start_traced(collector):
    """The counterpart of the test above, so that it can fail; the span reaches the
    collector when the process stops."""
    on = start_a_process(OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint)

    assert on["tracer_provider"] == "TracerProvider"
    assert on["django_traced"] is True
    assert on["celery_traced"] is True
    assert on["requests_traced"] is True
    assert on["exporter_threads"] == ["OtelBatchSpanRecordProcessor"]
    assert "_Span" in on["span"]
    assert [(span.service, span.name) for span in collector.spans()] == [("dualsend-web", "step")]


# --- spans in the test process (in-memory exporter) -----------------------------------------


@pytest.fixture
def provider():
    """Tracing on in this process, its spans kept in memory; off again afterwards."""
    provider = TracerProvider()
    provider.exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(provider.exporter))
    tracing.start(provider)
    try:
        yield provider
    finally:
        tracing.stop()


@pytest.fixture
def spans(provider):
    return provider.exporter


@pytest.fixture
def tracer(provider):
    """For the spans a test opens itself (a task's, a sweep's)."""
    return provider.get_tracer("test")


@pytest.fixture
def published(monkeypatch):
    """The task messages the broker would have taken: their headers (nothing is sent)."""
    headers = []

    def publish(producer, body, **options):
        if "task" in (options.get("headers") or {}):  # not the task-sent events
            headers.append(options["headers"])

    monkeypatch.setattr(Producer, "publish", publish)
    return headers


def ten_seconds_ago():
    return timezone.now() - datetime.timedelta(seconds=10)


def by_name(finished):
    named = {}
    for span in finished:
        named.setdefault(span.name, []).append(span)
    return named


def test_the_request_span_is_the_root_of_the_dispatch_and_its_messages(
    spans, published, client, transactional_db
):
    """POST /api/orders → dispatch order → one publish span per header task, each message
    carrying a traceparent of that one trace."""
    response = client.post(
        "/api/orders",
        data=json.dumps(order_body()),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {API_TOKEN}",
    )
    assert response.status_code == 202
    order_id = response.json()["id"]

    named = by_name(spans.get_finished_spans())
    (request,) = named["POST api/orders"]
    (dispatch,) = named["dispatch order"]
    sends = (
        named["apply_async/tasks.sends.send_inventory"]
        + named["apply_async/tasks.sends.send_payment"]
    )
    assert request.parent is None
    assert request.kind is trace.SpanKind.SERVER
    assert dispatch.parent.span_id == request.context.span_id
    assert dispatch.attributes["dualsend.order_id"] == order_id
    assert [send.parent.span_id for send in sends] == [dispatch.context.span_id] * 2
    assert sorted(message["task"] for message in published) == [
        "tasks.sends.send_inventory",
        "tasks.sends.send_payment",
    ]
    assert {trace_id_of(message["traceparent"]) for message in published} == {hex_trace_id(request)}
    assert Order.objects.get(pk=order_id).status == Order.Status.DISPATCHED


@pytest.mark.parametrize("operation", [Op.INVENTORY_RESERVE, Op.PAYMENT_CHARGE])
@responses.activate
def test_each_partner_call_sends_the_traceparent_of_the_current_trace(spans, tracer, operation):
    """Inside a task's span: a `call …` span, the HTTP span in it, and the partner gets
    the HTTP span's id in the task's trace."""
    order = Order(payload=order_body(), correlation_id="corr-1")
    method, path, body = clients.build_request(operation, order)
    send = Send(id=7, order=order, operation=operation, method=method, path=path)
    send.request_body = body
    send.partner = send.partner_of(operation)
    base = clients.partner_config(send.partner).base_url
    responses.add(method, base + path, json={}, status=201)

    with tracer.start_as_current_span("a task") as task:
        clients.call(send, request_id="corr-1")

    sent = responses.calls[0].request.headers["traceparent"]
    named = by_name(spans.get_finished_spans())
    (call,) = named[f"call {operation}"]
    (http_span,) = named[method]
    assert trace_id_of(sent) == format(task.get_span_context().trace_id, "032x")
    assert sent.split("-")[2] == format(http_span.context.span_id, "016x")
    assert http_span.kind is trace.SpanKind.CLIENT
    assert http_span.parent.span_id == call.context.span_id
    assert call.parent.span_id == task.get_span_context().span_id
    assert call.attributes == {"dualsend.order_id": str(order.pk), "dualsend.send_id": 7}


def test_a_redispatch_by_the_sweeper_starts_a_trace_of_its_own_linked_to_the_sweep(
    spans, tracer, published, db
):
    """One trace per re-driven order, not one for the whole sweep; the link leads back."""
    stranded = stranded_order(
        status=Order.Status.PENDING,
        **{Op.INVENTORY_RESERVE: ("pending", False), Op.PAYMENT_CHARGE: ("pending", False)},
    )
    create_order()  # just created: not the sweeper's business yet

    with tracer.start_as_current_span("sweep") as sweep:
        assert recovery.redispatch_undispatched_orders(created_before=ten_seconds_ago()) == 1

    named = by_name(spans.get_finished_spans())
    (redrive,) = named["re-drive dispatch"]
    (dispatch,) = named["dispatch order"]
    assert redrive.parent is None
    assert hex_trace_id(redrive) != format(sweep.get_span_context().trace_id, "032x")
    assert [link.context.span_id for link in redrive.links] == [sweep.get_span_context().span_id]
    assert redrive.attributes["dualsend.order_id"] == str(stranded.pk)
    assert dispatch.parent.span_id == redrive.context.span_id
    assert {trace_id_of(message["traceparent"]) for message in published} == {hex_trace_id(redrive)}


def test_once_tracing_stops_nothing_stays_instrumented(published, db):
    """After `tracing.stop()` (as a worker's shutdown calls it) messages go out bare."""
    tracing.start(TracerProvider())
    tracing.stop()
    order = create_order()

    assert enqueue.dispatch_order(order.pk) is True
    assert len(published) == 2
    assert [message for message in published if "traceparent" in message] == []


# --- the real processes: gunicorn and a worker exporting to a collector --------------------


@pytest.fixture
def collector():
    receiver = OtlpCollector()
    yield receiver
    receiver.close()


def otel_environment(collector, **more):
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        **more,
    }


class TracedWeb(Gunicorn):
    """gunicorn as production runs it (project.wsgi, gthread), tracing on."""

    def __init__(self, env):
        super().__init__("web-tracing", env)

    def place_order(self, request_id):
        response = requests.post(
            f"{self.url}/api/orders",
            json=order_body(),
            headers={"Authorization": f"Bearer {API_TOKEN}", "X-Request-ID": request_id},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        return response.json()["id"]


@pytest.fixture
def traced_web(stack_env, collector, live):
    env, _ = stack_env
    web = TracedWeb(env | otel_environment(collector, OTEL_SERVICE_NAME="dualsend-api"))
    yield web
    web.stop()


def traced_worker(workers, stack_env, collector, pool):
    """A worker exporting its spans: on the threads pool (the default) it traces itself;
    on prefork, each pool process does (Celery's worker_process_init)."""
    otel = otel_environment(collector)
    if pool == "threads":
        return workers(**otel)
    env, _ = stack_env
    prefork = {"DUALSEND_WORKER_POOL": "prefork", "DUALSEND_WORKER_CONCURRENCY": "2"}
    worker = Worker(env | otel | prefork, concurrency=None, name="own")
    workers.running.append(worker)  # stopped after the test with the others
    worker.start()
    return worker


@pytest.mark.integration
@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_each_order_is_one_trace_from_the_request_to_both_partners(
    workers, stack_env, traced_web, collector, live, pool
):
    """Spans reach the collector from the web and the worker, and for each order both
    partners saw a traceparent of the same trace: the one its request started."""
    worker = traced_worker(workers, stack_env, collector, pool)
    declined = new_request_id()
    live.script(declined, "charge", [{"status": 402, "code": "card_declined"}])
    completed_id = traced_web.place_order(new_request_id())
    compensated_id = traced_web.place_order(declined)
    assert wait_final(completed_id).status == Order.Status.COMPLETED
    assert wait_final(compensated_id).status == Order.Status.COMPENSATED

    trace_of = {}
    for order_id in (completed_id, compensated_id):
        seen = live.requests_log(order_id=order_id)
        assert {record["partner"] for record in seen} == {"inventory", "payment"}
        (trace_of[order_id],) = {trace_id_of(record["traceparent"]) for record in seen}
    assert trace_of[completed_id] != trace_of[compensated_id]

    def trace_spans(order_id):
        return [span for span in collector.spans() if span.trace_id == trace_of[order_id]]

    def settled(order_id):
        # Each send, once final, settles the order (the first finds the other not final).
        names = [span.name for span in trace_spans(order_id)]
        return names.count("settle order") == 2 and "dispatch order" in names

    wait_until(lambda: settled(completed_id) and settled(compensated_id), 15, "spans exported")
    # The last spans (a compensation's) are flushed by the worker's clean shutdown.
    worker.stop()
    assert worker.process.returncode == 0

    completed = trace_spans(completed_id)
    print(f"\norder {completed_id}, trace {trace_of[completed_id]}:\n{tree(completed)}")
    (root,) = [span for span in completed if not span.parent_span_id]
    assert (root.service, root.kind, root.name) == ("dualsend-api", "server", "POST api/orders")
    assert {span.name for span in completed if span.service == "dualsend-worker"} >= {
        "run/tasks.sends.send_inventory",
        "run/tasks.sends.send_payment",
        "call inventory.reserve",
        "call payment.charge",
        "settle order",
    }
    dispatch = next(span for span in completed if span.name == "dispatch order")
    assert dispatch.attributes["dualsend.order_id"] == completed_id
    compensated = trace_spans(compensated_id)
    print(f"order {compensated_id}, trace {trace_of[compensated_id]}:\n{tree(compensated)}")
    assert {span.name for span in compensated} >= {
        "run/tasks.compensations.compensate",
        "call inventory.release",
    }, tree(compensated)
    releases = live.requests_log(order_id=compensated_id)
    assert "release" in {record["operation"] for record in releases}
