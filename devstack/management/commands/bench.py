"""``manage.py bench``: dualsend held against a bare Celery chord and the sequential calls.

It starts the README's production layout (gunicorn gthread, one Celery worker per queue
run exactly as the README says, beat) on a Redis and a PostgreSQL server of its own
(`initdb`; or `--database-url`), fault-free partner simulators of constant latency
(300 and 500 ms by default) and, beside dualsend on the same Redis, a bare Celery chord
with as many worker processes, the same pool and the same concurrency. Then, in one run,
for each of the three (devstack/bench/run.py):

1. one order at a time: p50/p95/p99 and the overhead above the slower call;
2. bursts (`--levels`, 500 and 1,000 orders): orders settled a second, and the CPU each
   kind of process (web, workers, Redis, PostgreSQL) spent per order, at each level;
   dualsend's twice, one `POST /api/orders` per order, then with batch intake
   (`POST /api/orders/batch`, 100 orders a request);
3. a steady load at half the rate it sustained (dualsend: with single POSTs): p99.

Throughout, the peak memory of every process and the peak connections to the database.
It prints the three side by side with dualsend ÷ bare chord, the targets of issue 8 each
with its value and ok or MISSED, and writes everything to `--json FILE`. It stops every
process it started, also on Ctrl-C or an error. Exit code: 0 when every order of every
system completed, whatever the targets say; 1 otherwise; 130 when interrupted.
"""

import datetime
import json
import os
import time
import uuid
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from rich.console import Console

from devstack.bench import figures, layout, table
from devstack.bench.measure import Connections, Peaks, Processes, Sampler, merge
from devstack.bench.results import BARE, DUALSEND, ONE_AT_A_TIME, SEQUENTIAL, Column, judge, ratio
from devstack.bench.run import BenchRun, Plan, count_records
from devstack.bench.stack import OUR_RATE_LIMIT, BenchStack
from devstack.bench.systems import BareChord, Dualsend, Sequential
from devstack.chaos import database
from devstack.chaos.postgres import PostgresError, PrivatePostgres
from devstack.stack.console import stopped_line
from devstack.stack.processes import StartupError, signals_ignored, sigterm_as_ctrl_c

EXIT_INTERRUPTED = 130
LOG_WIDTH = 140
PRIVATE_DATABASE = "dualsend_bench"
# gunicorn threads beyond the client threads: each client thread holds one in GET ?wait.
SPARE_WEB_THREADS = 4
MIN_WEB_THREADS = 16
WEB_WORKER_PROCESSES = 1  # the stack's gunicorn runs one worker process (the README's)


class Command(BaseCommand):
    help = (
        "Benchmark dualsend on the README's production layout against a bare Celery chord "
        "and the sequential calls: throughput in bursts (dualsend's with single POSTs and "
        "with batch intake), latency one at a time and at half the sustained rate, CPU per "
        "order, memory, database connections; the targets."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        add = parser.add_argument
        add("--orders", type=int, default=60, help="orders one at a time, per system (60)")
        add(
            "--levels",
            default="500,1000",
            help="burst sizes, comma-separated; the largest is judged (500,1000)",
        )
        add(
            "--paced-orders",
            type=int,
            default=300,
            help="orders at half the sustained rate, per system (300)",
        )
        add(
            "--paced-rate",
            type=float,
            default=None,
            help="orders/s of that steady load, the same for every system, to compare two "
            "runs at one load (default: half the rate each system sustained; the p99 target "
            "is judged only then)",
        )
        add("--warmup", type=int, default=10, help="orders first, per system, not measured (10)")
        add(
            "--pause",
            type=float,
            default=1.0,
            help="seconds of quiet before each measured phase (1.0)",
        )
        add(
            "--concurrency",
            type=int,
            default=32,
            help="client threads handing over a burst and holding the half-rate load (32)",
        )
        add(
            "--worker-pool",
            default=None,
            help="dualsend's and the bare chord's worker pool (default: dualsend's settings)",
        )
        add(
            "--worker-concurrency",
            type=int,
            default=None,
            help="threads per worker process (default: dualsend's settings)",
        )
        add("--inventory-ms", type=float, default=300, help="inventory's latency (300)")
        add("--payment-ms", type=float, default=500, help="payment's latency (500)")
        add(
            "--database-url",
            default=None,
            help="a PostgreSQL (or SQLite) database the bench may drop and recreate, instead "
            "of a PostgreSQL server of its own",
        )
        add("--timeout", type=float, default=900, help="seconds for the whole run (900)")
        add(
            "--log-dir",
            default=str(settings.BASE_DIR / "var" / "bench"),
            help="the children's logs (var/bench)",
        )
        add("--json", default=None, metavar="FILE", help="write the whole run to FILE")

    def handle(self, *args: Any, **options: Any) -> None:
        levels = _check_options(options)
        started_at = datetime.datetime.now(datetime.UTC)
        deadline = time.monotonic() + options["timeout"]
        self.console = Console(highlight=False)
        if not self.console.is_terminal:  # a log or a pipe: room for the table's columns
            self.console.width = max(self.console.width, LOG_WIDTH)
        # Celery prefers this variable to the broker an app is given: the readiness pings
        # and the bare chord's client must reach the bench's own Redis.
        os.environ.pop("CELERY_BROKER_URL", None)
        override = layout.WorkerSize(options["worker_pool"], options["worker_concurrency"])
        stack = BenchStack(
            base_dir=settings.BASE_DIR,
            log_dir=Path(options["log_dir"]).resolve(),
            inventory_ms=options["inventory_ms"],
            payment_ms=options["payment_ms"],
            worker_override=override,
            bare_size=layout.effective_size(override),
            web_threads=max(MIN_WEB_THREADS, options["concurrency"] + SPARE_WEB_THREADS),
        )
        stack.log_dir.mkdir(parents=True, exist_ok=True)
        sigterm_as_ctrl_c()
        sampler = bare = None
        try:
            url = self._prepare_database(stack, options["database_url"])
            self._start(stack)
            run_id = f"bench-{uuid.uuid4().hex[:8]}"
            ours = Dualsend(stack.web_url, stack.api_token, run_id, options["concurrency"])
            bare = BareChord(stack.redis_url, run_id, options["concurrency"])
            sequential = Sequential(stack.partner_access, run_id, stack.bare_size.concurrency)
            postgres = database.is_postgres(url)
            backends = Connections(url) if postgres and stack.postgres is None else None
            processes = Processes(stack.children_by_kind, backends)
            sampler = Sampler(processes, Connections(url) if postgres else None)
            sampler.start()
            plan = Plan(
                orders=options["orders"],
                warmup=options["warmup"],
                pause_seconds=options["pause"],
                levels=levels,
                paced_orders=options["paced_orders"],
                paced_threads=options["concurrency"],
                deadline=deadline,
                paced_rate=options["paced_rate"],
            )
            self.console.print(_setup_line(stack, options, levels))
            load_before = os.getloadavg()
            bench = BenchRun(plan, (sequential, bare, ours), processes, sampler, self.say)
            columns = bench.execute()
            sampler.stop()
            columns[DUALSEND].records = count_records(ours)
            document = self._report(stack, options, levels, columns, bench, url, ours)
            document["machine"]["load_before"] = load_before
            document["started_at"] = started_at.isoformat()
        except KeyboardInterrupt:
            self.console.print("\n[yellow]Interrupted.[/]")
            raise SystemExit(EXIT_INTERRUPTED) from None
        except (StartupError, database.DatabaseError, PostgresError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            self._clean_up(stack, sampler, bare)
        if options["json"]:
            Path(options["json"]).write_text(json.dumps(document, indent=2, default=str))
            self.console.print(f"[green]✓[/] wrote the whole run to {options['json']}")
        if not document["all_completed"]:
            raise CommandError(
                "not every order completed (see the table and "
                f"{'--json' if options['json'] else 'the logs'}; logs in {stack.log_dir})"
            )

    def say(self, line: str) -> None:
        self.console.print(line)

    # --- the stack -------------------------------------------------------------------------

    def _prepare_database(self, stack: BenchStack, explicit: str | None) -> str:
        """The given database, or a PostgreSQL server of the bench's own; recreated and
        migrated; this process then lets go of it (its connections would be counted)."""
        if explicit:
            url = explicit
        else:
            with self.console.status("making a PostgreSQL server of the bench's own"):
                stack.postgres = PrivatePostgres.create()
                stack.start_postgres()
            url = stack.postgres.url(PRIVATE_DATABASE)
            self.say(f"[green]✓[/] postgres   {stack.postgres.version}, port {stack.postgres.port}")
        stack.database_url = url
        with self.console.status("recreating and migrating the bench's database"):
            database.recreate(url)
            database.use(url)
            _let_go_of_database()
        self.say(f"[green]✓[/] database   {database.describe(url)}")
        return url

    def _start(self, stack: BenchStack) -> None:
        steps = (
            ("redis", stack.start_redis),
            ("partners", stack.start_partners),
            ("workers", stack.start_workers),
            ("bare chord", stack.start_bare_workers),
            ("beat", stack.start_beat),
            ("web", stack.start_web),
        )
        for name, start in steps:
            began = time.monotonic()
            with self.console.status(f"starting {name}"):
                start()
            self.say(f"[green]✓[/] {name:<10} [dim](ready in {time.monotonic() - began:.1f} s)[/]")

    def _clean_up(self, stack: BenchStack, sampler: Sampler | None, bare: BareChord | None) -> None:
        """Stop every process, delete the PostgreSQL data; a second Ctrl-C cannot cut
        this short."""
        with signals_ignored(), self.console.status("stopping every process the bench started"):
            if sampler is not None:
                sampler.stop()
            if bare is not None:
                bare.close()
            database.close()
            _let_go_of_database()
            killed = stack.stop()
            if stack.postgres is not None:
                stack.postgres.remove()
        self.say(f"[green]✓[/] {stopped_line(killed, started_by='the bench')}")

    # --- the report --------------------------------------------------------------------------

    def _report(
        self,
        stack: BenchStack,
        options: dict[str, Any],
        levels: tuple[int, ...],
        columns: dict[str, Column],
        bench: BenchRun,
        url: str,
        ours: Dualsend,
    ) -> dict[str, Any]:
        slower = max(stack.inventory_ms, stack.payment_ms)
        pools_total = _pools_total(stack) if database.is_postgres(url) else None
        fixed_rate = options["paced_rate"]
        targets = judge(
            columns,
            slower_ms=slower,
            level=max(levels),
            pools_total=pools_total,
            fixed_rate=fixed_rate,
        )
        caption = _caption(stack, options)
        self.console.print()
        self.console.print(
            table.side_by_side(
                columns,
                levels=levels,
                slower_ms=slower,
                pools_total=pools_total,
                caption=caption,
                fixed_rate=fixed_rate,
            )
        )
        self.console.print(table.memory_table(_all_peaks(columns)))
        timeline = figures.Phase(ONE_AT_A_TIME, ours.placed.get(ONE_AT_A_TIME, []))
        partners = figures.Partners(stack.inventory_ms, stack.payment_ms)
        self.console.print(
            figures.breakdown_table(timeline, partners, title="dualsend, one at a time")
        )
        for skipped in bench.skipped:
            self.console.print(f"[yellow]not measured:[/] {skipped}")
        self.console.print(table.targets_table(targets))
        all_completed = all(c.all_completed for c in columns.values()) and not bench.skipped
        self.console.print(
            "[dim]Exit code 0 when every order completed, whatever the targets say.[/] "
            + ("every order completed" if all_completed else "[red]not every order completed[/]")
        )
        return {
            "command": "manage.py bench",
            "finished_at": datetime.datetime.now(datetime.UTC).isoformat(),
            "machine": {"cpus": os.cpu_count(), "load_after": os.getloadavg()},
            "options": {k: options[k] for k in _OPTION_NAMES},
            "partners": {
                "inventory_ms": stack.inventory_ms,
                "payment_ms": stack.payment_ms,
                "slower_ms": slower,
                "sum_ms": stack.inventory_ms + stack.payment_ms,
            },
            "layout": {
                "web": {"threads": stack.web_threads, "worker_processes": WEB_WORKER_PROCESSES},
                "dualsend_workers": stack.dualsend_worker_commands(),
                "bare_chord_workers": stack.bare_worker_commands(),
                "worker_size": vars(stack.bare_size),
                "database": database.describe(url),
                "pools_total": pools_total,
                "rate_limits": OUR_RATE_LIMIT,
            },
            "systems": {key: column.to_json() for key, column in columns.items()},
            "ratios": _ratios(columns, levels),
            "targets": [target.to_json() for target in targets],
            "skipped": bench.skipped,
            "all_completed": all_completed,
        }


_OPTION_NAMES = (
    "orders",
    "levels",
    "paced_orders",
    "paced_rate",
    "warmup",
    "pause",
    "concurrency",
    "worker_pool",
    "worker_concurrency",
    "inventory_ms",
    "payment_ms",
    "timeout",
    "log_dir",
    "json",
)


def _check_options(options: dict[str, Any]) -> tuple[int, ...]:
    """Refuse what cannot run; returns the burst levels, ascending."""
    for name in ("orders", "paced_orders", "concurrency"):
        if options[name] < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
    if options["paced_rate"] is not None and not options["paced_rate"] > 0:
        raise CommandError("--paced-rate must be above 0 orders/s")
    if options["pause"] < 0:
        raise CommandError("--pause must be 0 or more")
    if options["warmup"] < 0:
        raise CommandError("--warmup must be 0 or more")
    if options["worker_concurrency"] is not None and options["worker_concurrency"] < 1:
        raise CommandError("--worker-concurrency must be at least 1")
    if options["worker_pool"] is not None and options["worker_pool"] not in _POOLS:
        raise CommandError(f"--worker-pool must be one of {', '.join(_POOLS)}")
    if options["timeout"] <= 0:
        raise CommandError("--timeout must be more than 0")
    if options["inventory_ms"] < 0 or options["payment_ms"] < 0:
        raise CommandError("--inventory-ms and --payment-ms must be 0 or more")
    if max(options["inventory_ms"], options["payment_ms"]) == 0:
        raise CommandError("at least one partner latency must be more than 0")
    try:
        levels = tuple(sorted({int(part) for part in options["levels"].split(",") if part.strip()}))
    except ValueError:
        raise CommandError(
            f"--levels {options['levels']!r}: comma-separated whole numbers"
        ) from None
    if not levels or levels[0] < 1:
        raise CommandError("--levels needs at least one burst size, each at least 1")
    if options["json"] and not Path(options["json"]).resolve().parent.is_dir():
        raise CommandError(f"--json {options['json']}: its directory does not exist")
    return levels


_POOLS = ("threads", "prefork", "solo", "gevent", "eventlet")


def _let_go_of_database() -> None:
    """Close this process's connections and its pool: the children's alone are counted."""
    connections.close_all()
    close_pool = getattr(connections["default"], "close_pool", None)
    if close_pool is not None:
        close_pool()


def _pools_total(stack: BenchStack) -> int:
    """DATABASE_POOL_MAX_SIZE, as the children read it, x the processes with a pool (the
    README's count: gunicorn's workers and the Celery workers)."""
    namespace = stack.child_settings()
    pool = namespace["DATABASES"]["default"].get("OPTIONS", {}).get("pool") or {}
    return int(pool.get("max_size", 0)) * (WEB_WORKER_PROCESSES + len(layout.DUALSEND_WORKERS))


def _all_peaks(columns: dict[str, Column]) -> Peaks:
    return merge([columns[BARE].memory, columns[DUALSEND].memory])


def _ratios(columns: dict[str, Column], levels: tuple[int, ...]) -> dict[str, Any]:
    bare, ours = columns[BARE], columns[DUALSEND]
    return {
        "orders_per_second": {str(n): ratio(ours.rate(n), bare.rate(n)) for n in levels},
        "orders_per_second_batch_intake": {
            str(n): ratio(ours.rate(n, batch=True), bare.rate(n)) for n in levels
        },
        "one_at_a_time_p50": ratio(ours.latency(50), bare.latency(50)),
        "half_rate_p99": ratio(ours.half_rate_p99(), bare.half_rate_p99()),
        "cpu_ms_per_order": {
            str(n): ratio(ours.cpu_total_per_order(n), bare.cpu_total_per_order(n)) for n in levels
        },
        "cpu_ms_per_order_batch_intake": {
            str(n): ratio(ours.cpu_total_per_order(n, batch=True), bare.cpu_total_per_order(n))
            for n in levels
        },
        "peak_memory_together": ratio(ours.together_bytes(), bare.together_bytes()),
        "sequential_one_at_a_time_p50": ratio(columns[SEQUENTIAL].latency(50), bare.latency(50)),
    }


def _setup_line(stack: BenchStack, options: dict[str, Any], levels: tuple[int, ...]) -> str:
    size = stack.bare_size
    one, five, _ = os.getloadavg()
    return (
        f"\nPartners: inventory {stack.inventory_ms:g} ms, payment {stack.payment_ms:g} ms, "
        f"constant, no faults; rate limits {OUR_RATE_LIMIT}. Workers: 3 processes each, "
        f"--pool {size.pool} --concurrency {size.concurrency}. Web: {stack.web_threads} "
        f"threads. Bursts: {', '.join(f'{n:,}' for n in levels)}; {options['orders']} one at a "
        f"time; {options['paced_orders']} at {_steady_load(options)}.\n"
        f"[dim]Machine: {os.cpu_count()} CPUs, "
        f"load average {one:.2f} (1 min), {five:.2f} (5 min).[/]\n"
    )


def _steady_load(options: dict[str, Any]) -> str:
    rate = options["paced_rate"]
    return "half rate" if rate is None else f"{rate:g} orders/s (--paced-rate)"


def _caption(stack: BenchStack, options: dict[str, Any]) -> str:
    size = stack.bare_size
    return (
        f"sequential: this process calls inventory, then payment (a burst: "
        f"{size.concurrency} threads). bare chord: a chord of two tasks calling the partners "
        f"with requests and a callback, no records, 3 workers (one per queue) --pool "
        f"{size.pool} --concurrency {size.concurrency}. dualsend: POST /api/orders then GET "
        f"?wait (batch intake: POST /api/orders/batch, 100 orders a request, then GET ?wait), "
        f"on the README's layout (gunicorn gthread {stack.web_threads} threads, 3 "
        f"workers as README.md runs them, beat). orders/s: the first order handed over → the "
        f"last one done (dualsend: its settled_at). One at a time and half rate: handed over → "
        f"the client knows it is done. CPU: user + system of each kind's processes during "
        f"the burst ÷ its orders. Memory: RSS; all together: PSS summed (shared pages once). "
        f"Client threads: {options['concurrency']}."
    )
