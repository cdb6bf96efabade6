"""One chaos run from start to verdict: the stack up, orders in while the faults happen,
every order settled (or the bound reached), the facts read, the stack down.

The main thread runs the faults and starts every process (see stack.py for why); the
client's threads only make HTTP calls. One loop watches all three (placing, faults,
settling) and prints a progress line now and then, so the run is bounded by one clock.
The orders are paced to the schedule: the rate is asked again after each order, from the
orders left and the faults still to come, so that orders keep arriving during every one.

The run's own reads of the database survive its crash: a read that fails closes the
connection and answers "not known now"; the next one connects again.
"""

import contextlib
import random
import runpy
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError, connections

from devstack.simulators.control import SimulatorControl
from devstack.stack.processes import only_environment
from devstack.stack.services import Faults
from dualsend_app.models import Order

from . import faults as fault_schedule
from . import recovery, traffic, verdict
from .stack import ChaosStack

T = TypeVar("T")

POLL_SECONDS = 0.2
STATUS_EVERY_SECONDS = 1.0
PROGRESS_EVERY_SECONDS = 5.0
# Orders keep arriving during every fault: they are spread over the schedule, at most
# this fast (the machine has two cores; the point is faults under load, not a benchmark).
MAX_AUTO_RATE = 10.0
MIN_AUTO_RATE = 0.5
KEPT_RUN_LOGS = 5
# The recovery levers as the children read them, for the report's header.
LEVERS = (
    ("lease margin", "DUALSEND_LEASE_MARGIN_SECONDS"),
    ("sweep every", "DUALSEND_SWEEP_EVERY_SECONDS"),
    ("sweep grace", "DUALSEND_SWEEP_GRACE_SECONDS"),
)


@dataclass(frozen=True)
class ChaosOptions:
    orders: int
    broker: str
    kills: int
    redis_restarts: int
    postgres_crashes: int
    postgres_down_seconds: float
    outage_partners: tuple[str, ...]
    outage_seconds: float
    timeout: float
    recovery_bound: float
    seed: int
    rate: float | None  # None: spread the orders over the fault schedule
    concurrency: int
    fault_gap: float


@dataclass(frozen=True)
class RunSetup:
    """What the report's header says about the run."""

    command: str
    broker: str
    redis: str
    database: str
    layout: str
    levers: str
    orders: int
    web_url: str
    rate: float
    concurrency: int
    seed: int
    faults: Faults
    log_dir: Path


def new_log_dir(base_dir: Path) -> Path:
    """var/chaos/run-<time>-<pid>/, keeping the last few runs' logs."""
    root = base_dir / "var" / "chaos"
    root.mkdir(parents=True, exist_ok=True)
    for old in sorted(root.glob("run-*"))[:-KEPT_RUN_LOGS]:
        shutil.rmtree(old, ignore_errors=True)
    log_dir = root / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    log_dir.mkdir()
    return log_dir


def start_stack(stack: ChaosStack, say: Callable[[str], None]) -> None:
    """Every process but PostgreSQL (started first, to be migrated), in the order each
    needs the previous ones; says how long each took."""
    steps = (
        ("redis", stack.start_redis),
        ("partners", stack.start_partners),
        ("workers", stack.start_workers),
        ("beat", stack.start_beat),
        ("web", stack.start_web),
    )
    for name, start in steps:
        started = time.monotonic()
        start()
        say(f"started {name:<9} in {time.monotonic() - started:4.1f} s")


class ChaosRun:
    """`execute()` → (facts, verdict); the caller owns the stack's start and stop."""

    def __init__(
        self, options: ChaosOptions, stack: ChaosStack, say: Callable[[str], None]
    ) -> None:
        self.options = options
        self.stack = stack
        self.say = say
        self.rng = random.Random(options.seed)
        self.plan = fault_schedule.plan(
            kills=options.kills,
            worker_roles=[worker.role for worker in stack.workers],
            redis_restarts=options.redis_restarts,
            postgres_crashes=options.postgres_crashes,
            postgres_down_seconds=options.postgres_down_seconds,
            outage_partners=options.outage_partners,
            outage_seconds=options.outage_seconds,
            gap=options.fault_gap,
            rng=self.rng,
        )
        # The pace at the start, for the report: it follows the schedule from there on.
        self.rate = options.rate or _pace(options.orders, fault_schedule.expected_span(self.plan))
        run_id = f"chaos-{uuid.uuid4().hex[:8]}"
        self.orders = traffic.orders_for(options.orders, run_id, self.rng)
        self.started: float | None = None
        self.placer: traffic.Placer | None = None
        self.runner: fault_schedule.FaultRunner | None = None
        self._statuses: Counter[str] = Counter()
        self._statuses_at = 0.0
        self.exits: list[str] = []  # "worker exited with code 1 (log …)": nobody stopped it

    # --- the run -------------------------------------------------------------------------

    def execute(self) -> tuple[verdict.RunFacts, verdict.Verdict]:
        client = traffic.Client(self.stack.web_url, self.stack.api_token, seed=self.options.seed)
        self.placer = traffic.Placer(
            client, self.orders, rate=self._current_rate, concurrency=self.options.concurrency
        )
        self.runner = fault_schedule.FaultRunner(
            self.stack,
            self.plan,
            clock=self.clock,
            waiting_on=lambda: _read(recovery.waiting_on, {}),
            unsettled=lambda record: _read(lambda: recovery.unsettled(record), None),
            announce=self.say,
            recovery_bound=self.options.recovery_bound,
        )
        self.say(
            f"placing {len(self.orders)} orders from {self.rate:.1f}/s while "
            f"{len(self.plan)} faults happen: "
            + ", ".join(_fault_name(fault) for fault in self.plan)
            + f"; bound {self.options.timeout:g} s"
        )
        self.started = time.monotonic()
        try:
            self.placer.start()
            settled_within = self._drive()
        except BaseException:
            self.placer.cancel()
            raise
        self.placer.close()
        return self._judge(settled_within)

    def clock(self) -> float:
        return time.monotonic() - self.started

    def _drive(self) -> float | None:
        """Until every order is final and every fault done, or the bound; returns the
        seconds it took, or None when the bound was reached first."""
        next_progress = PROGRESS_EVERY_SECONDS
        while True:
            self.runner.tick()
            finished = self.placer.done and self.runner.done and self._all_final()
            if finished:
                self._progress()
                return self.clock()
            if self.clock() >= self.options.timeout or self._someone_died():
                self._progress()
                self.say(f"stopping at t={self.clock():.1f}: {self._why_stopping()}")
                self.placer.cancel()
                self.runner.abandon()
                return None
            if self.clock() >= next_progress:
                self._progress()
                next_progress += PROGRESS_EVERY_SECONDS
            time.sleep(POLL_SECONDS)

    def _someone_died(self) -> bool:
        """A process of the stack exited on its own: nothing would settle; stop now."""
        self.exits = [
            f"{child.name} exited with code {child.exit_code} (log {child.log_path})"
            for child in self.stack.exited_on_their_own()
        ]
        return bool(self.exits)

    def _why_stopping(self) -> str:
        if self.exits:
            return "; ".join(self.exits)
        return f"the bound of {self.options.timeout:g} s is reached"

    def _judge(self, settled_within: float | None) -> tuple[verdict.RunFacts, verdict.Verdict]:
        ledger = SimulatorControl(self.stack.inventory_url).ledger()
        facts = verdict.collect(
            self.orders,
            ledger,
            self.runner.records,
            settled_within=settled_within,
            run_seconds=self.clock(),
            exits=self.exits,
        )
        expected = verdict.Expectations(
            kills=self.options.kills,
            worker_roles=tuple(worker.role for worker in self.stack.workers),
            redis_restarts=self.options.redis_restarts,
            postgres_crashes=self.options.postgres_crashes,
            outage_partners=self.options.outage_partners if self.options.outage_seconds else (),
            settle_bound=self.options.timeout,
            recovery_bound=self.options.recovery_bound,
        )
        return facts, verdict.judge(facts, expected)

    # --- watching ----------------------------------------------------------------------

    def _all_final(self) -> bool:
        statuses = self._current_statuses()
        placed = sum(statuses.values())
        final = sum(n for status, n in statuses.items() if status in verdict.FINAL)
        return placed == len(self.placer.placed) and final == placed

    def _current_statuses(self) -> Counter[str]:
        """Status → orders placed so far, read at most once a second."""
        if time.monotonic() - self._statuses_at >= STATUS_EVERY_SECONDS:
            ids = [order.order_id for order in self.placer.placed]
            rows = _read(
                lambda: list(Order.objects.filter(pk__in=ids).values_list("status", flat=True)),
                None,
            )
            if rows is not None:  # else the database is down: keep what we knew
                self._statuses = Counter(rows)
            self._statuses_at = time.monotonic()
        return self._statuses

    def _progress(self) -> None:
        statuses = self._current_statuses()
        final = {s: n for s, n in statuses.items() if s in verdict.FINAL}
        detail = ", ".join(f"{status} {n}" for status, n in sorted(final.items()))
        waiting = statuses.total() - sum(final.values())
        faults_done = len(self.runner.records)
        self.say(
            f"t={self.clock():6.1f}  placed {len(self.placer.placed)}/{len(self.orders)}  "
            f"final {sum(final.values())} ({detail or '-'})  not yet {waiting}  "
            f"faults {faults_done}/{len(self.plan)}"
        )

    def _current_rate(self) -> float:
        """--rate, else the orders left spread over the faults still to come."""
        return self.options.rate or _pace(
            len(self.orders) - self.placer.submitted(), self.runner.remaining_span()
        )


def _pace(orders: int, span: float) -> float:
    if span <= 0:
        return MAX_AUTO_RATE
    return min(MAX_AUTO_RATE, max(MIN_AUTO_RATE, orders / span))


def _fault_name(fault: fault_schedule.PlannedFault) -> str:
    return f"{fault.action} {fault.target}".strip()


def _read(query: Callable[[], T], unknown: T) -> T:
    """`query()`, or `unknown` when the database does not answer (it may be the crash the
    run caused); the broken connection is closed so that the next read connects again."""
    try:
        return query()
    except DatabaseError:
        for connection in connections.all():
            with contextlib.suppress(DatabaseError):
                connection.close()
        return unknown


def levers(environment: Mapping[str, str]) -> str:
    """The recovery levers as a child with `environment` reads them (project/settings.py
    run once more with exactly that environment)."""
    with only_environment(environment):
        values = runpy.run_path(str(settings.BASE_DIR / "project" / "settings.py"))
    partner = values["DUALSEND_PARTNERS"]["inventory"]
    parts = [f"{label} {values[name]:g} s" for label, name in LEVERS]
    parts.append(
        f"partner timeouts {partner.connect_timeout:g} + {partner.read_timeout:g} s "
        "(an in-flight lease is timeouts + margin)"
    )
    return ", ".join(parts)
