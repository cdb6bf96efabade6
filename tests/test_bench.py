"""Smoke test of ``manage.py bench``: it runs end to end and prints its figures.

No timing is asserted: the machine decides those. The command runs as a subprocess with
an environment of its own: no REDIS_URL (it starts its own embedded Redis, never the
tests' database 9), its own SQLite file, and none of the test suite's settings.
"""

import subprocess
import sys

import pytest

from devstack import clean_environment
from tests.processes import ROOT

TIMEOUT_SECONDS = 240


def bench_environment(database_path):
    return clean_environment() | {"DJANGO_DEBUG": "1", "DATABASE_URL": f"sqlite:///{database_path}"}


@pytest.mark.integration
@pytest.mark.timeout(TIMEOUT_SECONDS + 30)
def test_bench_runs_end_to_end_and_prints_its_figures(tmp_path):
    """With tiny numbers, bench starts the stack, places every order, prints the latency
    and throughput figures and the verdict, stops everything, and exits 0."""
    command = [
        sys.executable, "manage.py", "bench",
        "--orders", "10",
        "--warmup", "2",
        "--concurrency", "4",
        "--worker-concurrency", "8",
        "--inventory-ms", "20",
        "--payment-ms", "40",
        "--timeout", "180",
        "--log-dir", str(tmp_path / "logs"),
    ]  # fmt: skip

    done = subprocess.run(
        command,
        cwd=ROOT,
        env=bench_environment(tmp_path / "bench.sqlite3"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )

    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for figure in (
        "end-to-end (client)",
        "server-side",
        "the slower call",
        "the sum of both calls",
        "orders settled a second",
        "completed 10",
        "vs slower call 40 ms and sum 60 ms",
        "stopped every process the bench started",
    ):
        assert figure in output, f"{figure!r} missing from:\n{output}"
