"""``manage.py bench``: the arithmetic it judges with, and a smoke run end to end.

No timing is asserted: the machine decides those. The smoke run is a subprocess with an
environment of its own (none of the test suite's settings): its own Redis, its own
PostgreSQL server when PostgreSQL's binaries are here (else a database of its own beside
the session's), the README's layout, the bare chord's workers.
"""

import json
import re
import subprocess
import sys

import pytest
from django.db import connection

from devstack import clean_environment
from devstack.bench import layout
from devstack.bench.measure import Peaks, cpu_used, merge
from devstack.bench.results import (
    BARE,
    DUALSEND,
    HALF_RATE,
    ONE_AT_A_TIME,
    SEQUENTIAL,
    Column,
    PhaseResult,
    Sample,
    burst_phase,
    judge,
    per_order_ms,
    percentile,
    ratio,
)
from devstack.chaos.postgres import binary_dir
from tests.processes import ROOT, database_url

TIMEOUT_SECONDS = 240
HAS_POSTGRES = binary_dir() is not None
GIB = 1024**3

# --- the arithmetic ---------------------------------------------------------------------


def test_ratio_and_percentile():
    assert ratio(60.0, 50.0) == pytest.approx(1.2)
    assert ratio(None, 50.0) is None
    assert ratio(10.0, None) is None
    assert ratio(10.0, 0) is None
    assert percentile([], 50) is None
    assert percentile([3, 1, 2, 4], 50) == 2
    assert percentile(list(range(1, 101)), 99) == 99


def test_cpu_used_counts_the_difference_by_kind_and_new_processes_from_zero():
    before = {("web", 1, 10.0): 1.0, ("workers", 2, 10.0): 5.0}
    after = {
        ("web", 1, 10.0): 1.5,
        ("workers", 2, 10.0): 7.0,
        ("workers", 3, 20.0): 0.25,  # born during the phase
        ("redis", 4, 10.0): 0.1,
    }

    assert cpu_used(before, after) == pytest.approx({"web": 0.5, "workers": 2.25, "redis": 0.1})


def test_a_reused_pid_is_another_process():
    before = {("web", 1, 10.0): 9.0}
    after = {("web", 1, 30.0): 0.5}  # pid 1 again, started later

    assert cpu_used(before, after) == pytest.approx({"web": 0.5})


def test_cpu_per_order_in_milliseconds():
    assert per_order_ms({"web": 2.0, "workers": 5.0}, 1000) == pytest.approx(
        {"web": 2.0, "workers": 5.0}
    )
    assert per_order_ms({"web": 2.0}, 0) == {}


def test_peaks_merge_keeps_the_highest_of_each():
    one, two = Peaks(), Peaks()
    one.take({"web": 100, "redis": 10}, {"web": "web", "redis": "redis"})
    two.take({"web": 50, "redis": 20}, {"web": "web", "redis": "redis"})
    one.take_together("dualsend", 300)
    two.take_together("dualsend", 400)
    two.take_connections(7)

    merged = merge([one, two])

    assert merged.rss == {"web": 100, "redis": 20}
    assert merged.together == {"dualsend": 400}
    assert merged.connections == 7


def samples(latencies_ms, *, start=1000.0, ok=True):
    return [Sample(ok, start, start + ms / 1000) for ms in latencies_ms]


def burst(system, level, seconds, cpu, *, completed=None):
    """`level` orders handed over at t=0, done evenly until `seconds`."""
    completed = level if completed is None else completed
    done = [Sample(n < completed, 0.0, seconds * (n + 1) / level) for n in range(level)]
    return PhaseResult(system, burst_phase(level), done, cpu_seconds=cpu)


def column(system, *, rate_seconds, p50s, half_p99, memory=None, connections=None, cpu=None):
    col = Column(system)
    col.add(burst(system, 1000, rate_seconds, cpu or {}))
    col.add(PhaseResult(system, ONE_AT_A_TIME, samples(p50s)))
    half = PhaseResult(system, HALF_RATE, samples([half_p99] * 10), offered_rate=20.0)
    peaks = Peaks()
    if memory is not None:
        peaks.take_together(system, memory)
    if connections is not None:
        peaks.take_connections(connections)
    half.peaks = peaks
    col.add(half)
    return col


def columns(*, ours_seconds=20.0, ours_p50=530.0, ours_p99=560.0, memory=GIB // 2, conns=30):
    ours = column(DUALSEND, rate_seconds=ours_seconds, p50s=[ours_p50] * 5,
                  half_p99=ours_p99, memory=memory, connections=conns)  # fmt: skip
    ours.records = {"orders": 1000, "orders_completed": 1000, "sends_succeeded": 2000,
                    "attempts": 2000}  # fmt: skip
    return {
        SEQUENTIAL: column(SEQUENTIAL, rate_seconds=30.0, p50s=[810] * 5, half_p99=820),
        BARE: column(BARE, rate_seconds=20.0, p50s=[510] * 5, half_p99=530, memory=GIB // 4),
        DUALSEND: ours,
    }


def verdicts(cols, pools_total=64):
    return {t.name: t.ok for t in judge(cols, slower_ms=500, level=1000, pools_total=pools_total)}


def test_a_burst_rate_is_the_orders_done_over_first_handed_to_last_done():
    phase = burst(DUALSEND, 1000, 20.0, {"web": 3.0})

    assert phase.rate == pytest.approx(50.0)
    assert phase.cpu_ms_per_order == pytest.approx({"web": 3.0})
    assert phase.all_completed


def test_every_target_met():
    cols = columns(ours_seconds=19.0, ours_p50=505.0)

    assert set(verdicts(cols).values()) == {True}


def test_each_target_missed_on_its_own():
    slower = verdicts(columns(ours_seconds=25.0, ours_p50=505.0))
    assert slower["throughput vs the bare chord"] is False

    more_overhead = verdicts(columns(ours_seconds=19.0, ours_p50=540.0))
    assert more_overhead["one-at-a-time p50 overhead"] is False

    slow_tail = verdicts(columns(ours_seconds=19.0, ours_p50=505.0, ours_p99=601.0))
    assert slow_tail["p99 at half the sustained rate"] is False

    heavy = verdicts(columns(ours_seconds=19.0, ours_p50=505.0, memory=GIB + 1))
    assert heavy["peak memory, all dualsend processes"] is False

    leaky = verdicts(columns(ours_seconds=19.0, ours_p50=505.0, conns=65))
    assert leaky["peak database connections"] is False


def test_throughput_is_missed_when_an_order_or_a_record_is_missing():
    cols = columns(ours_seconds=19.0, ours_p50=505.0)
    cols[DUALSEND].add(burst(DUALSEND, 1000, 10.0, {}, completed=999))
    assert verdicts(cols)["throughput vs the bare chord"] is False

    cols = columns(ours_seconds=19.0, ours_p50=505.0)
    cols[DUALSEND].records["attempts"] = 1999
    assert verdicts(cols)["throughput vs the bare chord"] is False


def test_connections_are_not_judged_without_postgresql():
    assert verdicts(columns(), pools_total=None)["peak database connections"] is None


def test_cpu_per_order_by_shown_kind():
    col = Column(BARE)
    col.add(burst(BARE, 1000, 20.0, {"bare": 4.0, "redis": 1.0, "partners": 9.0}))

    assert col.cpu_ms_per_order(1000, "workers") == pytest.approx(4.0)
    assert col.cpu_ms_per_order(1000, "Redis") == pytest.approx(1.0)
    assert col.cpu_ms_per_order(1000, "web") is None
    assert col.cpu_total_per_order(1000) == pytest.approx(5.0)


# --- the layout ---------------------------------------------------------------------------


def test_dualsends_workers_are_started_as_the_readme_runs_them():
    readme = " ".join((ROOT / "README.md").read_text().split())
    for worker in layout.DUALSEND_WORKERS:
        assert layout.readme_line(worker) in readme
        command = layout.dualsend_worker_command("python", worker)
        assert "--pool" not in command and "--concurrency" not in command


def test_the_bare_chord_runs_dualsends_pool_and_concurrency_explicitly(settings):
    settings.CELERY_WORKER_POOL = "threads"
    settings.CELERY_WORKER_CONCURRENCY = 12
    size = layout.effective_size(layout.WorkerSize())
    command = layout.bare_worker_command("python", layout.BARE_WORKERS[0], size)

    assert command[-4:] == ["--pool", "threads", "--concurrency", "12"]
    assert len(layout.BARE_WORKERS) == len(layout.DUALSEND_WORKERS)
    overridden = layout.effective_size(layout.WorkerSize(concurrency=8))
    assert (overridden.pool, overridden.concurrency) == ("threads", 8)


# --- end to end ---------------------------------------------------------------------------


@pytest.fixture
def database_options(django_db_setup, tmp_path):
    """A PostgreSQL server of the bench's own when the binaries are here; else a database
    of its own beside the session's."""
    if HAS_POSTGRES:
        return ()
    if connection.vendor == "sqlite":
        return ("--database-url", f"sqlite:///{tmp_path / 'bench.sqlite3'}")
    return ("--database-url", f"{database_url()}_bench")


@pytest.mark.integration
@pytest.mark.timeout(TIMEOUT_SECONDS + 30)
def test_bench_runs_end_to_end_and_prints_its_figures(tmp_path, database_options):
    """With tiny numbers, bench starts the stack, runs the three systems, prints them side
    by side with the targets, writes the run as JSON, stops everything, and exits 0."""
    report = tmp_path / "bench.json"
    command = [
        sys.executable, "manage.py", "bench",
        "--orders", "5",
        "--levels", "10,20",
        "--paced-orders", "10",
        "--warmup", "2",
        "--concurrency", "4",
        "--worker-concurrency", "4",
        "--inventory-ms", "20",
        "--payment-ms", "40",
        "--timeout", "180",
        "--log-dir", str(tmp_path / "logs"),
        "--json", str(report),
        *database_options,
    ]  # fmt: skip
    env = clean_environment() | {"DJANGO_DEBUG": "1"}

    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=TIMEOUT_SECONDS, check=False,
    )  # fmt: skip

    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for figure in (
        "sequential",
        "bare chord",
        "dualsend",
        "orders/s settled, burst of 20",
        "one at a time p99 (ms)",
        "p99 at half the sustained rate (ms)",
        "CPU ms/order, workers, burst 10",
        "peak memory, all processes together (MiB)",
        "The targets",
        "throughput vs the bare chord",
        "stopped every process the bench started",
    ):
        assert figure in output, f"{figure!r} missing from:\n{output}"
    assert re.search(r"\b(ok|MISSED|not judged)\b", output)
    document = json.loads(report.read_text())
    assert set(document["systems"]) == {SEQUENTIAL, BARE, DUALSEND}
    assert document["all_completed"] is True
    assert len(document["targets"]) == 5
    ours = document["systems"][DUALSEND]
    assert ours["phases"]["burst 20"]["completed"] == 20
    assert ours["records"]["orders_completed"] == ours["records"]["orders"]
