"""The bench's printed tables: the three systems side by side, the targets, the memory of
each process. Cells only: every figure comes from results.py.

dualsend's bursts with batch intake have rows of their own (", batch intake"): only
dualsend has a figure there, and its ratio is to the bare chord's burst of that size."""

from collections.abc import Callable, Mapping, Sequence

from rich.table import Table

from .measure import Peaks
from .results import (
    BARE,
    BATCH_INTAKE,
    DUALSEND,
    HALF_RATE,
    KINDS,
    MIB,
    SYSTEMS,
    Column,
    Target,
    ratio,
)

Getter = Callable[[Column], float | None]


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def side_by_side(
    columns: Mapping[str, Column],
    *,
    levels: Sequence[int],
    slower_ms: float,
    pools_total: int | None,
    caption: str,
    fixed_rate: float | None = None,
) -> Table:
    """`fixed_rate`: the steady phase ran at `--paced-rate`, not half the sustained rate."""
    table = Table(
        title="dualsend against a bare Celery chord and the sequential calls",
        title_justify="left",
        caption=caption,
        caption_justify="left",
    )
    table.add_column("measured")
    for system in SYSTEMS:
        table.add_column(system, justify="right")
    table.add_column("dualsend ÷ bare", justify="right")

    def row(
        label: str,
        get: Getter,
        digits: int = 0,
        *,
        with_ratio: bool = True,
        base: Getter | None = None,
    ) -> None:
        """One figure per system; the last cell dualsend's ÷ the bare chord's (`base`: the
        bare chord's figure read another way, for the batch-intake rows)."""
        values = {system: get(columns[system]) for system in SYSTEMS}
        theirs = base(columns[BARE]) if base else values[BARE]
        times = ratio(values[DUALSEND], theirs) if with_ratio else None
        cells = [_number(values[system], digits) for system in SYSTEMS]
        table.add_row(label, *cells, _times(times))

    for level in levels:
        row(f"orders/s settled, burst of {level:,}", lambda c, n=level: c.rate(n), 1)
    for level in levels:
        row(
            f"orders/s settled, burst of {level:,}, {BATCH_INTAKE}",
            lambda c, n=level: c.rate(n, batch=True),
            1,
            base=lambda c, n=level: c.rate(n),
        )
    top = max(levels)
    table.add_row(
        f"orders done, burst of {top:,}",
        *[_done(columns[system], top) for system in SYSTEMS],
        "",
    )
    table.add_row(
        f"orders done, burst of {top:,}, {BATCH_INTAKE}",
        *[_done(columns[system], top, batch=True) for system in SYSTEMS],
        "",
    )
    table.add_section()
    for pct in (50, 95, 99):
        row(f"one at a time p{pct} (ms)", lambda c, p=pct: c.latency(p))
    row(
        f"p50 above the slower call ({slower_ms:g} ms)",
        lambda c: _minus(c.latency(50), slower_ms),
        with_ratio=False,
    )
    table.add_section()
    steady = "the fixed --paced-rate" if fixed_rate else "half the sustained rate"
    row(f"{steady} (orders/s)", lambda c: _offered(c), 1)
    row(f"p99 at {steady} (ms)", lambda c: c.half_rate_p99())
    row("  its p99 above the slower call (ms)", lambda c: _minus(c.half_rate_p99(), slower_ms),
        with_ratio=False)  # fmt: skip
    for level in levels:
        table.add_section()
        for kind in KINDS:
            row(f"CPU ms/order, {kind}, burst {level:,}",
                lambda c, k=kind, n=level: c.cpu_ms_per_order(n, k), 1)  # fmt: skip
        row(f"CPU ms/order, all, burst {level:,}", lambda c, n=level: c.cpu_total_per_order(n), 1)
        for kind in KINDS:
            row(f"CPU ms/order, {kind}, burst {level:,}, {BATCH_INTAKE}",
                lambda c, k=kind, n=level: c.cpu_ms_per_order(n, k, batch=True), 1,
                base=lambda c, k=kind, n=level: c.cpu_ms_per_order(n, k))  # fmt: skip
        row(f"CPU ms/order, all, burst {level:,}, {BATCH_INTAKE}",
            lambda c, n=level: c.cpu_total_per_order(n, batch=True), 1,
            base=lambda c, n=level: c.cpu_total_per_order(n))  # fmt: skip
    if len(levels) > 1:
        low, high = min(levels), max(levels)
        row(
            f"  CPU/order at {high:,} ÷ at {low:,} (flat: 1.00)",
            lambda c: ratio(c.cpu_total_per_order(high), c.cpu_total_per_order(low)),
            2,
            with_ratio=False,
        )
    table.add_section()
    for kind in KINDS:
        row(f"peak RSS, largest {kind} process (MiB)", lambda c, k=kind: _mib(c.largest_rss(k)))
    row("peak memory, all processes together (MiB)", lambda c: _mib(c.together_bytes()))
    table.add_section()
    pools = "" if pools_total is None else f" (pools' total {pools_total})"
    row(f"peak database connections{pools}", lambda c: c.peak_connections(), with_ratio=False)
    return table


def targets_table(targets: Sequence[Target]) -> Table:
    table = Table(title="The targets (issue 8)", title_justify="left")
    table.add_column("target")
    table.add_column("measured")
    table.add_column("bound")
    table.add_column("verdict")
    for target in targets:
        style = {True: "green", False: "bold red", None: "yellow"}[target.ok]
        table.add_row(target.name, target.measured, target.bound, f"[{style}]{target.verdict}[/]")
    return table


def memory_table(peaks: Peaks) -> Table:
    """Peak RSS of every process, by the child that started it (a tree: gunicorn's
    master and worker, PostgreSQL's postmaster and backends)."""
    table = Table(title="Peak RSS per process (MiB)", title_justify="left")
    for name, justify in (("process", "left"), ("kind", "left"), ("processes", "right"),
                          ("largest", "right"), ("sum", "right")):  # fmt: skip
        table.add_column(name, justify=justify)
    groups: dict[str, list[int]] = {}
    kinds: dict[str, str] = {}
    for name, rss in peaks.rss.items():
        group = name.split("/", 1)[0]
        groups.setdefault(group, []).append(rss)
        kinds[group] = peaks.kinds.get(name, "")
    for group in sorted(groups, key=lambda g: (kinds[g], g)):
        values = groups[group]
        table.add_row(
            group, kinds[group], str(len(values)), _number(_mib(max(values))),
            _number(_mib(sum(values))),
        )  # fmt: skip
    return table


def _done(column: Column, level: int, *, batch: bool = False) -> str:
    burst = column.burst(level, batch=batch)
    return "-" if burst is None else f"{burst.completed:,}/{burst.orders:,}"


def _minus(value: float | None, base: float) -> float | None:
    return None if value is None else value - base


def _offered(column: Column) -> float | None:
    phase = column.phase(HALF_RATE)
    return phase.offered_rate if phase else None


def _mib(value: int | None) -> float | None:
    return None if value is None else value / MIB
