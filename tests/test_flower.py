"""Flower lists every task of an order when searched by its id (issue 9).

The stack as the README starts it: the session's worker is a `celery -A project worker`
without -E, so task events come from the settings alone (Flower is told not to switch them
on itself); Flower is `celery -A project flower` with FLOWER_BASIC_AUTH set; this process
is the web side that places the orders. Flower is asked through its HTTP API, with basic
auth: `GET /api/tasks?search=…` runs the same search as the box of its Tasks page.
"""

import ast
import os
import secrets
import subprocess
import sys
import time

import pytest
import requests

from devstack import free_port
from dualsend_app.models import Order, Redrive, Send
from tests.factories import stranded_order
from tests.helpers import new_request_id, place_order, wait_final, wait_until
from tests.processes import ROOT, start_process, stop_process

pytestmark = [pytest.mark.integration]

Op = Send.Operation
SEND_INVENTORY = "tasks.sends.send_inventory"
SEND_PAYMENT = "tasks.sends.send_payment"
SETTLE = "tasks.settle.settle_order"
COMPENSATE = "tasks.compensations.compensate"


class Flower:
    """A running `celery -A project flower`, asked through its HTTP API."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.auth = (user, password)

    def tasks(self, **params) -> dict:
        response = requests.get(f"{self.url}/api/tasks", params=params, auth=self.auth, timeout=5)
        response.raise_for_status()
        return response.json()

    def search_until(self, query: str, done, timeout: float = 20.0) -> dict:
        """The tasks Flower lists for `query`, once `done(tasks)` holds or after `timeout`
        (the test's assertions then say what was missing)."""
        deadline = time.monotonic() + timeout
        while True:
            tasks = self.tasks(search=query)
            if done(tasks) or time.monotonic() > deadline:
                return tasks
            time.sleep(0.2)

    def hears_events(self) -> bool:
        """Flower has received task events: the sweeper's, which beat sends every second."""
        try:
            return bool(self.tasks(taskname="tasks.sweeper.sweep", limit=1))
        except requests.RequestException:
            return False


@pytest.fixture(scope="module")
def flower(stack_env, celery_worker):
    """Flower as the README starts it, on a free port, against the worker's broker."""
    env, _ = stack_env
    # Flower's own metrics are not the web's and workers' (the demo keeps them apart too).
    env = {name: value for name, value in env.items() if name != "PROMETHEUS_MULTIPROC_DIR"}
    port = free_port()
    user, password = "ops", secrets.token_urlsafe(16)
    process = start_process(
        "flower",
        [sys.executable, "-m", "celery", "-A", "project", "flower"],
        env
        | {
            "FLOWER_PORT": str(port),
            "FLOWER_BASIC_AUTH": f"{user}:{password}",
            # Flower would otherwise ask every worker to send events: they must come
            # from the settings.
            "FLOWER_ENABLE_EVENTS": "false",
        },
    )
    try:
        running = Flower(port, user, password)
        wait_until(running.hears_events, 30, "Flower hearing task events")
        yield running
    finally:
        stop_process(process)


def described(tasks: dict) -> set[tuple[str, str | None]]:
    """Each listed task as (name, the operation its kwargs show)."""
    return {
        (task["name"], ast.literal_eval(task["kwargs"]).get("operation")) for task in tasks.values()
    }


def all_succeeded(tasks: dict) -> bool:
    return bool(tasks) and all(task["state"] == "SUCCESS" for task in tasks.values())


def test_flower_lists_every_task_of_an_order_searched_by_its_id(live, client, flower):
    """Both sends (the reservation retried once; the last to finish settles the order) and
    the compensation: all listed when Flower is searched for the order's id, each
    finished, each showing the order."""
    rid = new_request_id()
    live.script(rid, "reserve", [{"status": 503}])
    order_id = place_order(client, rid, payment_source="tok_chargeDeclined")
    assert wait_final(order_id).status == Order.Status.COMPENSATED
    expected = {
        (SEND_INVENTORY, Op.INVENTORY_RESERVE),
        (SEND_PAYMENT, Op.PAYMENT_CHARGE),
        (COMPENSATE, Op.INVENTORY_RELEASE),
    }

    tasks = flower.search_until(
        order_id, lambda found: described(found) >= expected and all_succeeded(found)
    )

    assert described(tasks) == expected
    assert all_succeeded(tasks), {task["name"]: task["state"] for task in tasks.values()}
    assert all(ast.literal_eval(task["kwargs"])["order_id"] == order_id for task in tasks.values())
    reservation = next(task for task in tasks.values() if task["name"] == SEND_INVENTORY)
    assert reservation["retries"] == 1  # found after its retry too
    assert all(task["worker"] for task in tasks.values())  # the worker's own events
    assert set(flower.tasks(search=f"kwargs:order_id={order_id}")) == set(tasks)


PENDING, SUCCEEDED, FAILED = Send.Status.PENDING, Send.Status.SUCCEEDED, Send.Status.FAILED
# What a lost message leaves behind (the order's status, each send's status and whether it
# finished), the re-drive it takes, and the tasks Flower then lists for the order.
LOST_MESSAGES = {
    "both sends": (
        Order.Status.DISPATCHED,
        {Op.INVENTORY_RESERVE: (PENDING, False), Op.PAYMENT_CHARGE: (PENDING, False)},
        Redrive.Kind.SEND,
        {(SEND_INVENTORY, Op.INVENTORY_RESERVE), (SEND_PAYMENT, Op.PAYMENT_CHARGE)},
    ),
    "the settle": (
        Order.Status.DISPATCHED,
        {Op.INVENTORY_RESERVE: (SUCCEEDED, True), Op.PAYMENT_CHARGE: (SUCCEEDED, True)},
        Redrive.Kind.SETTLE,
        {(SETTLE, None)},
    ),
    "a compensation": (
        Order.Status.COMPENSATING,
        {
            Op.INVENTORY_RESERVE: (FAILED, True),
            Op.PAYMENT_CHARGE: (SUCCEEDED, True),
            Op.PAYMENT_REFUND: (PENDING, False),
        },
        Redrive.Kind.COMPENSATION,
        {(COMPENSATE, Op.PAYMENT_REFUND)},
    ),
}


@pytest.mark.parametrize("lost", LOST_MESSAGES)
def test_flower_finds_the_tasks_the_sweeper_re_drives(live, flower, lost):
    """A message lost (never picked up): the sweeper sends its task again, and Flower
    lists it (with the settle a re-driven send carries) by the order's id."""
    status, sends, redrive, expected = LOST_MESSAGES[lost]
    order_id = str(stranded_order(status=status, **sends).pk)
    wait_final(order_id)
    assert Redrive.objects.filter(order_id=order_id, kind=redrive).exists()

    tasks = flower.search_until(
        order_id, lambda found: described(found) >= expected and all_succeeded(found)
    )

    assert described(tasks) == expected
    assert all_succeeded(tasks), {task["name"]: task["state"] for task in tasks.values()}


@pytest.mark.parametrize("credentials", [None, ("ops", "wrong-password")])
def test_flower_refuses_a_request_without_its_credentials(flower, credentials):
    """Neither its API nor its pages answer without the user and password."""
    for path in ("/api/tasks", "/tasks", "/"):
        response = requests.get(f"{flower.url}{path}", auth=credentials, timeout=5)

        assert response.status_code == 401, path


def production_environment() -> dict[str, str]:
    """What a deployment sets (DJANGO_DEBUG off), without any FLOWER_* variable."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("FLOWER_")}
    return env | {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": "postgres://dualsend:db-password@db.internal:5432/dualsend",
        "DUALSEND_API_TOKENS": "shop:" + secrets.token_urlsafe(24),
        "INVENTORY_API_URL": "https://inventory.example.com",
        "INVENTORY_API_TOKEN": secrets.token_urlsafe(24),
        "PAYMENT_API_URL": "https://payment.example.com",
        "PAYMENT_API_KEY": secrets.token_urlsafe(24),
    }


@pytest.mark.parametrize(
    ("basic_auth", "reason"),
    [
        (None, "FLOWER_BASIC_AUTH must be set when DJANGO_DEBUG is off"),
        ("ops-without-password", "FLOWER_BASIC_AUTH: entry 1 is not user:password"),
    ],
)
def test_flower_will_not_start_open_outside_development(basic_auth, reason):
    """DJANGO_DEBUG off: no Flower without a user and password, and the value is not shown."""
    env = production_environment() | {"FLOWER_PORT": str(free_port())}
    if basic_auth is not None:
        env["FLOWER_BASIC_AUTH"] = basic_auth

    finished = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "project", "flower"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.returncode != 0
    assert reason in finished.stderr
    if basic_auth is not None:
        assert basic_auth not in finished.stderr + finished.stdout
