"""``manage.py bench``: does an order take the slower of its two calls, not their sum?

It starts the demo's stack (Redis, embedded unless REDIS_URL is set; the simulators; a
worker; beat; the web server) with constant, fault-free partner latencies and a database
of its own, then measures in two phases through the real HTTP API:

1. latency: orders placed one at a time, each waited for with GET ?wait=10; the
   end-to-end and server-side percentiles next to the slower call and the sum, and where
   the server-side time goes;
2. throughput: ``--orders`` orders from ``--concurrency`` client threads; orders settled
   a second, end-to-end under load, and every final status.

It stops every process it started, also on Ctrl-C or an error, and exits 0 only when
every order (warm-up included) completed.
"""

import os
import time
import uuid
from argparse import ArgumentParser
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from kombu.utils.url import maybe_sanitize_url
from rich.console import Console

from devstack.bench import figures, traffic
from devstack.bench.stack import OUR_RATE_LIMIT, BenchStack
from devstack.stack.console import start_stack, stop_stack
from devstack.stack.processes import StartupError, sigterm_as_ctrl_c
from devstack.stack.services import QUEUES
from devstack.traffic.progress import progress_bar

EXIT_INTERRUPTED = 130
# gunicorn threads beyond the client threads: each client holds one during GET ?wait.
SPARE_WEB_THREADS = 4
MIN_WEB_THREADS = 16


class Command(BaseCommand):
    help = (
        "Benchmark the whole stack with constant, fault-free partner latencies: latency "
        "one order at a time (against the slower call and the sum), then throughput."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--orders", type=int, default=200, help="orders in each phase (200)")
        parser.add_argument(
            "--concurrency", type=int, default=16, help="client threads, throughput phase (16)"
        )
        parser.add_argument(
            "--worker-concurrency", type=int, default=32, help="worker threads (32)"
        )
        parser.add_argument(
            "--warmup", type=int, default=10, help="orders first, not measured (10)"
        )
        parser.add_argument(
            "--inventory-ms", type=float, default=100, help="inventory's latency (100)"
        )
        parser.add_argument("--payment-ms", type=float, default=200, help="payment's latency (200)")
        parser.add_argument(
            "--timeout", type=float, default=300, help="seconds for the whole run (300)"
        )
        parser.add_argument(
            "--log-dir",
            default=str(settings.BASE_DIR / "var" / "bench"),
            help="the children's logs, and the SQLite file when DATABASE_URL is unset (var/bench)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        _check_options(options)
        deadline = time.monotonic() + options["timeout"]
        console = Console(highlight=False)
        stack = _stack(options)
        stack.log_dir.mkdir(parents=True, exist_ok=True)
        phases = None
        sigterm_as_ctrl_c()
        try:
            with console.status("migrating the bench's database"):
                stack.migrate()
            console.print(f"[green]✓[/] database   {maybe_sanitize_url(stack.database_url)}")
            start_stack(stack, console)
            phases = run_phases(stack, options, deadline, console)
            show(phases, stack, options, console)
        except KeyboardInterrupt:
            console.print("\n[yellow]Interrupted.[/]")
            raise SystemExit(EXIT_INTERRUPTED) from None
        except StartupError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            stop_stack(stack, console, started_by="the bench")
        not_completed = sum(
            count
            for phase in phases.values()
            for status, count in phase.statuses.items()
            if status != "completed"
        )
        if not_completed:
            raise CommandError(
                f"{not_completed} order(s) did not complete within {options['timeout']:g} s; "
                f"see the logs in {stack.log_dir}"
            )


def _check_options(options: dict[str, Any]) -> None:
    if options["orders"] < 1 or options["concurrency"] < 1 or options["worker_concurrency"] < 1:
        raise CommandError("--orders, --concurrency and --worker-concurrency must be at least 1")
    if options["warmup"] < 0 or options["timeout"] <= 0:
        raise CommandError("--warmup must be 0 or more, --timeout more than 0")
    if options["inventory_ms"] < 0 or options["payment_ms"] < 0:
        raise CommandError("--inventory-ms and --payment-ms must be 0 or more")
    if max(options["inventory_ms"], options["payment_ms"]) == 0:
        raise CommandError("at least one partner latency must be more than 0")


def _stack(options: dict[str, Any]) -> BenchStack:
    log_dir = Path(options["log_dir"]).resolve()
    return BenchStack(
        base_dir=settings.BASE_DIR,
        log_dir=log_dir,
        inventory_ms=options["inventory_ms"],
        payment_ms=options["payment_ms"],
        worker_concurrency=options["worker_concurrency"],
        web_threads=max(MIN_WEB_THREADS, options["concurrency"] + SPARE_WEB_THREADS),
        database_url=os.environ.get("DATABASE_URL") or _fresh_sqlite(log_dir),
    )


def _fresh_sqlite(log_dir: Path) -> str:
    """The bench's own SQLite file, emptied: every run starts from the same state."""
    path = log_dir / "bench.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return f"sqlite:///{path}"


# --- the phases -----------------------------------------------------------------------------


def run_phases(
    stack: BenchStack, options: dict[str, Any], deadline: float, console: Console
) -> dict[str, figures.Phase]:
    partners = ", ".join(f"{name} {ms:g} ms" for name, ms in stack.partner_latencies.items())
    console.print(
        f"\nPartners: {partners}, constant, no faults; rate limits {OUR_RATE_LIMIT}. "
        f"Worker: {stack.worker_concurrency} threads on {QUEUES}. "
        f"Web: {stack.web_threads} threads.\n"
    )
    console.print(_machine_load("before"))
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    client = traffic.BenchClient(stack.web_url, stack.api_token)
    warmup = traffic.new_orders(options["warmup"], run_id, "warmup")
    latency = traffic.new_orders(options["orders"], run_id, "latency")
    throughput = traffic.new_orders(options["orders"], run_id, "throughput")
    with progress_bar(console, transient=True) as progress:

        def advancing(description: str, total: int) -> Callable[[], None]:
            task = progress.add_task(description, total=total)
            return lambda: progress.advance(task)

        if warmup:
            traffic.one_at_a_time(
                client, warmup, deadline=deadline, advance=advancing("warm-up", len(warmup))
            )
        traffic.one_at_a_time(
            client, latency, deadline=deadline, advance=advancing("one at a time", len(latency))
        )
        traffic.all_at_once(
            client,
            throughput,
            concurrency=options["concurrency"],
            deadline=deadline,
            advance=advancing(f"{options['concurrency']} at once", len(throughput)),
        )
    console.print(_machine_load("after"))
    return {
        "warmup": figures.Phase("warmup", warmup),
        "latency": figures.Phase("latency", latency),
        "throughput": figures.Phase("throughput", throughput),
    }


def _machine_load(when: str) -> str:
    """The figures depend on what else runs here: say how busy the machine was."""
    one, five, _ = os.getloadavg()
    return (
        f"[dim]Machine {when} the phases: {os.cpu_count()} CPUs, load average "
        f"{one:.2f} (1 min), {five:.2f} (5 min).[/]"
    )


def show(
    phases: dict[str, figures.Phase],
    stack: BenchStack,
    options: dict[str, Any],
    console: Console,
) -> None:
    partners = figures.Partners(stack.inventory_ms, stack.payment_ms)
    latency, throughput = phases["latency"], phases["throughput"]
    console.print(figures.latency_table(latency, partners))
    console.print(figures.breakdown_table(latency, partners, title="one order at a time"))
    console.print(
        figures.breakdown_table(
            throughput, partners, title=f"{options['concurrency']} orders at once"
        )
    )
    console.print(
        figures.throughput_table(
            throughput,
            concurrency=options["concurrency"],
            worker_concurrency=options["worker_concurrency"],
        )
    )
    warmup = phases["warmup"]
    if warmup.orders and not warmup.all_completed:
        statuses = ", ".join(f"{s} {n}" for s, n in sorted(warmup.statuses.items()))
        console.print(f"[red]warm-up orders did not all complete:[/] {statuses}")
    console.print(f"\n[bold]{figures.verdict(latency, partners)}[/]", soft_wrap=True)
