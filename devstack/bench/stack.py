"""The bench's stack: the README's production layout, fault-free partners, and the bare chord.

`BenchStack` is the chaos run's `ChaosStack` (its own `redis-server`, a PostgreSQL server
of its own unless given a database, gunicorn gthread, one worker per queue, beat, the
stopping order) with these differences:

* the simulators inject no fault and answer after a constant latency per partner
  (`run_partners --latency-ms` sets both; `POST /_sim/config` then sets each one);
* dualsend's workers are started exactly as README.md tells users to run them
  (layout.py): no --pool or --concurrency unless the bench's option overrides them;
* the bare chord's workers (`celery -A bare_chord worker`, one per `bare.*` queue) run
  beside them on the same Redis, with the same processes, pool and concurrency;
* our rate limits, the client rate limit and the simulators' are far above what the
  bench can send, so no call is ever put off and the figures measure dualsend, not a
  limiter; every client thread may hold a long poll (`DUALSEND_MAX_WAITERS`);
* the children's environment is a clean slate with the product's defaults: none of the
  parent's dualsend settings leak in, but the worker pool and concurrency variables,
  which the bench also reads (through Django's settings) to size the bare chord.
"""

import os
import runpy
import secrets
import shlex
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.chaos.stack import ChaosStack
from devstack.simulators.control import SimulatorControl
from devstack.stack.processes import (
    Child,
    StartupError,
    clean_environment,
    only_environment,
    start_child,
    wait_until_ready,
)
from devstack.stack.services import READY_TIMEOUT, Faults, QueueWorker, partner_settings

from . import layout
from .bare_chord import REDIS_URL_VARIABLE, PartnerAccess

# Far above anything the bench sends: the client limit, our shared limiter (per partner,
# all workers)...
BENCH_CLIENT_RATE_LIMIT = "100000/second"
OUR_RATE_LIMIT = "10000/s"
# ...and the simulators' own window (POST /_sim/config).
PARTNER_RATE_LIMIT = {"limit": 100_000, "window": 1}
# Read by dualsend's settings and by the bench: the children get the parent's values.
SHARED_VARIABLES = ("DUALSEND_WORKER_POOL", "DUALSEND_WORKER_CONCURRENCY")
WEB, BEAT, REDIS, POSTGRES, PARTNERS = "web", "beat", "redis", "postgres", "partners"


@dataclass
class BenchStack(ChaosStack):
    inventory_ms: float = 300.0
    payment_ms: float = 500.0
    worker_override: layout.WorkerSize = field(default_factory=layout.WorkerSize)
    bare_size: layout.WorkerSize = field(default_factory=layout.settings_size)
    faults: Faults = field(init=False)

    def __post_init__(self) -> None:
        # run_partners takes one latency for both; start_partners sets each one after.
        self.faults = Faults(
            latency_ms=f"{self.inventory_ms:g}", error_rate=0, decline_rate=0, drop_rate=0
        )
        self.workers = tuple(
            QueueWorker(line.role, line.queue, 0) for line in layout.DUALSEND_WORKERS
        )

    @property
    def partner_latencies(self) -> dict[str, float]:
        return {"inventory": self.inventory_ms, "payment": self.payment_ms}

    @property
    def partner_access(self) -> PartnerAccess:
        return PartnerAccess(
            inventory_url=self.inventory_url,
            inventory_token=self.inventory_token,
            payment_url=self.payment_url,
            payment_key=self.payment_key,
        )

    # --- starting ----------------------------------------------------------------------

    def start_partners(self) -> None:
        """The simulators, then each partner's constant latency and no fault at all."""
        super().start_partners()
        for partner, url in (("inventory", self.inventory_url), ("payment", self.payment_url)):
            latency = self.partner_latencies[partner]
            control = SimulatorControl(url)
            try:
                control.configure(
                    latency_ms=[latency, latency],
                    error_rate=0,
                    decline_rate=0,
                    drop_rate=0,
                    rate_limit=PARTNER_RATE_LIMIT,
                )
                knobs = control.config()
            finally:
                control.close()
            if knobs["latency_ms"] != [latency, latency] or knobs["error_rate"]:
                raise StartupError(f"the {partner} simulator did not take its knobs: {knobs}")

    def launch_queue_worker(self, worker: QueueWorker) -> Child:
        """dualsend's worker for `worker.queue`, as README.md runs it (layout.py)."""
        line = layout.WorkerLine(worker.role, worker.queue)
        command = layout.dualsend_worker_command(sys.executable, line, self.worker_override)
        return self._start(f"worker-{worker.role}", command)

    def dualsend_worker_commands(self) -> list[str]:
        """dualsend's worker command lines, as they ran (for the record)."""
        return [
            shlex.join(layout.dualsend_worker_command("python", line, self.worker_override))
            for line in layout.DUALSEND_WORKERS
        ]

    def bare_worker_commands(self) -> list[str]:
        return [
            shlex.join(layout.bare_worker_command("python", line, self.bare_size))
            for line in layout.BARE_WORKERS
        ]

    def start_bare_workers(self) -> None:
        """The bare chord's workers, one per `bare.*` queue; returns once each answers."""
        started = []
        for line in layout.BARE_WORKERS:
            command = layout.bare_worker_command(sys.executable, line, self.bare_size)
            child = start_child(
                f"worker-{line.role}",
                command,
                env=self.bare_environment(),
                cwd=self.base_dir,
                log_dir=self.log_dir,
            )
            self.children.append(child)
            started.append((line, child))
        for line, child in started:
            node = f"{line.role}@{socket.gethostname()}"
            wait_until_ready(
                child,
                lambda node=node: self._answers_ping(node),
                timeout=READY_TIMEOUT["worker"],
                what=f"the {line.queue} worker",
            )

    # --- the processes, by kind (measure.py reads their CPU and memory) -----------------

    def children_by_kind(self) -> dict[str, list[Child]]:
        """web, workers (dualsend's celery processes, beat included), bare (the bare
        chord's workers), redis, postgres (the run's own server), partners."""
        kinds: dict[str, list[Child]] = {}
        for child in self.children:
            kinds.setdefault(_kind(child.name), []).append(child)
        return kinds

    # --- helpers -------------------------------------------------------------------------

    def child_environment(self) -> dict[str, str]:
        shared = {name: os.environ[name] for name in SHARED_VARIABLES if os.environ.get(name)}
        return (
            clean_environment()
            | {
                # The README's production settings: DEBUG off (no per-query debug
                # wrapper), a secret of this run's own; plain HTTP on loopback, as
                # behind a TLS proxy.
                "DJANGO_DEBUG": "0",
                "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
                "DJANGO_SECURE_SSL_REDIRECT": "0",
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_url,
                "CELERY_BROKER_URL": self.broker_url,
                "DUALSEND_CLIENT_RATE_LIMIT": BENCH_CLIENT_RATE_LIMIT,
                "DUALSEND_MAX_WAITERS": str(self.web_threads),
            }
            | self.stack_environment()
            | partner_settings({"RATE_LIMIT": OUR_RATE_LIMIT})
            | shared
        )

    def child_settings(self) -> dict[str, Any]:
        """project/settings.py as the children read it (run once more, in their environment)."""
        with only_environment(self.child_environment()):
            return runpy.run_path(str(self.base_dir / "project" / "settings.py"))

    def bare_environment(self) -> dict[str, str]:
        """Nothing of dualsend's: the bare app's module on the path, its Redis, the partners.
        No DJANGO_SETTINGS_MODULE either: Celery would load Django into the workers."""
        environment = clean_environment()
        environment.pop("DJANGO_SETTINGS_MODULE", None)
        return (
            environment
            | {
                "PYTHONPATH": str(Path(__file__).resolve().parent),
                "PYTHONUNBUFFERED": "1",
                REDIS_URL_VARIABLE: self.redis_url,
            }
            | self.partner_access.environment()
        )


def _kind(child_name: str) -> str:
    role = child_name.split(".", 1)[0]
    if role.startswith("worker-bare-"):
        return "bare"
    if role.startswith("worker-") or role == BEAT:
        return "workers"
    return role
