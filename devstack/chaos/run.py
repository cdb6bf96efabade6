"""One chaos run from start to verdict: the stack up, orders in while the faults happen,
every order settled (or the bound reached), the facts read, the stack down.

The main thread runs the faults and starts every process (see stack.py for why); the
client's threads only make HTTP calls. One loop watches all three (placing, faults,
settling) and prints a progress line now and then, so the run is bounded by one clock.
"""

import random
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devstack.simulators.control import SimulatorControl
from devstack.stack.services import Faults
from dualsend_app.models import Order, Send

from . import faults as fault_schedule
from . import traffic, verdict
from .stack import ChaosStack

POLL_SECONDS = 0.2
STATUS_EVERY_SECONDS = 1.0
PROGRESS_EVERY_SECONDS = 5.0
# Orders keep arriving during every fault: they are spread over the schedule, at most
# this fast (the machine has two cores; the point is faults under load, not a benchmark).
MAX_AUTO_RATE = 10.0
MIN_AUTO_RATE = 1.0
KEPT_RUN_LOGS = 5


@dataclass(frozen=True)
class ChaosOptions:
    orders: int
    broker: str
    kills: int
    redis_restarts: int
    outage_seconds: float
    outage_partner: str
    timeout: float
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
    """Every process, in the order each needs the previous ones; says how long each took."""
    steps = (
        ("redis", stack.start_redis),
        ("partners", stack.start_partners),
        ("worker", stack.start_worker),
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
            redis_restarts=options.redis_restarts,
            outage_seconds=options.outage_seconds,
            outage_partner=options.outage_partner,
            gap=options.fault_gap,
            rng=self.rng,
        )
        self.rate = options.rate or self._rate_over_the_schedule()
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
        client = traffic.Client(self.stack.web_url, self.stack.api_token)
        self.placer = traffic.Placer(
            client, self.orders, rate=self.rate, concurrency=self.options.concurrency
        )
        self.runner = fault_schedule.FaultRunner(
            self.stack,
            self.plan,
            clock=self.clock,
            sends_in_flight=_sends_in_flight,
            announce=self._announce,
        )
        self.say(
            f"placing {len(self.orders)} orders at {self.rate:.1f}/s while "
            f"{len(self.plan)} faults happen; bound {self.options.timeout:g} s"
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
            redis_restarts=self.options.redis_restarts,
            outage_partner=self.options.outage_partner if self.options.outage_seconds else "",
            settle_bound=self.options.timeout,
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
            rows = Order.objects.filter(pk__in=ids).values_list("status", flat=True)
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

    def _announce(self, record: fault_schedule.FaultRecord) -> None:
        self.say(f"t={record.at:6.1f}  FAULT {record.action}: {record.detail}")

    def _rate_over_the_schedule(self) -> float:
        span = fault_schedule.expected_span(self.plan)
        if span <= 0:
            return MAX_AUTO_RATE
        return min(MAX_AUTO_RATE, max(MIN_AUTO_RATE, self.options.orders / span))


def _sends_in_flight() -> int:
    return Send.objects.filter(status=Send.Status.IN_FLIGHT).count()
