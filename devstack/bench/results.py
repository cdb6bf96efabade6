"""What one bench run measured, and the arithmetic on it: pure, no process, no clock.

A `Sample` is one order of one system: when it was handed over and when it was done
(the client saw it done, or, in a burst, the system recorded it done), and whether it
ended as it must (dualsend: completed, with every record). A `PhaseResult` is a phase of
one system (one at a time, a burst, dualsend's burst through its batch intake, the
half-rate run): its samples, the CPU each kind of process spent on it, the peak memory
and connections while it ran. `Column` holds one system's phases: the table's column.
The targets are judged from the columns here.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .measure import Peaks, merge

SEQUENTIAL, BARE, DUALSEND = "sequential", "bare chord", "dualsend"
SYSTEMS = (SEQUENTIAL, BARE, DUALSEND)
ONE_AT_A_TIME = "one at a time"
HALF_RATE = "half rate"
BURST = "burst"
BATCH = "batch"  # dualsend's burst handed over through POST /api/orders/batch
# How each of dualsend's two intakes is named in the table and the targets.
SINGLE_INTAKE, BATCH_INTAKE = "single POSTs", "batch intake"
# Each kind of process as the table shows it → the kind each system's processes are.
KINDS = {
    "web": {DUALSEND: "web"},
    "workers": {BARE: "bare", DUALSEND: "workers"},
    "Redis": {BARE: "redis", DUALSEND: "redis"},
    "PostgreSQL": {DUALSEND: "postgres"},
}
MEMORY_BOUND_BYTES = 1024**3
HALF_RATE_BOUND_MS = 100.0
MIN_JUDGED_BURST = 1000
MIB = 1024**2


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def ratio(value: float | None, base: float | None) -> float | None:
    """value ÷ base, or None when either is unknown or the base is 0."""
    if value is None or base is None or base == 0:
        return None
    return value / base


def per_order_ms(cpu_seconds: Mapping[str, float], orders: int) -> dict[str, float]:
    """CPU milliseconds per order, by kind."""
    if orders <= 0:
        return {}
    return {kind: seconds * 1000 / orders for kind, seconds in cpu_seconds.items()}


def burst_phase(level: int) -> str:
    return f"{BURST} {level}"


def batch_burst_phase(level: int) -> str:
    """dualsend's burst of `level` orders handed over in batches (POST /api/orders/batch)."""
    return f"{BURST} {level} {BATCH}"


@dataclass(frozen=True)
class Sample:
    ok: bool
    started: float  # seconds since the epoch: handed over
    finished: float | None  # done (None: never seen done)
    detail: str = ""

    @property
    def latency_ms(self) -> float | None:
        if self.finished is None:
            return None
        return (self.finished - self.started) * 1000


@dataclass
class PhaseResult:
    system: str
    phase: str
    samples: list[Sample]
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    peaks: Peaks = field(default_factory=Peaks)
    offered_rate: float | None = None  # orders a second asked for (the half-rate run)
    late_ms: float | None = None  # the latest an order started after its due time

    @property
    def orders(self) -> int:
        return len(self.samples)

    @property
    def completed(self) -> int:
        return sum(1 for sample in self.samples if sample.ok)

    @property
    def all_completed(self) -> bool:
        return self.completed == self.orders

    @property
    def latencies_ms(self) -> list[float]:
        return [s.latency_ms for s in self.samples if s.ok and s.latency_ms is not None]

    def latency(self, pct: float) -> float | None:
        return percentile(self.latencies_ms, pct)

    @property
    def window_seconds(self) -> float | None:
        """First order handed over → last one done."""
        done = [sample.finished for sample in self.samples if sample.finished is not None]
        if not done:
            return None
        return max(done) - min(sample.started for sample in self.samples)

    @property
    def rate(self) -> float | None:
        """Orders done a second over the window (those that did not complete excluded)."""
        window = self.window_seconds
        return self.completed / window if window else None

    @property
    def cpu_ms_per_order(self) -> dict[str, float]:
        return per_order_ms(self.cpu_seconds, self.orders)

    def to_json(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "phase": self.phase,
            "orders": self.orders,
            "completed": self.completed,
            "window_seconds": self.window_seconds,
            "orders_per_second": self.rate,
            "latency_ms": {f"p{pct}": self.latency(pct) for pct in (50, 95, 99)}
            | {"max": max(self.latencies_ms, default=None)},
            "offered_rate": self.offered_rate,
            "latest_start_ms": self.late_ms,
            "cpu_seconds": self.cpu_seconds,
            "cpu_ms_per_order": self.cpu_ms_per_order,
            "peak_rss_bytes": self.peaks.rss,
            "peak_pss_together_bytes": self.peaks.together,
            "peak_connections": self.peaks.connections,
        }


@dataclass
class Column:
    """One system's measured phases (warm-up apart): a column of the table."""

    system: str
    phases: dict[str, PhaseResult] = field(default_factory=dict)
    warmup: PhaseResult | None = None
    records: dict[str, int] | None = None  # dualsend: rows counted in the database

    def add(self, phase: PhaseResult) -> None:
        self.phases[phase.phase] = phase

    def phase(self, name: str) -> PhaseResult | None:
        return self.phases.get(name)

    def burst(self, level: int, *, batch: bool = False) -> PhaseResult | None:
        """The burst of `level` orders; `batch`: dualsend's through its batch intake."""
        return self.phases.get(batch_burst_phase(level) if batch else burst_phase(level))

    def rate(self, level: int, *, batch: bool = False) -> float | None:
        burst = self.burst(level, batch=batch)
        return burst.rate if burst else None

    def latency(self, pct: float) -> float | None:
        phase = self.phase(ONE_AT_A_TIME)
        return phase.latency(pct) if phase else None

    def half_rate_p99(self) -> float | None:
        phase = self.phase(HALF_RATE)
        return phase.latency(99) if phase else None

    def cpu_ms_per_order(self, level: int, shown_kind: str, *, batch: bool = False) -> float | None:
        burst = self.burst(level, batch=batch)
        kind = KINDS[shown_kind].get(self.system)
        if burst is None or kind is None:
            return None
        return burst.cpu_ms_per_order.get(kind)  # None: no process of that kind (SQLite)

    def cpu_total_per_order(self, level: int, *, batch: bool = False) -> float | None:
        values = [self.cpu_ms_per_order(level, kind, batch=batch) for kind in KINDS]
        known = [value for value in values if value is not None]
        return sum(known) if known else None

    @property
    def memory(self) -> Peaks:
        return merge([phase.peaks for phase in self.phases.values()])

    def largest_rss(self, shown_kind: str) -> int | None:
        kind = KINDS[shown_kind].get(self.system)
        memory = self.memory
        values = [rss for name, rss in memory.rss.items() if memory.kinds.get(name) == kind]
        return max(values, default=None) if kind else None

    def together_bytes(self) -> int | None:
        return self.memory.together.get(self.system)

    def peak_connections(self) -> int | None:
        return self.memory.connections if self.system == DUALSEND else None

    @property
    def all_phases(self) -> list[PhaseResult]:
        return [*([self.warmup] if self.warmup else []), *self.phases.values()]

    @property
    def all_completed(self) -> bool:
        return all(phase.all_completed for phase in self.all_phases)

    @property
    def records_complete(self) -> bool:
        """dualsend: every order's rows in the database (always true for the others)."""
        if self.records is None:
            return self.system != DUALSEND
        return (
            self.records["orders_completed"] == self.records["orders"]
            and self.records["sends_succeeded"] == 2 * self.records["orders"]
            and self.records["attempts"] >= 2 * self.records["orders"]
        )

    def to_json(self) -> dict[str, Any]:
        memory = self.memory
        return {
            "all_completed": self.all_completed,
            "records": self.records,
            "warmup": self.warmup.to_json() if self.warmup else None,
            "phases": {name: phase.to_json() for name, phase in self.phases.items()},
            "peak_rss_bytes": memory.rss,
            "process_kinds": memory.kinds,
            "peak_pss_together_bytes": memory.together.get(self.system),
            "peak_connections": self.peak_connections(),
        }


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    bound: str
    ok: bool | None  # None: could not be judged

    @property
    def verdict(self) -> str:
        return {True: "ok", False: "MISSED", None: "not judged"}[self.ok]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "measured": self.measured, "bound": self.bound,
                "verdict": self.verdict}  # fmt: skip


def judge(
    columns: Mapping[str, Column],
    *,
    slower_ms: float,
    level: int,
    pools_total: int | None,
    fixed_rate: float | None = None,
) -> list[Target]:
    """The issue's five targets, judged on dualsend's column (and the bare chord's).

    `fixed_rate`: the steady phase ran at that rate (`--paced-rate`), not at half the
    sustained rate, so its p99 is shown but not judged."""
    bare, ours = columns[BARE], columns[DUALSEND]
    return [
        _throughput(bare, ours, level),
        _overhead(bare, ours, slower_ms),
        _half_rate(ours, slower_ms, fixed_rate),
        _memory(ours),
        _connections(ours, pools_total),
    ]


@dataclass(frozen=True)
class Intake:
    """One of dualsend's two ways of handing over a burst, against the bare chord's burst."""

    name: str  # SINGLE_INTAKE or BATCH_INTAKE
    burst: PhaseResult | None
    times: float | None  # its rate ÷ the bare chord's

    @property
    def rate(self) -> float | None:
        return self.burst.rate if self.burst else None


def intakes(bare: Column, ours: Column, level: int) -> list[Intake]:
    """dualsend's burst of `level` with single POSTs, then with batch intake."""
    base = bare.rate(level)
    return [
        Intake(name, burst, ratio(burst.rate if burst else None, base))
        for name, burst in (
            (SINGLE_INTAKE, ours.burst(level)),
            (BATCH_INTAKE, ours.burst(level, batch=True)),
        )
    ]


def judged_intake(bare: Column, ours: Column, level: int) -> Intake | None:
    """The better of the two intakes: one whose burst completed every order before one
    that did not, then the higher rate; None when neither has a rate."""
    measured = [
        i for i in intakes(bare, ours, level) if i.burst is not None and i.times is not None
    ]
    if not measured:
        return None
    return max(measured, key=lambda i: (i.burst.all_completed, i.times))


def _throughput(bare: Column, ours: Column, level: int) -> Target:
    both = intakes(bare, ours, level)
    judged = judged_intake(bare, ours, level)
    records = "every record written" if ours.records_complete else "records MISSING"
    small = f"; a burst of {level}, under {MIN_JUDGED_BURST:,}" if level < MIN_JUDGED_BURST else ""
    times = ", ".join(f"{_times(i.times)} {i.name}" for i in both)
    rates = ", ".join(_rate(i.rate) for i in both)
    ok = None
    if judged is None or judged.burst is None or judged.times is None:
        final = "no burst" if all(i.burst is None for i in both) else "no rate"
    else:
        burst = judged.burst
        final = f"judged on {judged.name}: {burst.completed}/{burst.orders} completed"
        ok = judged.times >= 1.0 and burst.all_completed and ours.records_complete
    measured = f"{times} ({rates} vs {_rate(bare.rate(level))} orders/s; {final}, {records}{small})"
    return Target("throughput vs the bare chord", measured, "≥ 1.00x, all final", ok)


def _overhead(bare: Column, ours: Column, slower_ms: float) -> Target:
    ours_p50, bare_p50 = ours.latency(50), bare.latency(50)
    if ours_p50 is None or bare_p50 is None:
        return Target("one-at-a-time p50 overhead", "-", "≤ the bare chord's", None)
    mine, theirs = ours_p50 - slower_ms, bare_p50 - slower_ms
    return Target(
        "one-at-a-time p50 overhead",
        f"{mine:+.0f} ms (bare chord {theirs:+.0f} ms)",
        "≤ the bare chord's",
        mine <= theirs,
    )


def _half_rate(ours: Column, slower_ms: float, fixed_rate: float | None = None) -> Target:
    p99 = ours.half_rate_p99()
    phase = ours.phase(HALF_RATE)
    bound = f"≤ {HALF_RATE_BOUND_MS:.0f} ms above the slower call"
    if p99 is None or phase is None:
        return Target("p99 at half the sustained rate", "-", bound, None)
    above = p99 - slower_ms
    measured = f"{above:+.0f} ms (p99 {p99:.0f} ms at {_rate(phase.offered_rate)} orders/s)"
    if fixed_rate is not None:
        # The target's load is half of what dualsend sustained; this run chose its own.
        measured += ", at the fixed --paced-rate"
        return Target("p99 at half the sustained rate", measured, bound, None)
    return Target("p99 at half the sustained rate", measured, bound, above <= HALF_RATE_BOUND_MS)


def _memory(ours: Column) -> Target:
    together = ours.together_bytes()
    bound = f"≤ {MEMORY_BOUND_BYTES / MIB:,.0f} MiB"
    if together is None:
        return Target("peak memory, all dualsend processes", "-", bound, None)
    return Target(
        "peak memory, all dualsend processes",
        f"{together / MIB:,.0f} MiB (PSS summed)",
        bound,
        together <= MEMORY_BOUND_BYTES,
    )


def _connections(ours: Column, pools_total: int | None) -> Target:
    peak = ours.peak_connections()
    bound = "≤ the pools' total" if pools_total is None else f"≤ {pools_total} (the pools' total)"
    if peak is None or pools_total is None:
        return Target("peak database connections", "-", bound, None)
    return Target("peak database connections", str(peak), bound, peak <= pools_total)


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
