"""The shapes of load the bench offers a system (systems.py): one order at a time, and a
steady rate.

A burst is each system's own (`System.burst`): how a client hands over many orders at
once differs from one system to the next. These two are the same for all three.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .results import Sample
from .systems import System, in_threads

START_DELAY_SECONDS = 0.05


def one_at_a_time(
    system: System,
    count: int,
    *,
    phase: str,
    deadline: float,
    advance: Callable[[], None] | None = None,
) -> list[Sample]:
    """Each order's round trip, the next one only once the last is done."""
    samples = []
    for number in range(count):
        samples.append(system.round_trip(number, phase, deadline))
        if advance:
            advance()
    return samples


@dataclass
class Paced:
    samples: list[Sample]
    late_ms: float  # the latest an order was handed over after its due time


def paced(
    system: System, count: int, *, rate: float, threads: int, phase: str, deadline: float
) -> Paced:
    """Order n is due `n / rate` seconds after the start, whatever the others do (an open
    loop: a slow order does not slow the arrivals); `threads` round trips at most at once.
    An order that finds every thread busy starts late: `late_ms` says how late."""
    start = time.monotonic() + START_DELAY_SECONDS
    late = [0.0]
    lock = threading.Lock()

    def one(number: int) -> Sample:
        due = start + number / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        with lock:
            late[0] = max(late[0], (time.monotonic() - due) * 1000)
        return system.round_trip(number, phase, deadline)

    samples = in_threads(threads, one, range(count))
    return Paced(samples, late[0])
