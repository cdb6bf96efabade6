"""Prometheus metrics: GET /metrics adds up every process of the host, for the right clients.

The unit tests record through the helpers in this process and read the result as
Prometheus would, through /metrics. The integration tests run real orders through the
real worker subprocess (which shares this run's multiprocess directory) and find its
series in /metrics; and a worker started with a port of its own, serving them there.
"""

import datetime
import os
import subprocess
import sys
import urllib.request

import pytest
import redis
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from devstack import free_port
from dualsend_app import metrics, metrics_directory, metrics_state, metrics_worker
from dualsend_app.models import Order
from dualsend_app.partners.clients import PartnerResult
from dualsend_app.partners.http import WireAnswer
from dualsend_app.partners.outcomes import AnswerOutcome, Decision
from dualsend_app.resilience import gate
from dualsend_app.resilience.redis_client import WarningThrottle
from tests import environment
from tests.helpers import new_request_id, place_order, wait_final
from tests.processes import ROOT

CALL_BUCKET = "dualsend_partner_call_duration_seconds_bucket"
CALL_COUNT = "dualsend_partner_call_duration_seconds_count"
ORDER_LATENCY_COUNT = "dualsend_order_latency_seconds_count"
ORDERS_SETTLED = "dualsend_orders_settled_total"


# --- reading /metrics as Prometheus does -------------------------------------------------


def parse(text):
    """[(sample name, labels, value)] of a Prometheus text exposition."""
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def scrape(client, **request):
    response = client.get("/metrics", **request)
    assert response.status_code == 200, response.content
    return parse(response.content.decode())


def total(samples, name, **labels):
    """The sum of the samples of that name whose labels include `labels`."""
    return sum(
        value
        for sample, sample_labels, value in samples
        if sample == name and labels.items() <= sample_labels.items()
    )


def grew(before, after, name, **labels):
    """How much `total` rose from one scrape to the next."""
    return total(after, name, **labels) - total(before, name, **labels)


def has_series(samples, name, **labels):
    return any(
        sample == name and labels.items() <= sample_labels.items()
        for sample, sample_labels, _ in samples
    )


def partner_result(status_code, outcome, *, duration_ms=42, retry_after=None):
    return PartnerResult(
        answer=WireAnswer(status_code=status_code, duration_ms=duration_ms),
        decision=Decision(outcome=outcome, reason="test"),
        remote_id="",
        retry_after=retry_after,
    )


@pytest.fixture
def fresh_warnings(monkeypatch):
    """The scrape's 'source unreachable' warnings, not held back by an earlier test's."""
    monkeypatch.setattr(
        metrics_state,
        "_warnings",
        {what: WarningThrottle(every=60.0) for what in metrics_state._warnings},
    )


@pytest.fixture
def unreachable_redis_and_broker(settings, fresh_warnings):
    """Redis (breaker state) and the broker (queue depth) on a port nothing listens on."""
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    settings.REDIS_URL = nowhere
    settings.CELERY_BROKER_URL = nowhere


# --- the helpers record what their names say ----------------------------------------------


@pytest.mark.parametrize(
    ("status_code", "expected"),
    [(200, "2xx"), (201, "2xx"), (404, "4xx"), (429, "4xx"), (503, "5xx"), (None, "none")],
)
def test_a_call_is_classed_by_its_status(status_code, expected):
    """The status class label: 2xx, 4xx, 5xx, or none for a call that got no answer."""
    assert metrics.status_class(status_code) == expected


def test_a_partner_call_records_its_latency_and_its_status_class(client):
    """One call of 42 ms: an observation in its partner and operation's histogram, in the
    bucket up to 50 ms (not the one up to 25 ms), and one count under its status class
    and outcome."""
    before = scrape(client)

    metrics.record_partner_call(
        "inventory", "inventory.reserve", partner_result(503, AnswerOutcome.RETRY, duration_ms=42)
    )

    after = scrape(client)
    labels = {"partner": "inventory", "operation": "inventory.reserve"}
    assert grew(before, after, CALL_COUNT, **labels) == 1
    assert grew(before, after, CALL_BUCKET, le="0.05", **labels) == 1
    assert grew(before, after, CALL_BUCKET, le="0.025", **labels) == 0
    calls = {"status_class": "5xx", "outcome": "retry"} | labels
    assert grew(before, after, "dualsend_partner_calls_total", **calls) == 1


def test_a_retry_says_whether_the_partners_retry_after_set_its_time(client):
    labels = {"partner": "payment", "operation": "payment.charge"}
    before = scrape(client)

    metrics.record_retry_scheduled("payment", "payment.charge", retry_after=None)
    metrics.record_retry_scheduled("payment", "payment.charge", retry_after=2.0)
    metrics.record_retry_scheduled("payment", "payment.charge", retry_after=0.5)

    after = scrape(client)
    name = "dualsend_send_retries_total"
    assert grew(before, after, name, wait="backoff", **labels) == 1
    assert grew(before, after, name, wait="retry_after", **labels) == 2


@pytest.mark.parametrize(
    ("gate_reason", "reason"),
    [
        (gate.BREAKER_OPEN, "breaker"),
        (gate.BREAKER_PROBES_IN_USE, "breaker"),
        (gate.BREAKER_FRESH_FIRST, "breaker"),
        (gate.RATE_LIMIT, "rate_limit"),
        (gate.PARTNER_ASKED_TO_WAIT, "retry_after"),
    ],
)
def test_a_deferral_is_counted_by_its_reason(client, gate_reason, reason):
    """Each of the gate's reasons falls in one of three: breaker, rate limit, Retry-After."""
    labels = {"partner": "inventory", "operation": "inventory.reserve", "reason": reason}
    before = scrape(client)

    metrics.record_deferral("inventory", "inventory.reserve", gate_reason)

    assert grew(before, scrape(client), "dualsend_send_deferrals_total", **labels) == 1


def test_a_settled_order_counts_by_status_with_its_latency_since_creation(client):
    """A compensated order created 90 s ago: one more compensated order, observed in the
    latency histogram between 60 and 120 s."""
    before = scrape(client)
    created_at = timezone.now() - datetime.timedelta(seconds=90)

    metrics.record_order_settled(Order.Status.COMPENSATED, created_at)

    after = scrape(client)
    bucket = "dualsend_order_latency_seconds_bucket"
    assert grew(before, after, ORDERS_SETTLED, status="compensated") == 1
    assert grew(before, after, bucket, le="60.0", status="compensated") == 0
    assert grew(before, after, bucket, le="120.0", status="compensated") == 1


# --- who may read /metrics ----------------------------------------------------------------


def test_metrics_answer_a_loopback_client_in_prometheus_text(client):
    """The Django test client comes from 127.0.0.1."""
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b"# TYPE dualsend_partner_call_duration_seconds histogram" in response.content


def test_metrics_speak_openmetrics_to_a_scraper_that_asks(client):
    response = client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")


@pytest.mark.parametrize("address", ["::1", "127.0.0.5", "::ffff:127.0.0.1"])
def test_every_loopback_address_is_answered(client, address):
    assert client.get("/metrics", REMOTE_ADDR=address).status_code == 200


def test_metrics_refuse_a_remote_client_without_the_token(client, settings):
    settings.DUALSEND_METRICS_TOKEN = "scrape-secret"

    response = client.get("/metrics", REMOTE_ADDR="10.0.0.5")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert b"dualsend_" not in response.content


def test_metrics_answer_a_remote_client_with_the_token(client, settings):
    settings.DUALSEND_METRICS_TOKEN = "scrape-secret"

    response = client.get(
        "/metrics", REMOTE_ADDR="10.0.0.5", HTTP_AUTHORIZATION="Bearer scrape-secret"
    )

    assert response.status_code == 200
    assert b"dualsend_partner_call_duration_seconds" in response.content


@pytest.mark.parametrize("authorization", ["Bearer wrong-secret", "scrape-secret", ""])
def test_a_wrong_token_is_refused(client, settings, authorization):
    settings.DUALSEND_METRICS_TOKEN = "scrape-secret"

    response = client.get("/metrics", REMOTE_ADDR="10.0.0.5", HTTP_AUTHORIZATION=authorization)

    assert response.status_code == 403


def test_without_a_token_configured_no_bearer_opens_metrics(client, settings):
    settings.DUALSEND_METRICS_TOKEN = ""

    response = client.get("/metrics", REMOTE_ADDR="10.0.0.5", HTTP_AUTHORIZATION="Bearer ")

    assert response.status_code == 403


@pytest.mark.parametrize(
    "header", ["HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP", "HTTP_X_FORWARDED_PROTO"]
)
def test_a_client_a_local_proxy_forwarded_is_not_local(client, header):
    """Behind a reverse proxy on the same host everyone arrives from 127.0.0.1: the proxy's
    headers give the outsider away."""
    response = client.get("/metrics", **{header: "203.0.113.9"})

    assert response.status_code == 403


def test_metrics_take_only_get(client):
    assert client.post("/metrics").status_code == 405


def test_a_worker_port_refuses_a_remote_client_in_the_same_shape():
    """The worker's own port applies the same rule (its WSGI environ, not Django's)."""
    served = []
    app = metrics_worker.guarded(lambda environ, start: served.append(environ) or [b"series"])
    statuses = []

    body = app({"REMOTE_ADDR": "10.0.0.5"}, lambda status, headers: statuses.append(status))

    assert statuses == ["403 Forbidden"]
    assert b'"code": "forbidden"' in b"".join(body)
    assert served == []
    assert app({"REMOTE_ADDR": "127.0.0.1"}, lambda *_: None) == [b"series"]


# --- what is read at scrape time ----------------------------------------------------------


def test_each_partners_breaker_state_is_read_at_scrape_time(client, settings):
    """A breaker nobody has tripped is closed: 1 for closed, 0 for the other states."""
    settings.DUALSEND_RESILIENCE_KEY_PREFIX = f"test-metrics-{new_request_id()}"

    samples = scrape(client)

    for partner in ("inventory", "payment"):
        states = {
            labels["state"]: value
            for name, labels, value in samples
            if name == "dualsend_breaker_state" and labels["partner"] == partner
        }
        assert states == {"closed": 1.0, "open": 0.0, "half_open": 0.0}


def test_each_queues_depth_is_read_at_scrape_time(client):
    assert {
        labels["queue"] for name, labels, _ in scrape(client) if name == "dualsend_queue_depth"
    } == {"api.inventory", "api.payment", "default"}


def test_queue_depth_on_redis_counts_every_priority_list():
    """kombu keeps a Redis queue as a list per priority step: all of them are waiting."""
    queue = f"test-metrics-queue-{new_request_id()}"
    store = redis.Redis.from_url(environment.REDIS_URL)
    store.rpush(queue, "m1", "m2")
    store.rpush(f"{queue}\x06\x163", "m3")
    try:
        depths = metrics_state.read_queue_depths(environment.REDIS_URL, [queue, f"{queue}-empty"])
    finally:
        store.delete(queue, f"{queue}\x06\x163")
        store.close()

    assert depths == {queue: 3, f"{queue}-empty": 0}


def test_redis_and_the_broker_down_leave_their_series_out_not_the_scrape(
    client, unreachable_redis_and_broker, caplog
):
    """Never a 500 for a dependency that is down: its series are absent, and it is logged."""
    response = client.get("/metrics")

    assert response.status_code == 200
    samples = parse(response.content.decode())
    assert not has_series(samples, "dualsend_breaker_state")
    assert not has_series(samples, "dualsend_queue_depth")
    assert "# TYPE dualsend_partner_call_duration_seconds histogram" in response.content.decode()
    logged = [record.getMessage() for record in caplog.records]
    assert any("breaker state left out" in line for line in logged)
    assert any("queue depth left out" in line for line in logged)


# --- the multiprocess directory ----------------------------------------------------------


def exited_pid():
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_tidying_removes_the_files_of_exited_processes_only(tmp_path):
    dead = exited_pid()
    running = os.getpid()
    for name in (
        f"counter_{dead}.db",
        f"histogram_{dead}.db",
        f"gauge_livesum_{dead}.db",
        f"counter_{running}.db",
        f"histogram_{running}.db",
        "notes.txt",
    ):
        (tmp_path / name).write_bytes(b"")

    metrics_directory.remove_files_of_exited_processes(tmp_path)

    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [f"counter_{running}.db", f"histogram_{running}.db", "notes.txt"]
    )


def settings_in_a_new_process(**env):
    """Load the settings in a fresh process; (exit code, stdout, stderr)."""
    code = (
        "import os, django; django.setup(); from django.conf import settings; "
        "print(settings.PROMETHEUS_MULTIPROC_DIR); print(os.environ['PROMETHEUS_MULTIPROC_DIR'])"
    )
    base = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=base | {"DJANGO_SETTINGS_MODULE": "project.settings", "DJANGO_DEBUG": "1"} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout.split(), result.stderr


def test_the_directory_defaults_to_var_prometheus_and_is_exported():
    """Unset: var/prometheus in the project, made, and exported for prometheus_client."""
    code, (chosen, exported), _ = settings_in_a_new_process()

    assert code == 0
    assert chosen == exported == str(ROOT / "var" / "prometheus")
    assert (ROOT / "var" / "prometheus").is_dir()


def test_a_worker_with_a_port_writes_to_a_directory_of_its_own(tmp_path):
    code, (chosen, exported), _ = settings_in_a_new_process(
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path), DUALSEND_METRICS_PORT="9464"
    )

    assert code == 0
    assert chosen == exported == str(tmp_path / "port-9464")
    assert (tmp_path / "port-9464").is_dir()


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DUALSEND_METRICS_PORT", "http"), ("DUALSEND_METRICS_PORT", "70000"),
     ("DUALSEND_METRICS_TOKEN", "two words")],
)  # fmt: skip
def test_a_bad_metrics_setting_stops_start_up_naming_it(variable, value):
    code, _, stderr = settings_in_a_new_process(**{variable: value})

    assert code != 0
    assert variable in stderr
    if variable == "DUALSEND_METRICS_TOKEN":
        assert value not in stderr


# --- on the real processes ----------------------------------------------------------------


@pytest.mark.integration
def test_metrics_has_latency_histograms_for_both_partners_after_a_few_orders(live, client):
    """Three orders through the real worker: /metrics on the web side has both partners'
    call latency histograms, the orders by final status and their latency.

    At least three more of each: in a whole run, an earlier test's late retry may land in
    between; this process calls no partner and settles no order, so all come from the
    worker."""
    before = scrape(client)

    for order_id in [place_order(client, new_request_id()) for _ in range(3)]:
        assert wait_final(order_id).status == Order.Status.COMPLETED

    after = scrape(client)
    for partner, operation in (("inventory", "inventory.reserve"), ("payment", "payment.charge")):
        labels = {"partner": partner, "operation": operation}
        assert has_series(after, CALL_BUCKET, le="+Inf", **labels)
        assert grew(before, after, CALL_COUNT, **labels) >= 3
        ok = {"status_class": "2xx", "outcome": "succeeded"} | labels
        assert grew(before, after, "dualsend_partner_calls_total", **ok) >= 3
    assert grew(before, after, ORDERS_SETTLED, status="completed") >= 3
    assert grew(before, after, ORDER_LATENCY_COUNT, status="completed") >= 3


@pytest.mark.integration
def test_a_worker_with_its_own_port_serves_its_series_there(workers, client):
    """Many hosts: a worker started with DUALSEND_METRICS_PORT serves its calls on that
    port, and the web's /metrics does not count them a second time."""
    port = free_port()
    workers(DUALSEND_METRICS_PORT=str(port))
    web_before = scrape(client)

    order = wait_final(place_order(client, new_request_id()))

    assert order.status == Order.Status.COMPLETED
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        own = parse(response.read().decode())
    for partner in ("inventory", "payment"):
        assert total(own, CALL_COUNT, partner=partner) >= 1
    assert total(own, ORDERS_SETTLED, status="completed") >= 1
    # The only worker running writes to its port's directory, which /metrics does not read.
    assert grew(web_before, scrape(client), CALL_COUNT) == 0
