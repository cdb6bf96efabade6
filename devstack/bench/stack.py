"""The demo's stack for the benchmark: fault-free partners, generous limits, sizes to pick.

`BenchStack` is the demo's `Stack` with these differences:

* the simulators inject no fault and answer after a constant latency per partner
  (`run_partners --latency-ms` sets both; `POST /_sim/config` then sets each one);
* our rate limits and the simulators' are far above what the bench can send, so no call
  is ever put off and the figures measure dualsend, not a limiter;
* the worker's thread count and the web server's are options;
* the children use the bench's own database (`DATABASE_URL` when set, else a fresh SQLite
  file next to the logs), migrated before anything starts, so a demo running in the same
  checkout neither shares rows nor contends for SQLite's write lock with the bench.
"""

import os
import socket
import subprocess
from dataclasses import dataclass, field

from devstack.simulators.control import SimulatorControl
from devstack.stack.processes import StartupError
from devstack.stack.services import Faults, Stack, partner_settings

# Far above anything the bench sends: our shared limiter (per partner, all workers)...
BENCH_CLIENT_RATE_LIMIT = "100000/second"
OUR_RATE_LIMIT = "10000/s"
# ...and the simulators' own window (POST /_sim/config).
PARTNER_RATE_LIMIT = {"limit": 100_000, "window": 1}
MIGRATE_TIMEOUT = 120


@dataclass
class BenchStack(Stack):
    inventory_ms: float = 100.0
    payment_ms: float = 200.0
    worker_concurrency: int = 32
    web_threads: int = 16
    database_url: str = ""
    faults: Faults = field(init=False)

    def __post_init__(self) -> None:
        # run_partners takes one latency for both; start_partners sets each one after.
        self.faults = Faults(
            latency_ms=f"{self.inventory_ms:g}", error_rate=0, decline_rate=0, drop_rate=0
        )

    @property
    def worker_name(self) -> str:
        return f"bench-{os.getpid()}@{socket.gethostname()}"

    @property
    def partner_latencies(self) -> dict[str, float]:
        return {"inventory": self.inventory_ms, "payment": self.payment_ms}

    # --- starting ----------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or update the bench's database, in a child with the children's settings."""
        command = self._manage("migrate", "--no-input", "--verbosity", "0")
        environment = os.environ.copy() | {"DJANGO_DEBUG": "1", "DATABASE_URL": self.database_url}
        try:
            done = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
                command,
                cwd=self.base_dir,
                env=environment,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=MIGRATE_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise StartupError(f"migrate took more than {MIGRATE_TIMEOUT} s") from exc
        if done.returncode != 0:
            raise StartupError(f"migrate failed:\n{done.stdout}{done.stderr}")

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

    # --- helpers -------------------------------------------------------------------------

    def child_environment(self) -> dict[str, str]:
        return (
            super().child_environment()
            | {
                "DATABASE_URL": self.database_url,
                # The bench measures how fast dualsend is, not its protection against a
                # greedy client: its one client may go as fast as it can, and every
                # client thread may hold a long poll.
                "DUALSEND_CLIENT_RATE_LIMIT": BENCH_CLIENT_RATE_LIMIT,
                "DUALSEND_MAX_WAITERS": str(self.web_threads),
            }
            | partner_settings({"RATE_LIMIT": OUR_RATE_LIMIT})
        )
