"""The fault schedule of a chaos run, and the runner that carries it out.

`plan()` lays the faults out one after the other, a jittered gap apart: the worker
killed, one partner down (every call answered 5xx) for longer than its breaker stays
open, the worker killed again, Redis restarted, and so on, spread so that orders keep
arriving during every one of them. `FaultRunner.tick()` is called from the run's main
loop: it starts the next fault once its gap has passed and ends the outage on time.
Each fault runs to completion (a killed worker is back and answering) before the next
gap starts, so faults never pile up and the outage always lasts what it says.
"""

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from devstack.simulators.control import SimulatorControl

from .stack import ChaosStack

PARTNERS = ("inventory", "payment")
# What a fault takes, for planning only: a worker takes a few seconds to come back.
EXPECTED_SECONDS = {"kill worker": 6.0, "restart redis": 1.0}
JITTER = (0.75, 1.25)
OUTAGE_ERROR_RATE = 1.0


class Action(StrEnum):
    KILL_WORKER = "kill worker"
    RESTART_REDIS = "restart redis"
    OUTAGE = "outage"


@dataclass(frozen=True)
class PlannedFault:
    action: Action
    gap: float  # seconds after the previous fault ended (the first: after the first order)
    partner: str = ""  # the outage's
    seconds: float = 0.0  # the outage's length


@dataclass(frozen=True)
class FaultRecord:
    """What happened: `at` seconds after the first order, for `took` seconds."""

    action: str
    at: float
    took: float
    detail: str


def plan(
    *,
    kills: int,
    redis_restarts: int,
    outage_seconds: float,
    outage_partner: str,
    gap: float,
    rng: random.Random,
) -> list[PlannedFault]:
    """The faults in the order they happen: kills and Redis restarts alternate, the
    outage comes second (after a first kill, while plenty of orders are in flight)."""
    disruptions = _interleave([Action.KILL_WORKER] * kills, [Action.RESTART_REDIS] * redis_restarts)
    faults = [PlannedFault(action, gap * rng.uniform(*JITTER)) for action in disruptions]
    if outage_seconds > 0:
        outage = PlannedFault(
            Action.OUTAGE, gap * rng.uniform(*JITTER), outage_partner, outage_seconds
        )
        faults.insert(min(1, len(faults)), outage)
    return faults


def expected_span(faults: list[PlannedFault]) -> float:
    """Roughly how long the schedule takes, from the first order to the last fault."""
    return sum(
        fault.gap + fault.seconds + EXPECTED_SECONDS.get(fault.action, 0.0) for fault in faults
    )


def _interleave(many: list[Action], few: list[Action]) -> list[Action]:
    """`few` spread evenly among `many`: [k, k, r, k] rather than [k, k, k, r]."""
    if not many or not few:
        return many + few
    merged = list(many)
    step = (len(many) + 1) / (len(few) + 1)
    for index, item in enumerate(few, start=1):
        merged.insert(round(step * index) + index - 1, item)
    return merged


class FaultRunner:
    """Carries out a plan against a ChaosStack; `records` says what happened.

    `clock()` is seconds since the first order; `sends_in_flight()` counts the sends a
    kill interrupts; `announce(record)` is told of each fault as it happens.
    """

    def __init__(
        self,
        stack: ChaosStack,
        faults: list[PlannedFault],
        *,
        clock: Callable[[], float],
        sends_in_flight: Callable[[], int],
        announce: Callable[[FaultRecord], None],
    ) -> None:
        self.stack = stack
        self.pending = list(faults)
        self.clock = clock
        self.sends_in_flight = sends_in_flight
        self.announce = announce
        self.records: list[FaultRecord] = []
        self.previous_ended = 0.0
        # (fault, started_at) while a partner is down
        self._outage: tuple[PlannedFault, float] | None = None

    @property
    def done(self) -> bool:
        return not self.pending and self._outage is None

    def count(self, action: str) -> int:
        return sum(record.action == action for record in self.records)

    def tick(self) -> None:
        """Run whatever is due now; returns at once when nothing is."""
        now = self.clock()
        if self._outage is not None:
            fault, started = self._outage
            if now >= started + fault.seconds:
                self._end_outage(fault, started)
            return
        if self.pending and now >= self.previous_ended + self.pending[0].gap:
            self._run(self.pending.pop(0))

    def abandon(self) -> None:
        """The run is over early: bring a downed partner back, drop the rest."""
        self.pending.clear()
        if self._outage is not None:
            self._end_outage(*self._outage)

    # --- the faults --------------------------------------------------------------------

    def _run(self, fault: PlannedFault) -> None:
        started = self.clock()
        if fault.action == Action.OUTAGE:
            self._begin_outage(fault, started)
            return
        if fault.action == Action.KILL_WORKER:
            detail = self._kill_worker()
        else:
            detail = self._restart_redis()
        self._record(fault.action, started, detail)

    def _kill_worker(self) -> str:
        in_flight = self.sends_in_flight()
        killed_at = time.monotonic()
        pids = self.stack.kill_worker()
        self.stack.start_worker()
        back_in = time.monotonic() - killed_at
        return (
            f"SIGKILL to the worker's process group (pid {', '.join(map(str, pids))}) with "
            f"{in_flight} send(s) in flight; a new worker answered {back_in:.1f} s later"
        )

    def _restart_redis(self) -> str:
        killed_at = time.monotonic()
        lost = self.stack.restart_redis()
        back_in = time.monotonic() - killed_at
        if self.stack.broker_is_redis:
            what = f"{lost['messages']} queued or unacknowledged message(s) and "
        else:
            what = ""
        return (
            f"SIGKILL to redis-server (no persistence), started again on port "
            f"{self.stack.redis_port} {back_in:.1f} s later: {what}{lost['keys']} key(s) lost "
            "(results, chord counters, breaker and rate-limit state)"
        )

    def _begin_outage(self, fault: PlannedFault, started: float) -> None:
        self._control(fault.partner).configure(error_rate=OUTAGE_ERROR_RATE)
        self._outage = (fault, started)
        self._record(
            Action.OUTAGE,
            started,
            f"{fault.partner} answers every call 5xx/408/429 for {fault.seconds:g} s",
            took=fault.seconds,
        )

    def _end_outage(self, fault: PlannedFault, started: float) -> None:
        self._control(fault.partner).configure(error_rate=self.stack.faults.error_rate)
        self._outage = None
        self.previous_ended = self.clock()
        self.announce(
            FaultRecord("outage over", self.previous_ended, 0.0, f"{fault.partner} is back")
        )

    def _record(
        self, action: Action, started: float, detail: str, took: float | None = None
    ) -> None:
        ended = self.clock()
        record = FaultRecord(str(action), started, ended - started if took is None else took,
                             detail)  # fmt: skip
        self.records.append(record)
        self.previous_ended = ended
        self.announce(record)

    def _control(self, partner: str) -> SimulatorControl:
        url = self.stack.inventory_url if partner == "inventory" else self.stack.payment_url
        return SimulatorControl(url)
