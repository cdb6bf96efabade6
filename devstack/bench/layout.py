"""The README's production layout as command lines: the one place the bench builds them.

README, "Running each process by hand", runs one worker per queue::

    .venv/bin/celery -A project worker -Q api.inventory -n inventory@%h
    .venv/bin/celery -A project worker -Q api.payment   -n payment@%h
    .venv/bin/celery -A project worker -Q default       -n default@%h

with no --pool or --concurrency: a plain worker takes them from dualsend's settings
(`CELERY_WORKER_POOL`, `CELERY_WORKER_CONCURRENCY`). The bench starts dualsend's workers
with exactly these arguments (`readme_line` gives each line; a test holds them to
README.md), adding --pool or --concurrency only when the bench is told to. The bare
chord's workers are as many, one per queue of its own, with the same pool and
concurrency given explicitly (it has no settings of ours to read them from).
"""

from dataclasses import dataclass

from django.conf import settings

from .bare_chord import APP_NAME as BARE_APP
from .bare_chord import QUEUES as BARE_QUEUES

# Until project/settings.py names them, what a plain `celery -A project worker` runs.
FALLBACK_POOL = "threads"
FALLBACK_CONCURRENCY = 32
README_PROGRAM = ".venv/bin/celery -A project worker"


@dataclass(frozen=True)
class WorkerLine:
    role: str  # node name `<role>@%h`, log file `worker-<role>.log`
    queue: str


DUALSEND_WORKERS = (
    WorkerLine("inventory", "api.inventory"),
    WorkerLine("payment", "api.payment"),
    WorkerLine("default", "default"),
)
BARE_WORKERS = tuple(WorkerLine(f"bare-{role}", queue) for role, queue in BARE_QUEUES.items())


@dataclass(frozen=True)
class WorkerSize:
    """What each worker process runs: None means "as the settings say" (no flag)."""

    pool: str | None = None
    concurrency: int | None = None

    def arguments(self) -> list[str]:
        pool = ["--pool", self.pool] if self.pool else []
        concurrency = ["--concurrency", str(self.concurrency)] if self.concurrency else []
        return [*pool, *concurrency]


def settings_size() -> WorkerSize:
    """The pool and concurrency a plain `celery -A project worker` runs, from dualsend's
    settings, explicit."""
    return WorkerSize(
        pool=getattr(settings, "CELERY_WORKER_POOL", None) or FALLBACK_POOL,
        concurrency=getattr(settings, "CELERY_WORKER_CONCURRENCY", None) or FALLBACK_CONCURRENCY,
    )


def effective_size(override: WorkerSize) -> WorkerSize:
    """What dualsend's workers really run: the bench's override, else the settings'."""
    default = settings_size()
    return WorkerSize(
        pool=override.pool or default.pool,
        concurrency=override.concurrency or default.concurrency,
    )


def worker_arguments(worker: WorkerLine, size: WorkerSize = WorkerSize()) -> list[str]:
    """The arguments after `celery -A <app> worker`."""
    return ["-Q", worker.queue, "-n", f"{worker.role}@%h", *size.arguments()]


def dualsend_worker_command(
    python: str, worker: WorkerLine, override: WorkerSize = WorkerSize()
) -> list[str]:
    """The README's line for `worker`, plus --pool/--concurrency only when overridden."""
    return [python, "-m", "celery", "-A", "project", "worker", *worker_arguments(worker, override)]


def bare_worker_command(python: str, worker: WorkerLine, size: WorkerSize) -> list[str]:
    """The bare chord's worker: the same processes, pool and concurrency as dualsend's."""
    return [python, "-m", "celery", "-A", BARE_APP, "worker", *worker_arguments(worker, size)]


def readme_line(worker: WorkerLine) -> str:
    """The line README.md shows for `worker` (white space aside)."""
    return " ".join([README_PROGRAM, *worker_arguments(worker)])
