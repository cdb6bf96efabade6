"""``manage.py demo``: the whole of dualsend on this machine, end to end, in a minute.

It switches to a database of its own (``<name>_demo`` beside a PostgreSQL
DATABASE_URL, else ``var/demo.sqlite3``; see ``devstack/demo/database.py``), recreates and
migrates it, makes a ``demo`` login there, starts Redis (embedded unless REDIS_URL is
set), the partner simulators with a realistic fault mix, a Celery worker, Celery beat,
Flower and the web server as real processes, places orders through the real HTTP API, shows
them settle, prints what happened, and stops every process it started, also on Ctrl-C
or an error. It exits 0 when every order reached a final state.
"""

import contextlib
import functools
import signal
import uuid
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from rich.console import Console

from devstack.chaos.database import DatabaseError
from devstack.demo import report
from devstack.demo.database import (
    DEMO_USERNAME,
    refresh_demo_user,
    runserver_hint,
    switch_to_demo_database,
)
from devstack.stack.console import start_stack, stop_stack
from devstack.stack.processes import StartupError, sigterm_as_ctrl_c
from devstack.stack.services import FLOWER_USER, Faults, Stack
from devstack.traffic import client as traffic
from devstack.traffic.client import DemoOrder
from dualsend_app.models import Order

EXIT_INTERRUPTED = 130


class Command(BaseCommand):
    help = (
        "Run the whole stack (Redis, partner simulators, worker, beat, web) as real "
        "processes, place orders through the HTTP API, and summarise what happened."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--orders", type=int, default=50, help="orders to place (50)")
        parser.add_argument(
            "--timeout", type=float, default=180, help="seconds for all orders to settle (180)"
        )
        parser.add_argument(
            "--rate",
            type=float,
            default=10,
            help="orders per second, a steady stream (10); 0 sends them all at once",
        )
        parser.add_argument(
            "--concurrency", type=int, default=8, help="client threads placing orders (8)"
        )
        parser.add_argument(
            "--keep-running",
            action="store_true",
            help="leave the stack up after the summary (browse the admin, Flower) until Ctrl-C",
        )
        faults = Faults()
        group = parser.add_argument_group("partner faults (passed to run_partners)")
        group.add_argument("--latency-ms", default=faults.latency_ms)
        group.add_argument("--error-rate", type=float, default=faults.error_rate)
        group.add_argument("--decline-rate", type=float, default=faults.decline_rate)
        group.add_argument("--drop-rate", type=float, default=faults.drop_rate)

    def handle(self, *args: Any, **options: Any) -> None:
        _check_options(options)
        console = Console(highlight=False)
        log_dir = settings.BASE_DIR / "var" / "demo"
        log_dir.mkdir(parents=True, exist_ok=True)
        stack = Stack(base_dir=settings.BASE_DIR, log_dir=log_dir, faults=_faults(options))
        unsettled = None
        sigterm_as_ctrl_c()
        try:
            database_url, password = prepare_database(console)
            start_stack(stack, console)
            orders = report.refresh_statuses(place_orders(stack, options, console))
            unsettled = [order for order in orders if not order.is_final]
            show_summary(orders, options, console)
            show_where_to_look(stack, orders, password, database_url, options, console)
            if options["keep_running"]:
                wait_for_ctrl_c(console)
        except KeyboardInterrupt:
            console.print("\n[yellow]Interrupted.[/]")
            raise SystemExit(EXIT_INTERRUPTED) from None
        except (StartupError, DatabaseError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            stop_stack(stack, console, started_by="the demo")
        if unsettled:
            raise CommandError(
                f"{len(unsettled)} order(s) did not reach a final state within "
                f"{options['timeout']:g} s; see the logs in {log_dir}"
            )


def _check_options(options: dict[str, Any]) -> None:
    if options["orders"] < 1 or options["concurrency"] < 1:
        raise CommandError("--orders and --concurrency must be at least 1")
    if options["rate"] < 0 or options["timeout"] <= 0:
        raise CommandError("--rate must be 0 or more, --timeout more than 0")


def _faults(options: dict[str, Any]) -> Faults:
    return Faults(
        latency_ms=options["latency_ms"],
        error_rate=options["error_rate"],
        decline_rate=options["decline_rate"],
        drop_rate=options["drop_rate"],
    )


# --- the steps ------------------------------------------------------------------------------


def prepare_database(console: Console) -> tuple[str, str]:
    """Switch to the demo's own database, recreated and migrated, and give its ``demo``
    superuser a new random password; (the database's URL, the password)."""
    with console.status("recreating and migrating the demo's database"):
        url = switch_to_demo_database()
    password = refresh_demo_user(url)
    database = settings.DATABASES["default"]
    console.print(
        f"[green]✓[/] database   {database['ENGINE'].rsplit('.', 1)[-1]} {database['NAME']}  "
        "[dim](the demo's own, recreated)[/]"
    )
    return url, password


def place_orders(stack: Stack, options: dict[str, Any], console: Console) -> list[DemoOrder]:
    run_id = f"demo-{uuid.uuid4().hex[:8]}"
    orders = traffic.order_mix(options["orders"], run_id)
    kinds = ", ".join(
        f"{sum(order.kind == kind for order in orders)} {kind}" for kind in traffic.Kind
    )
    pace = f"{options['rate']:g} a second" if options["rate"] else "all at once"
    console.print(
        f"\nPlacing {len(orders)} orders, {pace}, through POST {stack.web_url}/api/orders "
        f"({kinds}); "
        f"the simulators add latency {stack.faults.latency_ms} ms, "
        f"errors {stack.faults.error_rate:.0%}, declines {stack.faults.decline_rate:.0%}, "
        f"dropped connections {stack.faults.drop_rate:.0%}.\n"
    )
    client = traffic.ApiClient(stack.web_url, stack.api_token)
    return traffic.place_and_settle(
        client,
        orders,
        rate=options["rate"],
        concurrency=options["concurrency"],
        timeout=options["timeout"],
        console=console,
    )


def show_summary(orders: list[DemoOrder], options: dict[str, Any], console: Console) -> None:
    stats = report.collect(orders)
    console.print()
    console.print(report.status_table(stats, list(traffic.Kind)))
    console.print(report.work_table(stats))
    console.print(report.latency_table(stats))
    refused = [order for order in orders if not order.order_id]
    for order in refused[:5]:
        console.print(f"[red]order {order.number} was not placed:[/] {order.error}")


def show_where_to_look(
    stack: Stack,
    orders: list[DemoOrder],
    password: str,
    database_url: str,
    options: dict[str, Any],
    console: Console,
) -> None:
    """Plain lines, not a box: URLs and the curl command must copy and paste whole."""
    say = functools.partial(console.print, soft_wrap=True)
    example = _example_order(orders)
    say("\n[bold]Where to look[/]")
    login = f"[bold]{DEMO_USERNAME}[/] / [bold]{password}[/]"
    say(f"  admin      {stack.web_url}/admin/  login {login}")
    say(f"  dashboard  {stack.web_url}/dashboard/  [dim](the same login)[/]")
    flower_login = f"[bold]{FLOWER_USER}[/] / [bold]{stack.flower_password}[/]"
    say(f"  flower     {stack.flower_url}/tasks  login {flower_login}")
    say("             [dim]search an order's id there: its sends and compensations[/]")
    say(f"  metrics    {stack.web_url}/metrics")
    say(f"  API docs   {stack.web_url}/api/docs  [dim](the contract: /api/schema)[/]")
    say(f"  API token  {stack.api_token}")
    if example:
        url = f"{stack.web_url}/api/orders/{example.order_id}"
        say(f"  an order   {url}  [dim]({example.kind}, {example.status})[/]")
        admin_url = f"{stack.web_url}/admin/dualsend_app/order/{example.order_id}/change/"
        say(f"             {admin_url}  [dim](its timeline)[/]")
        say(f"             curl -s -H 'Authorization: Bearer {stack.api_token}' '{url}?wait=5'")
    say(f"  logs       {stack.log_dir}/  [dim](partners, worker, beat, flower, web, redis)[/]")
    if options["keep_running"]:
        say("The stack keeps running until you press Ctrl-C.")
    else:
        say(
            "[dim]These URLs work while the demo runs (--keep-running leaves it up, Flower "
            "included, to watch orders arrive). The "
            "records stay in the demo's database until its next run: "
            f"{runserver_hint(database_url)}, then http://127.0.0.1:8000/admin/ with the "
            "same login.[/]"
        )


def _example_order(orders: list[DemoOrder]) -> DemoOrder | None:
    """A compensated order tells the best story; else any order that was placed."""
    placed = [order for order in orders if order.order_id]
    preferred = [order for order in placed if order.status == Order.Status.COMPENSATED]
    return (preferred or placed or [None])[0]


def wait_for_ctrl_c(console: Console) -> None:
    """--keep-running: Ctrl-C (or SIGTERM) is the expected way out, not an interruption."""
    console.print("[dim]Press Ctrl-C to stop.[/]")
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            signal.pause()
