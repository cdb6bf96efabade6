"""Starting and stopping a stack in front of a person: one line per service, with how long
it took, and one line when every process is stopped."""

import time

from rich.console import Console

from .processes import signals_ignored
from .services import QUEUES, Stack


def start_stack(stack: Stack, console: Console) -> None:
    """Start Redis, the partners, the worker, beat, Flower and the web, saying each one is
    ready."""
    with console.status("starting Redis"):
        origin = stack.start_redis()
    console.print(f"[green]✓[/] redis      {stack.redis_url_for_display}  [dim]({origin})[/]")
    steps = (
        ("partners", stack.start_partners, lambda: f"{stack.inventory_url}  {stack.payment_url}"),
        ("worker", stack.start_worker, lambda: f"{stack.worker_name}, queues {QUEUES}"),
        ("beat", stack.start_beat, lambda: "periodic tasks"),
        # Before the first order, so that it sees every task of every order.
        ("flower", stack.start_flower, lambda: f"{stack.flower_url}/tasks"),
        ("web", stack.start_web, lambda: stack.web_url),
    )
    for name, start, describe in steps:
        started = time.monotonic()
        with console.status(f"starting {name}"):
            start()
        took = time.monotonic() - started
        console.print(
            f"[green]✓[/] {name:<10} {describe()}  "
            f"[dim](ready in {took:.1f} s, log {stack.log_dir / name}.log)[/]"
        )


def stop_stack(stack: Stack, console: Console, *, started_by: str) -> None:
    """Stop every process `started_by` ("the demo") started; a second Ctrl-C cannot cut
    this short."""
    with signals_ignored(), console.status(f"stopping every process {started_by} started"):
        killed = stack.stop()
    console.print(f"[green]✓[/] {stopped_line(killed, started_by=started_by)}")


def stopped_line(killed: list[str], *, started_by: str) -> str:
    """'stopped every process the demo started', naming those killed after the grace period."""
    suffix = f" (killed after the grace period: {', '.join(killed)})" if killed else ""
    return f"stopped every process {started_by} started{suffix}"
