"""What the bench's processes cost: CPU by process kind, peak memory, database connections.

* `Processes` finds every process of the stack by kind, again at each look (gunicorn's
  worker, PostgreSQL's backends come and go): each child's whole process tree; with a
  PostgreSQL server the bench was given (not its own), the backends serving the bench's
  database, by the pids `pg_stat_activity` names.
* `cpu_snapshot` and `cpu_used`: user + system CPU seconds of each process, before and
  after a phase; the difference, by kind, is what the phase cost.
* `Sampler`: a background thread that, every `SAMPLE_SECONDS`, reads each process's RSS
  (and its PSS every `PSS_EVERY` samples: the proportional share of pages it shares with
  others, so that a sum over processes counts a shared page once) and the number of
  connections to the bench's database, and keeps the peaks of the phase at hand.
"""

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import psutil
import psycopg

from devstack.stack.processes import Child

SAMPLE_SECONDS = 0.2
PSS_EVERY = 5  # samples: PSS reads /proc/<pid>/smaps_rollup, RSS only /proc/<pid>/statm
# Which kinds make each system's memory (Redis serves both).
SYSTEM_KINDS = {
    "dualsend": ("web", "workers", "redis", "postgres"),
    "bare chord": ("bare", "redis"),
}
CONNECTIONS_SQL = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
)

Key = tuple[str, int, float]  # kind, pid, create time: a pid reused is another process


@dataclass(frozen=True)
class Proc:
    kind: str
    name: str  # the child's name for its root ("web"), "<child>/<pid>" for the others
    process: psutil.Process

    @property
    def key(self) -> Key:
        return (self.kind, self.process.pid, self.process.create_time())


class Connections:
    """The bench's database as PostgreSQL sees it: the client backends connected to it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: psycopg.Connection | None = None
        self._lock = threading.Lock()  # the sampler's thread and the main one share it

    def pids(self) -> list[int] | None:
        """The backends serving the database now (not this one); None if it does not answer."""
        with self._lock:
            return self._pids()

    def _pids(self) -> list[int] | None:
        try:
            if self._connection is None or self._connection.closed:
                self._connection = psycopg.connect(self.url, autocommit=True, connect_timeout=2)
            rows = self._connection.execute(CONNECTIONS_SQL).fetchall()
        except psycopg.Error:
            self._close()
            return None
        return [row[0] for row in rows]

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(psycopg.Error):
                self._connection.close()
        self._connection = None


class Processes:
    """Every process of the stack, by kind (see stack.BenchStack.children_by_kind).

    `backends`: a PostgreSQL server the bench does not own; its backends serving the
    bench's database are the "postgres" kind (else the server is one of the children)."""

    def __init__(
        self,
        children_by_kind: Callable[[], Mapping[str, list[Child]]],
        backends: Connections | None = None,
    ) -> None:
        self.children_by_kind = children_by_kind
        self.backends = backends

    def current(self) -> list[Proc]:
        found = []
        for kind, children in self.children_by_kind().items():
            for child in children:
                found += _tree(kind, child)
        if self.backends is not None:
            for pid in self.backends.pids() or []:
                with contextlib.suppress(psutil.Error):
                    found.append(Proc("postgres", f"postgres/{pid}", psutil.Process(pid)))
        return found

    def close(self) -> None:
        if self.backends is not None:
            self.backends.close()


def _tree(kind: str, child: Child) -> list[Proc]:
    try:
        root = psutil.Process(child.process.pid)
        descendants = root.children(recursive=True)
    except psutil.Error:
        return []
    return [Proc(kind, child.name, root)] + [
        Proc(kind, f"{child.name}/{process.pid}", process) for process in descendants
    ]


# --- CPU -------------------------------------------------------------------------------------


def cpu_snapshot(processes: list[Proc]) -> dict[Key, float]:
    """Each process's CPU seconds so far (user + system)."""
    snapshot = {}
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            times = proc.process.cpu_times()
            snapshot[proc.key] = times.user + times.system
    return snapshot


def cpu_used(before: Mapping[Key, float], after: Mapping[Key, float]) -> dict[str, float]:
    """CPU seconds spent between two snapshots, by kind. A process born in between counts
    from zero; one gone in between is lost (the bench's processes do not come and go)."""
    used: dict[str, float] = {}
    for key, seconds in after.items():
        kind = key[0]
        used[kind] = used.get(kind, 0.0) + max(0.0, seconds - before.get(key, 0.0))
    return used


# --- memory and connections ------------------------------------------------------------------


@dataclass
class Peaks:
    """The highest values seen while one phase ran."""

    rss: dict[str, int] = field(default_factory=dict)  # process name → bytes
    kinds: dict[str, str] = field(default_factory=dict)  # process name → kind
    together: dict[str, int] = field(default_factory=dict)  # system → bytes, PSS summed
    connections: int | None = None
    samples: int = 0

    def take(self, rss: Mapping[str, int], kinds: Mapping[str, str]) -> None:
        for name, value in rss.items():
            self.rss[name] = max(value, self.rss.get(name, 0))
        self.kinds.update(kinds)
        self.samples += 1

    def take_together(self, system: str, value: int) -> None:
        self.together[system] = max(value, self.together.get(system, 0))

    def take_connections(self, count: int) -> None:
        self.connections = max(count, self.connections or 0)


def merge(peaks: list[Peaks]) -> Peaks:
    """The peaks of several phases as one."""
    merged = Peaks()
    for one in peaks:
        merged.take(one.rss, one.kinds)
        for system, value in one.together.items():
            merged.take_together(system, value)
        if one.connections is not None:
            merged.take_connections(one.connections)
    return merged


class Sampler:
    """Samples memory and connections in a thread of its own, into the current phase's
    `Peaks` (`with sampler.phase("dualsend burst 1000") as peaks: ...`)."""

    def __init__(self, processes: Processes, connections: Connections | None) -> None:
        self.processes = processes
        self.connections = connections
        self._current: Peaks | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self.connections is not None:
            self.connections.close()
        self.processes.close()

    @contextlib.contextmanager
    def phase(self) -> Iterator[Peaks]:
        peaks = Peaks()
        with self._lock:
            self._current = peaks
        try:
            yield peaks
        finally:
            with self._lock:
                self._current = None

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            with self._lock:
                peaks = self._current
            if peaks is not None:  # PSS at each phase's first sample, then every PSS_EVERY
                self.sample(peaks, with_pss=peaks.samples % PSS_EVERY == 0)

    def sample(self, peaks: Peaks, *, with_pss: bool) -> None:
        if self.connections is not None:
            pids = self.connections.pids()
            if pids is not None:
                peaks.take_connections(len(pids))
        rss: dict[str, int] = {}
        kinds: dict[str, str] = {}
        pss_by_kind: dict[str, int] = {}
        for proc in self.processes.current():
            with contextlib.suppress(psutil.Error):
                if with_pss:
                    memory = proc.process.memory_full_info()
                    pss = getattr(memory, "pss", memory.rss)
                    pss_by_kind[proc.kind] = pss_by_kind.get(proc.kind, 0) + pss
                else:
                    memory = proc.process.memory_info()
                rss[proc.name] = memory.rss
                kinds[proc.name] = proc.kind
        peaks.take(rss, kinds)
        if with_pss:
            for system, system_kinds in SYSTEM_KINDS.items():
                peaks.take_together(system, sum(pss_by_kind.get(k, 0) for k in system_kinds))


def wait_a_moment(seconds: float) -> None:
    """A pause between phases, so that one's tail is not the next one's cost."""
    time.sleep(seconds)
