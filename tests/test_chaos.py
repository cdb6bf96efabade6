"""The chaos run, shortened, is part of the suite: `manage.py chaos` must PASS.

The command runs as a subprocess with a stack of its own (its own Redis, simulators,
worker, beat and web server on free ports, its own database and, with RabbitMQ, its own
virtual host), so the session's worker and simulators are never disturbed. One worker
SIGKILL, one Redis restart and a partner outage longer than its breaker's open time,
on 40 orders: about a minute on two cores.
"""

import os
import subprocess
import sys

import pytest
from django.db import connection

from devstack import RABBITMQ_HOST, RABBITMQ_PORT, clean_environment, rabbitmq_answers
from tests.processes import ROOT, database_url

pytestmark = [pytest.mark.integration]

SHORT_RUN = (
    "--orders", "40",
    "--kills", "1",
    "--redis-restarts", "1",
    "--outage-seconds", "5",
    "--fault-gap", "5",
    "--timeout", "150",
)  # fmt: skip
# The run's own bound is 150 s; starting and stopping the stack adds a little.
SUBPROCESS_TIMEOUT = 270
SHOWN_OUTPUT = 8000


@pytest.fixture
def chaos_database_url(django_db_setup, tmp_path):
    """A database of the run's own: on PostgreSQL, named after this session's database
    (test_<name> once the suite has set it up), so two test runs with databases of
    their own never share it; else a file."""
    if connection.vendor == "sqlite":
        return f"sqlite:///{tmp_path / 'chaos.sqlite3'}"
    return f"{database_url()}_chaos"


def run_chaos(chaos_url, *options):
    """`manage.py chaos` with none of the test session's settings in its environment."""
    env = clean_environment() | {"DJANGO_DEBUG": "1"}
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]  # so the run refuses to reuse it
    command = [
        sys.executable, "manage.py", "chaos", *SHORT_RUN,
        "--database-url", chaos_url, *options,
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )


def assert_passed(result):
    output = f"{result.stdout[-SHOWN_OUTPUT:]}\n--- stderr ---\n{result.stderr[-SHOWN_OUTPUT:]}"
    assert result.returncode == 0, output
    assert "dualsend chaos run: PASS" in result.stdout, output


@pytest.mark.timeout(SUBPROCESS_TIMEOUT + 30)
def test_short_chaos_run_passes_with_redis_as_broker(chaos_database_url):
    """Kill, Redis restart and outage on the Redis broker: nothing lost, nothing doubled."""
    assert_passed(run_chaos(chaos_database_url, "--broker", "redis", "--seed", "11"))


@pytest.mark.timeout(SUBPROCESS_TIMEOUT + 30)
@pytest.mark.skipif(
    not rabbitmq_answers(),
    reason=f"RabbitMQ does not answer on {RABBITMQ_HOST}:{RABBITMQ_PORT} "
    "(`rabbitmq-server -detached` starts it)",
)
def test_short_chaos_run_passes_with_rabbitmq_as_broker(chaos_database_url):
    """The same run with RabbitMQ as the broker, Redis keeping results and shared state."""
    assert_passed(run_chaos(chaos_database_url, "--broker", "rabbitmq", "--seed", "12"))
