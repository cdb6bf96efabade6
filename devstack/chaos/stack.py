"""The demo's stack on the README's production layout, made to be shot at.

`ChaosStack` is the demo's `Stack` with these differences:

* The workers are the production layout: one thread-pool worker per queue
  (`QUEUE_WORKERS`: `-Q api.inventory`, `-Q api.payment`, `-Q default`), the web server is
  gunicorn (gthread), and beat runs the sweeper; `kill_worker(role)` SIGKILLs one
  worker's whole process group, as the OOM killer would, and `start_queue_worker` brings
  a new one up on the same queue.
* Redis is a `redis-server` of the run's own on a free port, with no persistence at all
  (`--save "" --appendonly no`), so `restart_redis()` loses every message queued in it.
* PostgreSQL, unless the run was given a database, is a server of the run's own
  (postgres.py), so `crash_postgres()` can stop it with `pg_ctl stop -m immediate`.
* The children's environment is built from a clean slate: none of the parent's dualsend
  settings leak in (the test suite's, say, whose breaker never trips), only the short
  partner timings below and the run's `--setting`s. The recovery levers (lease margin,
  sweep period and grace) are the product's own defaults: the run measures them.
"""

import contextlib
import signal
import subprocess
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
from devstack.stack.services import (
    QUEUE_WORKERS,
    QUEUES,
    STOP_TIMEOUT,
    Faults,
    QueueWorker,
    Stack,
    partner_settings,
)

from .postgres import PrivatePostgres

# The simulators' misbehaviour: about 20 % random errors, 5 % dropped after the effect,
# latency up to 300 ms, and a few declines on top of the orders meant to be declined.
CHAOS_FAULTS = Faults(latency_ms="20-300", error_rate=0.2, decline_rate=0.02, drop_rate=0.05)

CHAOS_SETTINGS = {
    "DJANGO_DEBUG": "1",
    "DUALSEND_COMPENSATION_MAX_ATTEMPTS": "10",
}
# Partner calls sized to the simulators (at most 300 ms each), so that a run of a
# thousand orders settles in minutes; the breaker trips within an outage.
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
POSTGRES_READY_SECONDS = 60
REDIS = "redis"
POSTGRES = "postgres"
WEB = "web"
RESTART_SUFFIX = "."  # worker-payment, worker-payment.2, …: each start keeps its own log


@dataclass
class ChaosStack(Stack):
    faults: Faults = field(default_factory=lambda: CHAOS_FAULTS)
    database_url: str = ""
    amqp_url: str = ""  # set: RabbitMQ is the broker, Redis keeps results and shared state
    seed: int | None = None
    redis_port: int = 0
    postgres: PrivatePostgres | None = None  # None: the run was given its database
    settings: dict[str, str] = field(default_factory=dict)  # --setting NAME=VALUE
    workers: tuple[QueueWorker, ...] = QUEUE_WORKERS
    starts: dict[str, int] = field(default_factory=dict)  # role → how many times it was started

    # --- where things are ------------------------------------------------------------

    @property
    def broker_url(self) -> str:
        return self.amqp_url or self.redis_url

    @property
    def broker_is_redis(self) -> bool:
        return not self.amqp_url

    def worker(self, role: str) -> QueueWorker:
        return next(worker for worker in self.workers if worker.role == role)

    def role_children(self, role: str) -> list[Child]:
        return [child for child in self.children if _role(child.name) == role]

    def exited_on_their_own(self) -> list[Child]:
        """Children that exited without being told to (a killed one is no longer listed)."""
        return [child for child in self.children if child.exit_code is not None]

    # --- PostgreSQL of its own ----------------------------------------------------------

    def start_postgres(self) -> None:
        """The private server, on its port; returns once it accepts connections."""
        if self.postgres is None:
            return
        child = self._start(POSTGRES, self.postgres.server_command(), user=self.postgres.user)
        wait_until_ready(
            child, self.postgres.answers, timeout=POSTGRES_READY_SECONDS, what="postgres"
        )

    def crash_postgres(self) -> list[int]:
        """`pg_ctl stop -m immediate`, and the server's processes reaped; returns their pids."""
        servers = self.role_children(POSTGRES)
        self.postgres.crash()
        for child in servers:
            try:
                child.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.signal_group(signal.SIGKILL)
                child.process.wait()
            self.children.remove(child)
        return [child.process.pid for child in servers]

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
        child = self._start(REDIS, command)
        wait_until_ready(child, self._redis_answers, timeout=REDIS_READY_SECONDS, what="redis")
        return f"own redis-server, no persistence, port {self.redis_port}"

    def restart_redis(self) -> dict[str, int | None]:
        """SIGKILL Redis and start it again on the same port: everything in it is gone.

        Returns what was lost: the messages waiting in the broker's queues or held
        unacknowledged, and how many keys in all (results, breakers).
        """
        lost = self.redis_contents()
        for child in self.role_children(REDIS):
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

    # --- the workers -------------------------------------------------------------------

    def start_workers(self) -> None:
        """One worker per queue, the README's production layout."""
        self.start_queue_workers(self.workers)

    def kill_worker(self, role: str) -> list[int]:
        """SIGKILL one worker's process group: no warm shutdown, no acknowledgement."""
        workers = self.role_children(f"worker-{role}")
        for child in workers:
            self._kill(child)
        return [child.process.pid for child in workers]

    # --- stopping ----------------------------------------------------------------------

    def stop(self) -> list[str]:
        """The web server first (no new orders), then the rest, Redis and PostgreSQL last:
        the workers and beat shut down warm while their broker and database still answer.
        PostgreSQL gets a fast shutdown (SIGINT to the postmaster: sessions are ended)."""
        last = (REDIS, POSTGRES)
        by_stage = (
            [child for child in self.children if _role(child.name) == WEB],
            [child for child in self.children if _role(child.name) not in (WEB, *last)],
            [child for child in self.children if _role(child.name) == REDIS],
        )
        killed = []
        for stage in by_stage:
            killed += stop_children(stage, timeout=STOP_TIMEOUT)
        killed += self._stop_postgres()
        self.children = []
        return killed

    def _stop_postgres(self) -> list[str]:
        killed = []
        for child in self.role_children(POSTGRES):
            if child.exit_code is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGINT)
            try:
                child.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.signal_group(signal.SIGKILL)
                child.process.wait()
                killed.append(child.name)
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
            | self.settings
        )

    def simulator_arguments(self) -> list[str]:
        seed = [] if self.seed is None else ["--seed", str(self.seed)]
        return [*super().simulator_arguments(), *seed]

    def _start(self, role: str, command: list[str], user: str | None = None) -> Child:
        """Start a child named after its role and how often it was started (worker-default,
        worker-default.2, …), so each start keeps its own log."""
        self.starts[role] = self.starts.get(role, 0) + 1
        count = self.starts[role]
        name = role if count == 1 else f"{role}{RESTART_SUFFIX}{count}"
        # Redis and PostgreSQL start before the ports of the others are known, and need none
        # of it; PostgreSQL runs in its own directory (it may be another user's).
        own_servers = role in (REDIS, POSTGRES)
        env = clean_environment() if own_servers else self.child_environment()
        cwd = self.postgres.root if role == POSTGRES else self.base_dir
        child = start_child(name, command, env=env, cwd=cwd, log_dir=self.log_dir, user=user)
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
    return child_name.split(RESTART_SUFFIX, 1)[0]
