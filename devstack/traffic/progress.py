"""The one progress bar of the demo and the bench: a task per line, with its count and time."""

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress_bar(console: Console, *, statuses: bool = False, transient: bool = False) -> Progress:
    """`statuses`: a last column showing each task's ``statuses`` field (the demo's final
    statuses so far); `transient`: the bars vanish when done (the bench prints tables)."""
    columns = [
        TextColumn("[bold]{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    if statuses:
        columns.append(TextColumn("{task.fields[statuses]}"))
    return Progress(*columns, console=console, transient=transient)
