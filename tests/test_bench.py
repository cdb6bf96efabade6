"""``manage.py bench``: the arithmetic it judges with, and a smoke run end to end.

No timing is asserted: the machine decides those. The smoke run is a subprocess with an
environment of its own (none of the test suite's settings): its own Redis, its own
PostgreSQL server when PostgreSQL's binaries are here (else a database of its own beside
the session's), the README's layout, the bare chord's workers.
"""

import contextlib
import io
import json
import re
import subprocess
import sys
import time

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from rich.console import Console

from devstack import clean_environment
from devstack.bench import layout, load, table, traffic
from devstack.bench.measure import Peaks, cpu_used, merge
from devstack.bench.results import (
    BARE,
    BATCH_INTAKE,
    DUALSEND,
    HALF_RATE,
    ONE_AT_A_TIME,
    SEQUENTIAL,
    SINGLE_INTAKE,
    Column,
    PhaseResult,
    Sample,
    batch_burst_phase,
    burst_phase,
    judge,
    judged_intake,
    per_order_ms,
    percentile,
    ratio,
)
from devstack.bench.run import BenchRun, Plan
from devstack.bench.systems import Dualsend
from devstack.chaos.postgres import binary_dir
from dualsend_app.models import Order, Send
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


def burst(system, level, seconds, cpu, *, completed=None, batch=False):
    """`level` orders handed over at t=0, done evenly until `seconds` (`batch`: dualsend's
    burst with batch intake)."""
    completed = level if completed is None else completed
    done = [Sample(n < completed, 0.0, seconds * (n + 1) / level) for n in range(level)]
    phase = batch_burst_phase(level) if batch else burst_phase(level)
    return PhaseResult(system, phase, done, cpu_seconds=cpu)


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


def throughput(cols):
    (target,) = [t for t in judge(cols, slower_ms=500, level=1000, pools_total=64)
                 if t.name == "throughput vs the bare chord"]  # fmt: skip
    return target


def with_batch(cols, seconds, *, completed=None, cpu=None):
    """dualsend's burst of 1000 with batch intake added to `cols`."""
    cols[DUALSEND].add(burst(DUALSEND, 1000, seconds, cpu or {}, completed=completed, batch=True))
    return cols


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


def test_a_fixed_paced_rate_shows_the_tail_but_does_not_judge_it():
    """--paced-rate chose the load, not half the sustained rate: the target cannot say."""
    cols = columns(ours_seconds=19.0, ours_p50=505.0, ours_p99=601.0)
    targets = judge(cols, slower_ms=500, level=1000, pools_total=64, fixed_rate=20.0)
    (tail,) = [t for t in targets if t.name == "p99 at half the sustained rate"]

    assert tail.ok is None
    assert tail.verdict == "not judged"
    assert "+101 ms" in tail.measured and "--paced-rate" in tail.measured


class _PacedSystem:
    key = DUALSEND

    def round_trip(self, number, phase, deadline):
        return Sample(True, 1000.0, 1000.5)


class _NoProcesses:
    def current(self):
        return []


class _NoSampler:
    @contextlib.contextmanager
    def phase(self):
        yield Peaks()


def steady_rate(monkeypatch, *, paced_rate, sustained_seconds):
    """The rate BenchRun asks of `load.paced` for dualsend's steady phase, after a burst
    of 1000 done in `sustained_seconds` (None: no burst ran)."""
    asked = []

    def paced(system, count, *, rate, threads, phase, deadline):
        asked.append(rate)
        return load.Paced([system.round_trip(0, phase, deadline)], 0.0)

    monkeypatch.setattr(load, "paced", paced)
    plan = Plan(orders=1, warmup=0, levels=(1000,), paced_orders=1, paced_threads=1,
                deadline=time.monotonic() + 60, paced_rate=paced_rate, pause_seconds=0)  # fmt: skip
    bench = BenchRun(plan, [_PacedSystem()], _NoProcesses(), _NoSampler(), lambda line: None)
    if sustained_seconds is not None:
        bench.columns[DUALSEND].add(burst(DUALSEND, 1000, sustained_seconds, {}))
    bench._half_rate(_PacedSystem())
    return asked, bench.skipped


def test_the_steady_load_is_half_the_sustained_rate_unless_paced_rate_fixes_it(monkeypatch):
    assert steady_rate(monkeypatch, paced_rate=None, sustained_seconds=25.0) == ([20.0], [])
    assert steady_rate(monkeypatch, paced_rate=14.0, sustained_seconds=25.0) == ([14.0], [])
    # A fixed rate needs no burst to halve.
    assert steady_rate(monkeypatch, paced_rate=14.0, sustained_seconds=None) == ([14.0], [])
    asked, skipped = steady_rate(monkeypatch, paced_rate=None, sustained_seconds=None)
    assert asked == [] and skipped == [f"{DUALSEND} {HALF_RATE}: no sustained rate"]


@pytest.mark.parametrize("rate", ["0", "-3"])
def test_paced_rate_must_be_above_zero(rate):
    with pytest.raises(CommandError, match="--paced-rate must be above 0"):
        call_command("bench", "--paced-rate", rate)


def test_throughput_is_missed_when_an_order_or_a_record_is_missing():
    cols = columns(ours_seconds=19.0, ours_p50=505.0)
    cols[DUALSEND].add(burst(DUALSEND, 1000, 10.0, {}, completed=999))
    assert verdicts(cols)["throughput vs the bare chord"] is False

    cols = columns(ours_seconds=19.0, ours_p50=505.0)
    cols[DUALSEND].records["attempts"] = 1999
    assert verdicts(cols)["throughput vs the bare chord"] is False


def test_connections_are_not_judged_without_postgresql():
    assert verdicts(columns(), pools_total=None)["peak database connections"] is None


def test_the_batch_burst_is_a_phase_of_its_own_beside_the_single_post_burst():
    cols = with_batch(columns(ours_seconds=25.0), 16.0, cpu={"web": 1.0, "workers": 4.0})
    ours, bare = cols[DUALSEND], cols[BARE]

    assert batch_burst_phase(1000) == "burst 1000 batch"
    assert ours.rate(1000) == pytest.approx(40.0)
    assert ours.rate(1000, batch=True) == pytest.approx(62.5)
    assert bare.rate(1000, batch=True) is None
    assert ours.cpu_ms_per_order(1000, "web", batch=True) == pytest.approx(1.0)
    assert ours.cpu_total_per_order(1000, batch=True) == pytest.approx(5.0)
    assert ours.cpu_total_per_order(1000) is None  # the single-POST burst spent none here
    document = ours.to_json()["phases"]
    assert document["burst 1000 batch"]["orders_per_second"] == pytest.approx(62.5)
    assert document["burst 1000"]["orders_per_second"] == pytest.approx(40.0)


def test_throughput_shows_both_intakes_and_is_judged_on_the_better():
    # Single POSTs 0.80x the bare chord's 50/s, batch intake 1.25x: met, with batch intake.
    target = throughput(with_batch(columns(ours_seconds=25.0, ours_p50=505.0), 16.0))
    assert target.ok is True
    assert "0.80x single POSTs, 1.25x batch intake (40.0, 62.5 vs 50.0 orders/s;" in (
        target.measured
    )
    assert f"judged on {BATCH_INTAKE}: 1000/1000 completed" in target.measured

    # The other way round: judged on single POSTs.
    target = throughput(with_batch(columns(ours_seconds=19.0, ours_p50=505.0), 25.0))
    assert target.ok is True
    assert "1.05x single POSTs, 0.80x batch intake" in target.measured
    assert f"judged on {SINGLE_INTAKE}" in target.measured

    # Neither reaches 1.0x: missed, on the better of the two.
    target = throughput(with_batch(columns(ours_seconds=25.0), 22.0))
    assert target.ok is False
    assert f"judged on {BATCH_INTAKE}" in target.measured

    # No batch burst (its phase left out): judged on single POSTs alone.
    target = throughput(columns(ours_seconds=19.0))
    assert target.ok is True
    assert "1.05x single POSTs, - batch intake (52.6, - vs 50.0 orders/s; judged on single" in (
        target.measured
    )


def test_an_order_the_batch_refused_is_not_done():
    refused = Sample(False, 0.0, None, "batch answered 422 for it: invalid_fields: …")
    phase = burst(DUALSEND, 1000, 16.0, {}, batch=True)
    phase.samples[-1] = refused

    assert (phase.completed, phase.orders, phase.all_completed) == (999, 1000, False)

    # A faster batch burst that lost an order is not the better intake...
    cols = columns(ours_seconds=25.0)
    cols[DUALSEND].add(phase)
    judged = judged_intake(cols[BARE], cols[DUALSEND], 1000)
    assert judged.name == SINGLE_INTAKE
    assert throughput(cols).ok is False
    # ...nor when the single POSTs met the target: judged on them, met.
    cols = columns(ours_seconds=19.0)
    cols[DUALSEND].add(phase)
    assert judged_intake(cols[BARE], cols[DUALSEND], 1000).name == SINGLE_INTAKE
    assert throughput(cols).ok is True


def render(cols, levels=(1000,)):
    console = Console(file=io.StringIO(), width=250, record=True)
    console.print(table.side_by_side(cols, levels=levels, slower_ms=500, pools_total=64,
                                     caption=""))  # fmt: skip
    return {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in console.export_text().splitlines() if line.count("│") > 2}  # fmt: skip


def test_the_table_shows_the_batch_burst_against_the_bare_chords_burst():
    cols = with_batch(columns(ours_seconds=25.0), 16.0, cpu={"workers": 3.0, "redis": 0.5},
                      completed=999)  # fmt: skip
    cols[BARE].phases[burst_phase(1000)].cpu_seconds = {"bare": 2.0, "redis": 0.5}

    rows = render(cols)

    # sequential, bare chord, dualsend, dualsend ÷ bare
    assert rows["orders/s settled, burst of 1,000"] == ["33.3", "50.0", "40.0", "0.80x"]
    assert rows["orders/s settled, burst of 1,000, batch intake"] == ["-", "-", "62.4", "1.25x"]
    assert rows["orders done, burst of 1,000, batch intake"] == ["-", "-", "999/1,000", ""]
    assert rows["CPU ms/order, workers, burst 1,000, batch intake"] == ["-", "-", "3.0", "1.50x"]
    assert rows["CPU ms/order, all, burst 1,000, batch intake"] == ["-", "-", "3.5", "1.40x"]


def test_a_batch_burst_hands_over_batches_of_100_and_waits_each_accepted_order():
    class FakeClient:
        def __init__(self):
            self.batches = []

        def place_batch(self, orders, request_id):
            self.batches.append([order.idempotency_key for order in orders])
            for order in orders:
                if order.number == 7:
                    order.error = "batch answered 422 for it: invalid_fields: amount"
                else:
                    order.order_id, order.status = f"id-{order.number}", "pending"

        def wait_until_settled(self, order, deadline):
            assert order.order_id, "a refused order is not waited for"
            order.body = completed_body(f"2030-01-01T00:00:{order.number % 60:02d}+00:00")

    ours = Dualsend("http://web.invalid", "token", "run", threads=4)
    ours.client = FakeClient()

    found = ours.batch_burst(250, batch_burst_phase(250), deadline=float("inf"))

    assert [len(batch) for batch in sorted(ours.client.batches, key=len)] == [50, 100, 100]
    assert len(ours.placed[batch_burst_phase(250)]) == 250
    assert len(ours.order_ids()) == 249
    assert sum(sample.ok for sample in found) == 249
    assert not found[7].ok and found[7].finished is None
    assert "422" in found[7].detail
    assert found[8].finished == pytest.approx(1893456008.0)


def completed_body(settled_at):
    """The GET's body of an order completed with every record."""
    send = {"status": Send.Status.SUCCEEDED, "attempts": 1, "remote_id": "r",
            "first_attempt_at": settled_at, "finished_at": settled_at}  # fmt: skip
    return {
        "status": Order.Status.COMPLETED,
        "settled_at": settled_at,
        "sends": [send | {"operation": op} for op in Send.HEADER_OPERATIONS],
    }


def test_the_batch_answer_is_read_order_by_order():
    class FakeResponse:
        status_code = 207
        headers = {}

        def json(self):
            return {"results": [
                {"index": 0, "status": 202, "order": {"id": "a", "status": "pending"}},
                {"index": 1, "status": 422, "error": {"code": "invalid_fields",
                 "message": "some fields are invalid", "fields": {"amount": "must be …"}}},
                {"index": 2, "status": 200, "order": {"id": "c", "status": "completed"}},
            ]}  # fmt: skip

    class FakeSession:
        def __init__(self):
            self.sent = []

        def post(self, url, json, headers, timeout):
            self.sent.append((url, json, headers))
            return FakeResponse()

    client = traffic.BenchClient("http://web.invalid", "token")
    session = client._local.session = FakeSession()
    orders = [traffic.BenchOrder(number=n, kind="normal", payload={"amount": n + 1},
                                 idempotency_key=f"key-{n}", request_id=f"req-{n}")
              for n in range(3)]  # fmt: skip

    client.place_batch(orders, request_id="req-0")

    ((url, body, headers),) = session.sent
    assert url == "http://web.invalid/api/orders/batch"
    assert headers == {"X-Request-ID": "req-0"}
    assert body == {"orders": [{"amount": n + 1, "idempotency_key": f"key-{n}"}
                               for n in range(3)]}  # fmt: skip
    assert [(o.order_id, o.status) for o in orders] == [
        ("a", "pending"), (None, None), ("c", "completed")]  # fmt: skip
    assert orders[1].error.startswith("batch answered 422 for it: invalid_fields")
    assert "amount" in orders[1].error


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
        "--pause", "0.1",
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
        "orders/s settled, burst of 20, batch intake",
        "CPU ms/order, all, burst 10, batch intake",
        "one at a time p99 (ms)",
        "p99 at half the sustained rate (ms)",
        "CPU ms/order, workers, burst 10",
        "peak memory, all processes together (MiB)",
        "The targets",
        "throughput vs the bare chord",
        "single POSTs",
        "batch intake",
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
    assert ours["phases"]["burst 10 batch"]["completed"] == 10
    assert ours["phases"]["burst 20 batch"]["completed"] == 20
    assert "burst 20 batch" not in document["systems"][BARE]["phases"]
    assert ours["records"]["orders"] == 2 + 5 + 2 * (10 + 20) + 10  # warm-up … half rate
    assert ours["records"]["orders_completed"] == ours["records"]["orders"]
