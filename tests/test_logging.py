"""Structured logs: one JSON object per line, and the order's ids on every line about it.

First the pieces (the log context, its filter, the formatters, the task headers), then
the real processes: a Celery worker and gunicorn with DUALSEND_LOG_FORMAT=json take
orders through HTTP, and every line they wrote is read back.
"""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import uuid
from types import SimpleNamespace

import pytest
import requests
from celery.canvas import Signature
from django.core.exceptions import ImproperlyConfigured

from devstack import free_port
from dualsend_app import log_context, task_log_context
from dualsend_app.log_context import ContextFilter
from dualsend_app.log_formats import (
    AccessJsonFormatter,
    JsonLogFormatter,
    TextLogFormatter,
    log_format,
)
from tests.environment import TEST_ENVIRONMENT
from tests.helpers import (
    API_TOKEN,
    batch_order,
    new_request_id,
    order_body,
    post_batch,
    wait_until,
)
from tests.processes import ALL_QUEUES, ROOT, answers_ping

ORDER_ID = "5d0e8f64-3b53-4b8e-9d3c-1c2f0e9b7a11"


@pytest.fixture(autouse=True)
def no_order_in_context():
    log_context.clear()
    yield
    log_context.clear()


def formatted(formatter, message="something happened", *args, logger="dualsend_app.test", **extra):
    """One record through the filter and `formatter`, as a handler of ours writes it."""
    record = logging.LogRecord(logger, logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    ContextFilter().filter(record)
    return formatter.format(record)


# --- the pieces --------------------------------------------------------------------------


def test_a_line_about_an_order_carries_its_ids_as_fields():
    with log_context.bound(order_id=ORDER_ID, correlation_id="checkout-42"):
        line = json.loads(formatted(JsonLogFormatter(), "settled status=%s", "completed"))

    assert line["message"] == "settled status=completed"
    assert line["order_id"] == ORDER_ID
    assert line["correlation_id"] == "checkout-42"
    assert {"time", "level", "logger"} <= line.keys()


def test_a_line_about_no_order_carries_no_ids():
    line = json.loads(formatted(JsonLogFormatter()))

    assert "order_id" not in line
    assert "correlation_id" not in line


def test_bound_gives_back_the_ids_it_replaced():
    """The sweeper's loop sets each order in turn; the ids around it come back after."""
    log_context.bind(order_id=None, correlation_id="batch-1")
    with log_context.bound(order_id=ORDER_ID, correlation_id="batch-1.0"):
        assert log_context.current() == (ORDER_ID, "batch-1.0")

    assert log_context.current() == (None, "batch-1")


def test_a_json_line_holds_no_request_object_nor_task_arguments():
    """Django puts the request on its lines, Celery the task's arguments: neither is kept."""
    request = SimpleNamespace(headers={"Authorization": "Bearer s3cret-token"})
    celery_data = {"id": "task-1", "name": "tasks.x", "args": "('tok_visa_4242',)"}

    text = formatted(
        JsonLogFormatter(),
        "Task %s received",
        "tasks.x",
        logger="celery.worker.strategy",
        request=request,
        data=celery_data,
        status_code=404,
    )

    line = json.loads(text)
    assert "s3cret-token" not in text
    assert "tok_visa_4242" not in text
    assert line["task_id"] == "task-1"
    assert line["task_name"] == "tasks.x"
    assert line["status_code"] == 404


def test_the_access_line_holds_the_request_but_none_of_its_headers():
    """gunicorn hands the access line every header: only the request's own fields are kept,
    and the answer's X-Request-ID is the correlation id."""
    atoms = {
        "h": "127.0.0.1",
        "m": "GET",
        "U": f"/api/orders/{ORDER_ID}",
        "q": "wait=10",
        "s": "200",
        "B": 512,
        "M": 42,
        "{authorization}i": "Bearer s3cret-token",
        "{x-request-id}o": "checkout-42",
    }
    with log_context.bound(order_id=ORDER_ID):
        text = formatted(AccessJsonFormatter(), '%(h)s "%(m)s %(U)s" %(s)s', atoms)

    line = json.loads(text)
    assert "s3cret-token" not in text
    assert line["message"] == f'127.0.0.1 "GET /api/orders/{ORDER_ID}" 200'
    assert line["correlation_id"] == "checkout-42"
    assert line["order_id"] == ORDER_ID
    assert (line["method"], line["status"], line["duration_ms"]) == ("GET", 200, 42)


def test_text_lines_show_the_ids_after_the_message():
    with log_context.bound(order_id=ORDER_ID, correlation_id="checkout-42"):
        about_order = formatted(TextLogFormatter(), "created")
    about_nothing = formatted(TextLogFormatter(), "sweep re-drove nothing")

    assert about_order.endswith(f"created [order_id={ORDER_ID} correlation_id=checkout-42]")
    assert about_nothing.endswith("sweep re-drove nothing")


def test_the_format_follows_debug_unless_chosen():
    assert log_format("", debug=False) == "json"
    assert log_format("", debug=True) == "text"
    assert log_format("JSON", debug=True) == "json"
    with pytest.raises(ValueError, match="DUALSEND_LOG_FORMAT"):
        log_format("xml", debug=False)


def test_a_bad_log_format_stops_start_up():
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=os.environ | {"DUALSEND_LOG_FORMAT": "xml"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert ImproperlyConfigured.__name__ in result.stderr
    assert "DUALSEND_LOG_FORMAT must be json or text, got 'xml'" in result.stderr


def test_a_task_carries_the_publishers_ids_to_the_worker():
    """Published with the order's ids, a task message's headers hold them, and the task
    sets them when it starts."""
    headers = {}
    with log_context.bound(order_id=ORDER_ID, correlation_id="checkout-42"):
        task_log_context.carry_ids(headers=headers)
    task = SimpleNamespace(request=SimpleNamespace(**headers))

    task_log_context.task_starts(task=task)

    assert log_context.current() == (ORDER_ID, "checkout-42")


def test_a_task_published_outside_an_order_carries_no_ids():
    headers = {}
    task_log_context.carry_ids(headers=headers)
    assert headers == {}


@pytest.mark.django_db
def test_each_order_of_a_batch_logs_and_publishes_with_its_own_ids(
    client, caplog, monkeypatch, django_capture_on_commit_callbacks
):
    """A batch's orders are created in one request: each one's lines, and the tasks it
    publishes, carry its own id and its own correlation id `<X-Request-ID>.<index>`."""
    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.INFO)
    published = []  # the ids each task message was published with, instead of a broker
    monkeypatch.setattr(
        Signature, "apply_async", lambda task, *a, **k: published.append(log_context.current())
    )

    with django_capture_on_commit_callbacks(execute=True):
        response = post_batch(client, [batch_order("a"), batch_order("b")], request_id="batch-7")

    ids = [result["order"]["id"] for result in response.json()["results"]]
    expected = [(ids[0], "batch-7.0"), (ids[1], "batch-7.1")]
    created = [
        (record.order_id, record.correlation_id)
        for record in caplog.records
        if record.getMessage() == "order created"
    ]
    assert created == expected
    assert published == [ids for ids in expected for _send in ("reserve", "charge")]


# --- the real processes ------------------------------------------------------------------

SECRET_SOURCE = "tok_logs_secret_4242"
SECRETS = (
    SECRET_SOURCE,
    API_TOKEN,
    TEST_ENVIRONMENT["INVENTORY_API_TOKEN"],
    TEST_ENVIRONMENT["PAYMENT_API_KEY"],
)


class LoggedProcess:
    """A child process whose stdout and stderr go to two files of the test's own."""

    def __init__(self, directory, args, env):
        directory.mkdir()
        self.stdout = directory / "stdout.log"
        self.stderr = directory / "stderr.log"
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.process = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True
            )

    def stop(self):
        """SIGTERM, as a deployment stops it: a warm shutdown that writes its last lines."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def json_lines(self, stream="stderr"):
        """Every line of the stream as JSON; the test fails on the first that is not."""
        lines = []
        for number, text in enumerate(getattr(self, stream).read_text().splitlines(), 1):
            if not text.strip():
                continue
            try:
                lines.append(json.loads(text))
            except ValueError:
                pytest.fail(f"{getattr(self, stream)}:{number} is not JSON: {text!r}")
        return lines

    def text(self):
        return self.stdout.read_text() + self.stderr.read_text()


@pytest.fixture
def json_stack(own_workers, stack_env, live, tmp_path):
    """A worker on every queue and gunicorn (as the README runs it), both writing JSON."""
    from project.celery import app

    env = stack_env[0] | {"DUALSEND_LOG_FORMAT": "json"}
    name = f"logs-{uuid.uuid4().hex[:6]}"
    worker = LoggedProcess(
        tmp_path / "worker",
        [sys.executable, "-m", "celery", "-A", "project", "worker", "-Q", ALL_QUEUES,
         "--pool", "threads", "--concurrency", "8", "--loglevel", "INFO",
         "--without-gossip", "--without-mingle", "-n", f"{name}@%h"],
        env,
    )  # fmt: skip
    port = free_port()
    web = LoggedProcess(
        tmp_path / "web",
        [sys.executable, "-m", "gunicorn", "project.wsgi", "-b", f"127.0.0.1:{port}",
         "--worker-class", "gthread", "--threads", "4", "--timeout", "60",
         "--no-control-socket"],
        env,
    )  # fmt: skip
    try:
        destination = [f"{name}@{socket.gethostname()}"]
        wait_until(lambda: answers_ping(app, destination), 40, "the worker")
        wait_until(lambda: _answers(port), 30, "gunicorn")
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}", worker=worker, web=web)
    finally:
        web.stop()
        worker.stop()


def _answers(port):
    try:
        requests.get(f"http://127.0.0.1:{port}/api/orders", timeout=2)
    except (requests.ConnectionError, requests.Timeout):
        return False
    return True


def _post_order(url, request_id):
    response = requests.post(
        f"{url}/api/orders",
        json=order_body(payment_source=SECRET_SOURCE),
        headers={"Authorization": f"Bearer {API_TOKEN}", "X-Request-ID": request_id},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _wait_final(url, order_id, request_id):
    response = requests.get(
        f"{url}/api/orders/{order_id}?wait=20",
        headers={"Authorization": f"Bearer {API_TOKEN}", "X-Request-ID": request_id},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["status"]


def _about(lines, order_id):
    """The lines that name the order anywhere: in their message or in a field."""
    return [line for line in lines if order_id in json.dumps(line)]


def _celery_lines(lines, task, what):
    return [
        line
        for line in lines
        if line["logger"].startswith("celery")
        and line["message"].startswith(f"Task {task}[")
        and what in line["message"]
    ]


@pytest.mark.integration
def test_every_line_about_an_order_is_json_with_its_ids(json_stack, live):
    """Three orders (one retried, one declined and compensated) through real gunicorn and a
    real worker: every line either writes is JSON, and each line that names an order
    carries that order's id and correlation id, Celery's task lines and gunicorn's access
    lines included. No secret is in any line."""
    plain, retried, declined = (new_request_id() for _ in range(3))
    live.script(retried, "charge", [{"status": 503}])
    live.script(declined, "charge", [{"status": 402, "code": "card_declined"}])
    created = {rid: _post_order(json_stack.url, rid) for rid in (plain, retried, declined)}
    readers = {rid: new_request_id() for rid in created}
    statuses = {
        rid: _wait_final(json_stack.url, order_id, readers[rid])
        for rid, order_id in created.items()
    }
    assert statuses == {plain: "completed", retried: "completed", declined: "compensated"}

    json_stack.web.stop()
    json_stack.worker.stop()
    web = json_stack.web.json_lines("stderr") + json_stack.web.json_lines("stdout")
    worker = json_stack.worker.json_lines("stderr")

    for rid, order_id in created.items():
        # The worker: the order's correlation id, the one its creating request had.
        for line in _about(worker, order_id):
            assert (line.get("order_id"), line.get("correlation_id")) == (order_id, rid), line
        # The web: the id of the request that wrote the line, creating or reading it.
        for line in _about(web, order_id):
            assert line.get("order_id") == order_id, line
            assert line.get("correlation_id") in {rid, readers[rid]}, line

        ours = _about(worker, order_id)
        tasks = ["tasks.sends.send_inventory", "tasks.sends.send_payment"]
        if rid == declined:
            tasks.append("tasks.compensations.compensate")
        for task in tasks:
            assert _celery_lines(ours, task, "received"), (task, order_id)
            assert _celery_lines(ours, task, "succeeded"), (task, order_id)
        assert any(line["message"].startswith("settled status=") for line in ours)
        access = {
            (line["method"], line["status"], line["correlation_id"])
            for line in _about(web, order_id)
            if line["logger"] == "gunicorn.access"
        }
        assert access == {("POST", 202, rid), ("GET", 200, readers[rid])}
    assert _celery_lines(_about(worker, created[retried]), "tasks.sends.send_payment", "retry")

    everything = json_stack.web.text() + json_stack.worker.text()
    for secret in SECRETS:
        assert secret not in everything
