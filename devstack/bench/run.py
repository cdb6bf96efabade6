"""One bench run: every phase of every system, in turn, each one measured.

The order, so that no system runs while another is measured:

1. warm-up: a few orders one at a time per system, not measured;
2. one at a time: `orders` round trips per system;
3. bursts: for each level, `level` orders per system, handed over at once; then
   dualsend's again, handed over through its batch intake, 100 orders a request
   (`batch_burst_phase`: only dualsend has an intake to batch);
4. half rate: `paced_orders` orders per system at half the rate that system sustained
   in the largest burst (each at half its own: all judged at the same load factor;
   dualsend's, the single-POST burst's rate, as its half-rate orders are single POSTs);
   or, with `paced_rate` (`--paced-rate`), every system at that one rate, so that two
   runs of different code compare their tails at the same load.

Around each measured phase: a short pause (the last phase's tail is not this one's
cost), then CPU snapshots of every process before and after, and the sampler's peaks
(memory, connections) while it runs.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.db import connections

from . import load
from .measure import Processes, Sampler, cpu_snapshot, cpu_used
from .results import (
    HALF_RATE,
    ONE_AT_A_TIME,
    Column,
    PhaseResult,
    Sample,
    batch_burst_phase,
    burst_phase,
)
from .systems import Dualsend, System

WARMUP = "warmup"
IDS_PER_QUERY = 500


@dataclass(frozen=True)
class Plan:
    orders: int  # one at a time, per system
    warmup: int
    levels: tuple[int, ...]  # burst sizes, ascending
    paced_orders: int
    paced_threads: int
    deadline: float  # time.monotonic() when everything stops
    # Orders/s of the steady phase for every system; None: half of each one's sustained rate.
    paced_rate: float | None = None
    # Before each phase, so that the last one's tail is not this one's cost.
    pause_seconds: float = 1.0

    @property
    def top_level(self) -> int:
        return max(self.levels)


class BenchRun:
    def __init__(
        self,
        plan: Plan,
        systems: Sequence[System],
        processes: Processes,
        sampler: Sampler,
        say: Callable[[str], None],
    ) -> None:
        self.plan = plan
        self.systems = systems
        self.processes = processes
        self.sampler = sampler
        self.say = say
        self.columns = {system.key: Column(system.key) for system in systems}
        self.skipped: list[str] = []  # phases the deadline left out

    def execute(self) -> dict[str, Column]:
        plan = self.plan
        for system in self.systems:
            samples = load.one_at_a_time(system, plan.warmup, phase=WARMUP, deadline=plan.deadline)
            self.columns[system.key].warmup = PhaseResult(system.key, WARMUP, samples)
        for system in self.systems:
            self._measure(
                system,
                ONE_AT_A_TIME,
                lambda s=system: load.one_at_a_time(
                    s, plan.orders, phase=ONE_AT_A_TIME, deadline=plan.deadline
                ),
            )
        for level in plan.levels:
            phase = burst_phase(level)
            for system in self.systems:
                self._measure(
                    system, phase, lambda s=system, n=level, p=phase: s.burst(n, p, plan.deadline)
                )
                if isinstance(system, Dualsend):
                    batch = batch_burst_phase(level)
                    self._measure(
                        system,
                        batch,
                        lambda s=system, n=level, p=batch: s.batch_burst(n, p, plan.deadline),
                    )
        for system in self.systems:
            self._half_rate(system)
        return self.columns

    def _half_rate(self, system: System) -> None:
        rate = self.plan.paced_rate or self._half_of_sustained(system)
        if rate is None:
            self.skipped.append(f"{system.key} {HALF_RATE}: no sustained rate")
            return
        outcome: list[load.Paced] = []

        def run() -> list[Sample]:
            outcome.append(
                load.paced(
                    system,
                    self.plan.paced_orders,
                    rate=rate,
                    threads=self.plan.paced_threads,
                    phase=HALF_RATE,
                    deadline=self.plan.deadline,
                )
            )
            return outcome[0].samples

        result = self._measure(system, HALF_RATE, run)
        if result is not None:
            result.offered_rate = rate
            result.late_ms = outcome[0].late_ms

    def _half_of_sustained(self, system: System) -> float | None:
        # The single-POST burst's rate: the half-rate orders are round trips, one POST each.
        sustained = self.columns[system.key].rate(self.plan.top_level)
        return sustained / 2 if sustained else None

    def _measure(
        self, system: System, phase: str, work: Callable[[], list[Sample]]
    ) -> PhaseResult | None:
        if time.monotonic() >= self.plan.deadline:
            self.skipped.append(f"{system.key} {phase}: --timeout reached")
            return None
        time.sleep(self.plan.pause_seconds)
        with self.sampler.phase() as peaks:
            before = cpu_snapshot(self.processes.current())
            samples = work()
            after = cpu_snapshot(self.processes.current())
        result = PhaseResult(system.key, phase, samples, cpu_used(before, after), peaks)
        self.columns[system.key].add(result)
        self.say(_phase_line(result))
        return result


def _phase_line(result: PhaseResult) -> str:
    window, rate, p50 = result.window_seconds, result.rate, result.latency(50)
    parts = [f"{result.completed}/{result.orders} done"]
    if window is not None:
        parts.append(f"in {window:.1f} s")
    if rate is not None:
        parts.append(f"{rate:.1f} orders/s")
    if p50 is not None:
        parts.append(f"p50 {p50:.0f} ms")
    mark = "[green]✓[/]" if result.all_completed else "[red]✗[/]"
    return f"{mark} {result.system:<10} {result.phase:<16} " + ", ".join(parts)


def count_records(dualsend: Dualsend) -> dict[str, int]:
    """dualsend's rows for every order the bench placed (warm-up included), counted in
    the bench's database (this process's `default`, switched over to it)."""
    from dualsend_app.models import Attempt, Order, Send

    ids = dualsend.order_ids()
    placed = sum(len(orders) for orders in dualsend.placed.values())
    counts = {"orders": placed, "orders_completed": 0, "sends_succeeded": 0, "attempts": 0}
    try:
        for start in range(0, len(ids), IDS_PER_QUERY):
            chunk = ids[start : start + IDS_PER_QUERY]
            counts["orders_completed"] += Order.objects.filter(
                pk__in=chunk, status=Order.Status.COMPLETED
            ).count()
            counts["sends_succeeded"] += Send.objects.filter(
                order_id__in=chunk,
                operation__in=Send.HEADER_OPERATIONS,
                status=Send.Status.SUCCEEDED,
            ).count()
            counts["attempts"] += Attempt.objects.filter(send__order_id__in=chunk).count()
    finally:
        connections.close_all()
    return counts
