"""The chaos run, shortened, is part of the suite: `manage.py chaos` must PASS.

The command runs as a subprocess with a stack of its own (its own PostgreSQL server when
PostgreSQL's binaries are here, its own Redis, simulators, per-queue workers, beat and
web server on free ports, and, with RabbitMQ, its own virtual host), so the session's
worker and simulators are never disturbed. The Redis run meets one fault of each kind
that the full run has (a worker SIGKILL, a Redis restart, a PostgreSQL crash, a partner
outage); the RabbitMQ run a kill and the other partner's outage. The verdict's checks
that a passing run never trips (a 500, an effect for an order never accepted, a slow
recovery) and the client's retries are specified on their own below.
"""

import datetime
import http.server
import json
import os
import random
import re
import subprocess
import sys
import threading
from collections import Counter

import pytest
from django.db import connection

from devstack import (
    QUEUE_WORKERS,
    RABBITMQ_HOST,
    RABBITMQ_PORT,
    Faults,
    clean_environment,
    rabbitmq_answers,
)
from devstack.chaos import faults, recovery, report, traffic, verdict
from devstack.chaos.postgres import binary_dir
from devstack.chaos.run import RunSetup
from devstack.traffic.client import Kind
from tests.processes import ROOT, database_url

SHORT_RUN = (
    "--orders", "60",
    "--fault-gap", "1",
    # As long as the chaos breaker's window (10 s): by its end the window holds only
    # the outage's failures. At 6 s the sends that succeeded just before it, and the
    # outage's 429s (neutral, and pausing every call), left the breaker shut in 2 of 5
    # runs, short of its failure rate.
    "--outage-seconds", "10",
    "--postgres-down-seconds", "3",
    "--timeout", "150",
    # Enough calls in a short outage for the breaker to judge it.
    "--setting", "INVENTORY_API_BREAKER_MIN_CALLS=5",
    "--setting", "PAYMENT_API_BREAKER_MIN_CALLS=5",
)  # fmt: skip
# The run's own bound is 150 s; starting and stopping the stack adds a little.
SUBPROCESS_TIMEOUT = 270
SHOWN_OUTPUT = 8000
HAS_POSTGRES = binary_dir() is not None
T0 = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture
def database_options(django_db_setup, tmp_path):
    """A PostgreSQL server of the run's own when the binaries are here (so it can be
    crashed); else a database of the run's own beside the session's, never crashed."""
    if HAS_POSTGRES:
        return ()
    if connection.vendor == "sqlite":
        url = f"sqlite:///{tmp_path / 'chaos.sqlite3'}"
    else:
        # Named after this session's database, so two test runs never share it.
        url = f"{database_url()}_chaos"
    return ("--database-url", url, "--postgres-crashes", "0")


def run_chaos(*options):
    """`manage.py chaos` with none of the test session's settings in its environment."""
    env = clean_environment() | {"DJANGO_DEBUG": "1"}
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]  # so the run refuses to reuse it
    command = [sys.executable, "manage.py", "chaos", *SHORT_RUN, *options]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )


def assert_passed(result):
    output = f"{result.stdout[-SHOWN_OUTPUT:]}\n--- stderr ---\n{result.stderr[-SHOWN_OUTPUT:]}"
    assert result.returncode == 0, output
    assert "dualsend chaos run: PASS" in result.stdout, output
    assert "500 answers: 0" in result.stdout, output
    assert "Recovery per fault" in result.stdout, output
    return result.stdout


@pytest.mark.integration
@pytest.mark.timeout(SUBPROCESS_TIMEOUT + 30)
def test_short_chaos_run_passes_with_redis_as_broker(database_options):
    """A kill, a Redis restart, a PostgreSQL crash and an outage on the Redis broker:
    nothing lost, nothing doubled, no 500, each fault's orders settled within 30 s."""
    faults_of_each_kind = (
        "--kills", "1", "--redis-restarts", "1", "--postgres-crashes", "1",
        "--outages", "inventory",
    )  # fmt: skip
    result = run_chaos("--broker", "redis", "--seed", "11", *faults_of_each_kind, *database_options)

    output = assert_passed(result)
    if HAS_POSTGRES:
        assert "crash postgres" in output
        assert "removed PostgreSQL data directory" in output


@pytest.mark.integration
@pytest.mark.timeout(SUBPROCESS_TIMEOUT + 30)
@pytest.mark.skipif(
    not rabbitmq_answers(),
    reason=f"RabbitMQ does not answer on {RABBITMQ_HOST}:{RABBITMQ_PORT} "
    "(`rabbitmq-server -detached` starts it)",
)
def test_short_chaos_run_passes_with_rabbitmq_as_broker(database_options):
    """A kill and the other partner's outage with RabbitMQ as the broker, Redis keeping
    results and shared state."""
    a_kill_and_an_outage = (
        "--kills", "1", "--redis-restarts", "0", "--postgres-crashes", "0",
        "--outages", "payment",
    )  # fmt: skip
    result = run_chaos(
        "--broker", "rabbitmq", "--seed", "12", *a_kill_and_an_outage, *database_options
    )

    assert_passed(result)


# --- the schedule --------------------------------------------------------------------------


def full_plan(seed=1):
    return faults.plan(
        kills=5,
        worker_roles=["inventory", "payment", "default"],
        redis_restarts=2,
        postgres_crashes=1,
        postgres_down_seconds=5,
        outage_partners=["inventory", "payment"],
        outage_seconds=10,
        gap=8,
        rng=random.Random(seed),
    )


@pytest.mark.parametrize("seed", range(5))
def test_the_full_schedule_kills_every_queue_worker_and_downs_each_partner_apart(seed):
    """Five kills over the three per-queue workers, two Redis restarts, one PostgreSQL
    crash, one outage of each partner, never two outages in a row nor first."""
    plan = full_plan(seed)
    actions = Counter(fault.action for fault in plan)
    killed = Counter(fault.target for fault in plan if fault.action == faults.Action.KILL_WORKER)
    outages = [i for i, fault in enumerate(plan) if fault.action == faults.Action.OUTAGE]

    assert actions == {"kill worker": 5, "restart redis": 2, "crash postgres": 1, "outage": 2}
    assert set(killed) == {"inventory", "payment", "default"}
    assert max(killed.values()) == 2
    assert sorted(plan[i].target for i in outages) == ["inventory", "payment"]
    assert outages[0] > 0
    assert outages[1] - outages[0] > 1


def test_a_fault_catches_only_the_orders_waiting_on_what_it_hits():
    """A kill catches the orders with work on that worker, an outage those with a send to
    that partner (a release runs on the default worker but calls inventory); a Redis
    restart catches all."""
    waiting = {
        "reserving": frozenset({"worker:inventory", "partner:inventory"}),
        "releasing": frozenset({"worker:default", "partner:inventory"}),
        "settling": frozenset({"worker:default"}),
    }

    def caught(action, target=""):
        fault = faults.PlannedFault(action, 0, target)
        return [order for order, waits_on in waiting.items() if fault.catches(waits_on)]

    assert caught(faults.Action.KILL_WORKER, "inventory") == ["reserving"]
    assert caught(faults.Action.KILL_WORKER, "default") == ["releasing", "settling"]
    assert caught(faults.Action.OUTAGE, "inventory") == ["reserving", "releasing"]
    assert caught(faults.Action.RESTART_REDIS) == ["reserving", "releasing", "settling"]


def test_which_worker_runs_what_is_what_the_product_routes(settings):
    """recovery.py's map of sends to workers matches CELERY_TASK_ROUTES and the layout."""
    queue_of_role = {worker.queue: worker.role for worker in QUEUE_WORKERS}
    routes = {
        task: queue_of_role[route["queue"]] for task, route in settings.CELERY_TASK_ROUTES.items()
    }

    assert routes["tasks.sends.send_inventory"] == recovery.HEADER_SEND_WORKER["inventory"]
    assert routes["tasks.sends.send_payment"] == recovery.HEADER_SEND_WORKER["payment"]
    assert routes["tasks.compensations.compensate"] == recovery.DEFAULT_WORKER
    assert routes["tasks.settle.settle_order"] == recovery.DEFAULT_WORKER


# --- recovery ------------------------------------------------------------------------------


def at(seconds):
    return T0 + datetime.timedelta(seconds=seconds)


def fault_record(action, *, started=0.0, back=0.0, caught=(), target=""):
    return faults.FaultRecord(
        action=str(action),
        target=target,
        at=started,
        back_at=back,
        started_wall=at(started).timestamp(),
        back_wall=at(back).timestamp(),
        detail="",
        caught=frozenset(caught),
    )


def test_an_outage_counts_from_the_partners_return_and_catches_orders_made_meanwhile():
    outage = fault_record(
        faults.Action.OUTAGE, started=0, back=10, caught=["before"], target="inventory"
    )
    times = {
        "before": recovery.OrderTimes(at(-1), at(12)),
        "during": recovery.OrderTimes(at(5), at(17)),
        "after": recovery.OrderTimes(at(11), at(40)),
    }

    [result] = recovery.recoveries([outage], times)

    assert (result.caught, result.last_order, result.seconds) == (2, "during", 7.0)


def test_a_kill_counts_from_the_kill_and_an_unsettled_order_never_recovers():
    kill = fault_record(
        faults.Action.KILL_WORKER, started=0, back=2, caught=["slow", "stuck"], target="default"
    )
    settled = {
        "slow": recovery.OrderTimes(at(-1), at(31)),
        "stuck": recovery.OrderTimes(at(-1), None),
    }
    only_slow = {"slow": settled["slow"]}

    [stuck] = recovery.recoveries([kill], settled)
    [slow] = recovery.recoveries(
        [fault_record(faults.Action.KILL_WORKER, caught=["slow"])], only_slow
    )

    assert (stuck.seconds, stuck.unsettled) == (None, 1)
    assert slow.seconds == 31.0
    assert not slow.within(30)


# --- the verdict and the report --------------------------------------------------------------


def chaos_order(number, *, answers=(202,), reads=(200,), placed=True):
    return traffic.ChaosOrder(
        number=number,
        kind=Kind.NORMAL,
        payload={},
        idempotency_key=f"key-{number}",
        request_id=f"request-{number}",
        order_id=f"order-{number}" if placed else None,
        answers=list(answers),
        reads=list(reads),
    )


def order_record(number, *, settle_seconds=1.0):
    return verdict.OrderRecord(
        order_id=f"order-{number}",
        kind=str(Kind.NORMAL),
        status="completed",
        reason="",
        created_at=at(0),
        settled_at=at(settle_seconds),
        redrives=0,
        ledger={"reserved": 1, "charged": 1},
    )


def run_facts(*, orders=None, stray=(), recoveries=()):
    orders = orders if orders is not None else [chaos_order(1), chaos_order(2)]
    return verdict.RunFacts(
        orders=orders,
        records=[order_record(o.number) for o in orders if o.placed],
        stray_ledger_orders=list(stray),
        unreturned_orders=[],
        answers=Counter(answer for order in orders for answer in order.all_answers()),
        redrives=Counter(),
        orders_redriven=0,
        breaker_openings=Counter({"inventory": 1, "payment": 1}),
        deferrals=Counter(),
        http_calls=4,
        faults=[r.fault for r in recoveries],
        recoveries=list(recoveries),
        settled_within=5.0,
        run_seconds=6.0,
        exits=[],
    )


EXPECTED = verdict.Expectations(
    kills=0,
    worker_roles=("inventory", "payment", "default"),
    redis_restarts=0,
    postgres_crashes=0,
    outage_partners=(),
    settle_bound=60,
    recovery_bound=30,
)


def check(facts, text_start):
    [found] = [c for c in verdict.judge(facts, EXPECTED).checks if c.text.startswith(text_start)]
    return found


def test_a_clean_run_passes():
    assert verdict.judge(run_facts(), EXPECTED).passed


def test_a_single_500_fails_the_run_even_when_a_retry_succeeded():
    facts = run_facts(orders=[chaos_order(1, answers=(500, 202)), chaos_order(2, reads=(503, 200))])

    assert not check(facts, "no 500 answer").passed
    assert "1 among 6 answers" in check(facts, "no 500 answer").text
    assert check(facts, "every other answer").passed  # 503 on the way is what clients expect


def test_an_answer_no_retrying_client_expects_fails_the_run():
    facts = run_facts(orders=[chaos_order(1, answers=(502, 202))])

    assert not check(facts, "every other answer").passed


def test_a_partner_effect_for_an_order_never_returned_fails_the_run():
    facts = run_facts(stray=["0b9c-never-returned"])

    assert not check(facts, "no partner effect").passed


def test_a_fault_whose_orders_settle_after_the_bound_fails_the_run():
    slow = recovery.Recovery(fault_record(faults.Action.RESTART_REDIS), 3, 0, 30.5, "order-1")

    found = check(run_facts(recoveries=[slow]), "the orders each fault caught")

    assert not found.passed
    assert "settled 30.5 s after" in found.problems[0]


def test_the_report_gives_statuses_settle_times_faults_recovery_and_500s(tmp_path):
    kill = fault_record(faults.Action.KILL_WORKER, started=3, back=4, caught=["order-1"],
                        target="payment")  # fmt: skip
    facts = run_facts(
        orders=[chaos_order(1, answers=(503, 202)), chaos_order(2)],
        recoveries=[recovery.Recovery(kill, 1, 0, 4.2, "order-1")],
    )
    setup = RunSetup(
        command="manage.py chaos", broker="redis", redis="own", database="own PostgreSQL",
        layout="gunicorn; workers", levers="sweep every 5 s", orders=2,
        web_url="http://127.0.0.1:1", rate=1.0, concurrency=1, seed=1, faults=Faults(),
        log_dir=tmp_path,
    )  # fmt: skip

    text = report.render(setup, facts, verdict.judge(facts, EXPECTED))

    assert re.search(r"^  completed +2 ", text, re.MULTILINE)
    assert "p50 1.00 s   p99 1.00 s" in text
    assert "kill worker payment" in text
    assert "4.2 s  order-1" in text
    assert "POST 202 x2, 503 x1; GET 200 x2" in text
    assert "500 answers: 0" in text


# --- the client ---------------------------------------------------------------------------


class ScriptedApi(http.server.BaseHTTPRequestHandler):
    """POST /api/orders answers 503, 429 (each with Retry-After: 0), then 202; GET 200."""

    script = [(503, {}), (429, {}), (202, {"id": "order-1", "status": "pending"})]
    posts: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.posts.append((self.headers["Idempotency-Key"], body))
        status, payload = self.script[len(self.posts) - 1]
        self.answer(status, payload)

    def do_GET(self):
        self.answer(200, {"id": "order-1", "status": "completed"})

    def answer(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted_api():
    ScriptedApi.posts = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ScriptedApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_the_client_retries_503_and_429_with_the_same_key_and_bytes(scripted_api):
    order = chaos_order(1, answers=(), reads=(), placed=False)
    order.payload = {"items": [{"sku": "SKU-1", "quantity": 1}], "amount": 100}

    traffic.Client(scripted_api, "token").place(order)

    assert order.answers == [503, 429, 202]
    assert order.reads == [200]
    assert (order.order_id, order.status) == ("order-1", "completed")
    assert len({post for post in ScriptedApi.posts}) == 1  # one key, one body, three times


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [("7", 7, 7), ("120", 30, 30), (None, 0.25, 0.5), ("Wed, 21 Oct 2015", 0.25, 0.5)],
)
def test_the_client_waits_what_retry_after_says_else_a_jittered_backoff(retry_after, low, high):
    pause = traffic.pause_before_next_try(retry_after, 1, random.Random(3))

    assert low <= pause <= high
