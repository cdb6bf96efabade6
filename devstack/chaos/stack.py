"""The demo's stack, made to be shot at: its own redis-server, and handles for the faults.

`ChaosStack` is the demo's `Stack` with three differences:

* Redis is a `redis-server` of the run's own on a free port, with no persistence at all
  (`--save "" --appendonly no`), so `restart_redis()` loses every message queued in it.
* `kill_worker()` SIGKILLs the worker's whole process group, as the OOM killer would,
  and `start_worker()` brings a new one up on the same queues.
* The children's environment is built from a clean slate: none of the parent's dualsend
  settings leak in (the test suite's, say, whose breaker never trips), only the short
  timings of the run below.
"""

import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis

from devstack.stack.processes import (
    Child,
    clean_environment,
    free_port,
    redis_server_binary,
    start_child,
    stop_children,
    wait_until_ready,
)
from devstack.stack.services import QUEUES, STOP_TIMEOUT, Faults, Stack, partner_settings

# The simulators' misbehaviour: about 20 % random errors, 5 % dropped after the effect,
# latency up to 300 ms, and a few declines on top of the orders meant to be declined.
CHAOS_FAULTS = Faults(latency_ms="20-300", error_rate=0.2, decline_rate=0.02, drop_rate=0.05)

# Short timings, so that a run of a few hundred orders settles in a couple of minutes.
CHAOS_SETTINGS = {
    "DJANGO_DEBUG": "1",
    "DUALSEND_SWEEP_EVERY_SECONDS": "2",
    # Work 10 s overdue counts as lost: longer than a worker restart, so the sweeper does
    # not race the chord messages that survive a kill.
    "DUALSEND_SWEEP_GRACE_SECONDS": "10",
    "DUALSEND_LEASE_MARGIN_SECONDS": "3",
    "DUALSEND_COMPENSATION_MAX_ATTEMPTS": "10",
}
PARTNER_SETTINGS = {
    "CONNECT_TIMEOUT": "1",
    "READ_TIMEOUT": "2",
    "BACKOFF_BASE": "0.2",
    "BACKOFF_MAX": "2",
    "DEADLINE": "60",
    "BREAKER_MIN_CALLS": "10",
    "BREAKER_WINDOW": "10",
    "BREAKER_OPEN_SECONDS": "4",
}
BREAKER_OPEN_SECONDS = float(PARTNER_SETTINGS["BREAKER_OPEN_SECONDS"])

REDIS_READY_SECONDS = 10


@dataclass
class ChaosStack(Stack):
    faults: Faults = field(default_factory=lambda: CHAOS_FAULTS)
    database_url: str = ""
    amqp_url: str = ""  # set: RabbitMQ is the broker, Redis keeps results and shared state
    seed: int | None = None
    redis_port: int = 0
    starts: dict[str, int] = field(default_factory=dict)  # role → how many times it was started

    # --- where things are ------------------------------------------------------------

    @property
    def broker_url(self) -> str:
        return self.amqp_url or self.redis_url

    @property
    def broker_is_redis(self) -> bool:
        return not self.amqp_url

    @property
    def worker_name(self) -> str:
        return f"chaos-{os.getpid()}@{socket.gethostname()}"

    def role_children(self, role: str) -> list[Child]:
        return [child for child in self.children if _role(child.name) == role]

    def exited_on_their_own(self) -> list[Child]:
        """Children that exited without being told to (a killed one is no longer listed)."""
        return [child for child in self.children if child.exit_code is not None]

    # --- Redis of its own --------------------------------------------------------------

    def start_redis(self) -> str:
        """A redis-server that keeps nothing on disk, on a port of its own."""
        self.redis_port = self.redis_port or free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        command = [
            redis_server_binary(),
            "--port", str(self.redis_port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.log_dir),
        ]  # fmt: skip
        child = self._start("redis", command)
        wait_until_ready(child, self._redis_answers, timeout=REDIS_READY_SECONDS, what="redis")
        return f"own redis-server, no persistence, port {self.redis_port}"

    def restart_redis(self) -> dict[str, int | None]:
        """SIGKILL Redis and start it again on the same port: everything in it is gone.

        Returns what was lost: the messages waiting in the broker's queues or held
        unacknowledged, and how many keys in all (results, chord counters, breakers).
        """
        lost = self.redis_contents()
        for child in self.role_children("redis"):
            self._kill(child)
        self.start_redis()
        return lost

    def redis_contents(self) -> dict[str, int | None]:
        """{"messages": queued + unacknowledged (Redis broker only), "keys": all keys}."""
        client = self._redis_client()
        try:
            messages = 0
            if self.broker_is_redis:
                messages = sum(client.llen(queue) for queue in QUEUES.split(","))
                messages += client.hlen("unacked")
            return {"messages": messages, "keys": client.dbsize()}
        except redis.RedisError:
            return {"messages": None, "keys": None}
        finally:
            client.close()

    # --- the worker --------------------------------------------------------------------

    def kill_worker(self) -> list[int]:
        """SIGKILL the worker's process group: no warm shutdown, no acknowledgement."""
        workers = self.role_children("worker")
        for child in workers:
            self._kill(child)
        return [child.process.pid for child in workers]

    # --- stopping ----------------------------------------------------------------------

    def stop(self) -> list[str]:
        """The web server first (no new orders), then the rest, Redis last: the worker
        and beat shut down warm while their broker still answers."""
        by_stage = (
            [child for child in self.children if _role(child.name) == "web"],
            [child for child in self.children if _role(child.name) not in ("web", "redis")],
            [child for child in self.children if _role(child.name) == "redis"],
        )
        killed = []
        for stage in by_stage:
            killed += stop_children(stage, timeout=STOP_TIMEOUT)
        self.children = []
        return killed

    # --- helpers -------------------------------------------------------------------------

    def child_environment(self) -> dict[str, str]:
        return (
            clean_environment()
            | CHAOS_SETTINGS
            | {
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_url,
                "CELERY_BROKER_URL": self.broker_url,
            }
            | self.stack_environment()
            | partner_settings(PARTNER_SETTINGS)
        )

    def simulator_arguments(self) -> list[str]:
        seed = [] if self.seed is None else ["--seed", str(self.seed)]
        return [*super().simulator_arguments(), *seed]

    def _start(self, role: str, command: list[str]) -> Child:
        """Start a child named after its role and how often it was started (worker,
        worker-2, …), so each start keeps its own log."""
        self.starts[role] = self.starts.get(role, 0) + 1
        name = role if self.starts[role] == 1 else f"{role}-{self.starts[role]}"
        # Redis starts before the ports of the others are known, and needs none of it.
        env = clean_environment() if role == "redis" else self.child_environment()
        child = start_child(name, command, env=env, cwd=self.base_dir, log_dir=self.log_dir)
        self.children.append(child)
        return child

    def _kill(self, child: Child) -> None:
        child.signal_group(signal.SIGKILL)
        child.process.wait()
        self.children.remove(child)

    def _redis_client(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, socket_timeout=2, socket_connect_timeout=2)

    def _redis_answers(self) -> bool:
        client = self._redis_client()
        try:
            return client.ping()
        finally:
            client.close()


def _role(child_name: str) -> str:
    return child_name.split("-", 1)[0]


@contextlib.contextmanager
def stopped_on_exit(stack: ChaosStack) -> Iterator[ChaosStack]:
    """Stop every child of `stack` however the block ends."""
    try:
        yield stack
    finally:
        stack.stop()
