"""The fault schedule of a chaos run, and the runner that carries it out.

`plan()` lays the faults out one after the other: worker SIGKILLs spread over the
per-queue workers (each queue's worker in turn), Redis restarts and PostgreSQL crashes
between them, and one outage of each partner (every call answered 5xx/408/429) at
different times, each longer than the partner's breaker stays open.

`FaultRunner.tick()` is called from the run's main loop. Faults never pile on each other:
one fault runs to its end (a killed worker is back and answering, a downed partner or
database is back); the next one starts a jittered gap after that at the soonest, and
only once the orders the previous one caught have all settled (or the recovery bound has
passed, when they have not). So each order is caught by one fault at most, and each
fault's recovery time is its own. A fault strikes while it has something to catch (waiting up to
`AIM_SECONDS` for it: a worker is killed with work in its hands).

An order is *caught* by a fault when, at the fault's start, it was not final and its next
step waited on what the fault hits: a worker SIGKILL catches the orders with a send
pending or in flight that this worker runs (a header send on its partner's queue; a
compensation, settle or the closing of compensations on the default queue), a partner
outage those with a send to that partner pending or in flight and every order created
while the partner was down, and a Redis restart or a PostgreSQL crash catches every
order not final (both hold every order's next step).
"""

import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from devstack.simulators.control import SimulatorControl

from .stack import ChaosStack

PARTNERS = ("inventory", "payment")
# What a fault takes, for pacing the orders only: a worker takes a few seconds to come
# back; after each fault the runner waits for the orders it caught, about this long.
EXPECTED_SECONDS = {"kill worker": 6.0, "restart redis": 1.0, "crash postgres": 2.0}
EXPECTED_RECOVERY_SECONDS = 15.0
JITTER = (0.75, 1.25)
OUTAGE_ERROR_RATE = 1.0
QUIET_CHECK_SECONDS = 1.0
# A fault waits up to this long for an order it would catch (in a killed worker's hands,
# say), so that it interrupts work rather than an idle process.
AIM_SECONDS = 10.0

T = TypeVar("T")


class Action(StrEnum):
    KILL_WORKER = "kill worker"
    RESTART_REDIS = "restart redis"
    CRASH_POSTGRES = "crash postgres"
    OUTAGE = "outage"


# A component down for a while and then back: recovery counts from its return.
LASTING = (Action.OUTAGE, Action.CRASH_POSTGRES)
# Faults that hold every order's next step.
EVERYTHING = (Action.RESTART_REDIS, Action.CRASH_POSTGRES)


@dataclass(frozen=True)
class PlannedFault:
    action: Action
    gap: float  # seconds at least after the previous fault ended (the first: the first order)
    target: str = ""  # the killed worker's role, or the partner that goes down
    seconds: float = 0.0  # how long a lasting fault keeps its component down

    def catches(self, waits_on: frozenset[str]) -> bool:
        """Whether an order whose next step waits on `waits_on` ("worker:<role>" and
        "partner:<name>" tags, recovery.waiting_on) is caught."""
        if self.action in EVERYTHING:
            return True
        kind = "worker" if self.action == Action.KILL_WORKER else "partner"
        return f"{kind}:{self.target}" in waits_on


@dataclass(frozen=True)
class FaultRecord:
    """What happened. `at`/`back_at`: seconds after the first order; `*_wall`: epoch
    seconds, to compare with the orders' timestamps."""

    action: str
    target: str
    at: float
    back_at: float  # the component was back (a new worker answering, the partner, the database)
    started_wall: float
    back_wall: float
    detail: str
    caught: frozenset[str]  # ids of the orders caught at the start (see the module's text)

    @property
    def name(self) -> str:
        return f"{self.action} {self.target}".strip()

    @property
    def lasting(self) -> bool:
        return self.action in LASTING

    @property
    def measured_from_wall(self) -> float:
        """Recovery counts from the fault itself, or from the return of what a lasting
        fault took down (an outage of N seconds cannot settle anything sooner)."""
        return self.back_wall if self.lasting else self.started_wall

    @property
    def measured_from(self) -> float:
        return self.back_at if self.lasting else self.at


def plan(
    *,
    kills: int,
    worker_roles: Sequence[str],
    redis_restarts: int,
    postgres_crashes: int,
    postgres_down_seconds: float,
    outage_partners: Sequence[str],
    outage_seconds: float,
    gap: float,
    rng: random.Random,
) -> list[PlannedFault]:
    """The faults in the order they happen: kills take the workers in turn (a shuffled
    round), Redis restarts and PostgreSQL crashes spread among them, and the outages
    spread evenly over the whole."""
    roles = list(worker_roles)
    rng.shuffle(roles)
    kill_faults = [
        PlannedFault(Action.KILL_WORKER, 0.0, roles[index % len(roles)]) for index in range(kills)
    ]
    restarts = [PlannedFault(Action.RESTART_REDIS, 0.0)] * redis_restarts
    crashes = [PlannedFault(Action.CRASH_POSTGRES, 0.0, seconds=postgres_down_seconds)]
    faults = _interleave(kill_faults, _interleave(restarts, crashes * postgres_crashes))
    outages = [PlannedFault(Action.OUTAGE, 0.0, p, outage_seconds) for p in outage_partners]
    for index, outage in enumerate(outages, start=1):
        faults.insert(round(len(faults) * index / (len(outages) + 1)), outage)
    return [dataclasses.replace(fault, gap=gap * rng.uniform(*JITTER)) for fault in faults]


def expected_span(faults: Sequence[PlannedFault]) -> float:
    """Roughly how long `faults` take, the wait for each one's orders to settle included."""
    return sum(
        fault.gap + fault.seconds + EXPECTED_SECONDS.get(fault.action, 0.0)
        + EXPECTED_RECOVERY_SECONDS
        for fault in faults
    )  # fmt: skip


def _interleave(many: list[T], few: list[T]) -> list[T]:
    """`few` spread evenly among `many`: [k, k, r, k] rather than [k, k, k, r]."""
    if len(many) < len(few):
        many, few = few, many
    if not many or not few:
        return many + few
    merged = list(many)
    step = (len(many) + 1) / (len(few) + 1)
    for index, item in enumerate(few, start=1):
        merged.insert(round(step * index) + index - 1, item)
    return merged


class FaultRunner:
    """Carries out a plan against a ChaosStack; `records` says what happened.

    `clock()` is seconds since the first order; `waiting_on()` maps every order not final
    to what its next step waits on (the snapshot taken at each fault's start);
    `unsettled(record)` counts the orders a fault caught that are not final yet (None when
    it cannot tell); `announce(line)` is told of each fault as it starts and ends.
    """

    def __init__(
        self,
        stack: ChaosStack,
        faults: list[PlannedFault],
        *,
        clock: Callable[[], float],
        waiting_on: Callable[[], dict[str, frozenset[str]]],
        unsettled: Callable[[FaultRecord], int | None],
        announce: Callable[[str], None],
        recovery_bound: float,
    ) -> None:
        self.stack = stack
        self.pending = list(faults)
        self.clock = clock
        self.waiting_on = waiting_on
        self.unsettled = unsettled
        self.announce = announce
        self.recovery_bound = recovery_bound
        self.records: list[FaultRecord] = []
        # A lasting fault under way: (fault, started at, started wall, caught)
        self._down: tuple[PlannedFault, float, float, frozenset[str]] | None = None
        self._quiet_checked_at = -QUIET_CHECK_SECONDS
        self._quiet = True
        self._aim_started: float | None = None

    @property
    def done(self) -> bool:
        return not self.pending and self._down is None

    def remaining_span(self) -> float:
        """Roughly how long the faults still to come take (for pacing the orders)."""
        span = expected_span(self.pending)
        if self._down is not None:
            fault, started, _, _ = self._down
            span += max(0.0, started + fault.seconds - self.clock())
        return span

    def tick(self) -> None:
        """Run whatever is due now; returns at once when nothing is."""
        now = self.clock()
        if self._down is not None:
            fault, started, _, _ = self._down
            if now >= started + fault.seconds:
                self._bring_back()
            return
        if not self.pending:
            return
        previous = self.records[-1].back_at if self.records else 0.0
        if now < previous + self.pending[0].gap or not self._previous_is_quiet(now):
            return
        waiting = self._aim(self.pending[0], now)
        if waiting is not None:
            self._begin(self.pending.pop(0), waiting)

    def abandon(self) -> None:
        """The run is over early: bring back whatever is down, drop the rest."""
        self.pending.clear()
        if self._down is not None:
            self._bring_back()

    # --- between faults ----------------------------------------------------------------

    def _previous_is_quiet(self, now: float) -> bool:
        """The orders the previous fault caught have all settled, or the recovery bound
        has passed since it (then the verdict fails that fault anyway)."""
        if not self.records or self._quiet:
            return True
        last = self.records[-1]
        if now >= last.measured_from + self.recovery_bound:
            self._quiet = True
        elif now - self._quiet_checked_at >= QUIET_CHECK_SECONDS:
            self._quiet_checked_at = now
            self._quiet = self.unsettled(last) == 0
        return self._quiet

    def _aim(self, fault: PlannedFault, now: float) -> dict[str, frozenset[str]] | None:
        """The snapshot to strike with: one in which `fault` catches some order, or any
        once it has waited `AIM_SECONDS`; None: not yet."""
        if self._aim_started is None:
            self._aim_started = now
        waiting = self.waiting_on()
        caught_some = any(fault.catches(waits_on) for waits_on in waiting.values())
        if caught_some or now - self._aim_started >= AIM_SECONDS:
            return waiting
        return None

    # --- the faults --------------------------------------------------------------------

    def _begin(self, fault: PlannedFault, waiting: dict[str, frozenset[str]]) -> None:
        caught = frozenset(order for order, waits_on in waiting.items() if fault.catches(waits_on))
        started, started_wall = self.clock(), time.time()
        self._quiet = False
        self._aim_started = None
        if fault.action in LASTING:
            self._take_down(fault)
            self._down = (fault, started, started_wall, caught)
            self.announce(
                f"t={started:6.1f}  FAULT {fault.action} {fault.target}".rstrip()
                + f": down for {fault.seconds:g} s, {len(caught)} order(s) caught"
            )
            return
        if fault.action == Action.KILL_WORKER:
            detail = self._kill_worker(fault.target)
        else:
            detail = self._restart_redis()
        self._record(fault, started, started_wall, caught, detail)

    def _kill_worker(self, role: str) -> str:
        killed_at = time.monotonic()
        pids = self.stack.kill_worker(role)
        worker = self.stack.worker(role)
        self.stack.start_queue_worker(worker)
        back_in = time.monotonic() - killed_at
        return (
            f"SIGKILL to the {worker.queue} worker's process group "
            f"(pid {', '.join(map(str, pids))}); a new one answered {back_in:.1f} s later"
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
            "(results, breaker and rate-limit state)"
        )

    def _take_down(self, fault: PlannedFault) -> None:
        if fault.action == Action.OUTAGE:
            self._control(fault.target).configure(error_rate=OUTAGE_ERROR_RATE)
        else:
            self.stack.crash_postgres()

    def _bring_back(self) -> None:
        fault, started, started_wall, caught = self._down
        down_for = self.clock() - started
        if fault.action == Action.OUTAGE:
            self._control(fault.target).configure(error_rate=self.stack.faults.error_rate)
            detail = f"{fault.target} answered every call 5xx/408/429 for {down_for:.1f} s"
        else:
            restarting = time.monotonic()
            self.stack.start_postgres()
            detail = (
                f"pg_ctl stop -m immediate, down {down_for:.1f} s, then started again: "
                f"crash recovery and first connection took {time.monotonic() - restarting:.1f} s"
            )
        self._down = None
        self._record(fault, started, started_wall, caught, detail)

    def _record(
        self,
        fault: PlannedFault,
        started: float,
        started_wall: float,
        caught: frozenset[str],
        detail: str,
    ) -> None:
        record = FaultRecord(
            action=str(fault.action),
            target=fault.target,
            at=started,
            back_at=self.clock(),
            started_wall=started_wall,
            back_wall=time.time(),
            detail=detail,
            caught=caught,
        )
        self.records.append(record)
        when, verb = (record.back_at, "back") if record.lasting else (record.at, "FAULT")
        self.announce(f"t={when:6.1f}  {verb} {record.name}: {detail}; {len(caught)} caught")

    def _control(self, partner: str) -> SimulatorControl:
        url = self.stack.inventory_url if partner == "inventory" else self.stack.payment_url
        return SimulatorControl(url)
