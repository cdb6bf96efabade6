"""Starting a stack in front of a person: one line per service, with how long it took."""

import time

from rich.console import Console

from .services import QUEUES, Stack


def start_stack(stack: Stack, console: Console) -> None:
    """Start Redis, the partners, the worker, beat and the web, saying each one is ready."""
    with console.status("starting Redis"):
        origin = stack.start_redis()
    console.print(f"[green]✓[/] redis      {stack.redis_url_for_display}  [dim]({origin})[/]")
    steps = (
        ("partners", stack.start_partners, lambda: f"{stack.inventory_url}  {stack.payment_url}"),
        ("worker", stack.start_worker, lambda: f"{stack.worker_name}, queues {QUEUES}"),
        ("beat", stack.start_beat, lambda: "periodic tasks"),
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
