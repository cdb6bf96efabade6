"""The multiprocess metrics directory, tidied when the process that serves it starts.

prometheus_client's multiprocess mode keeps each process's series in files named after
its pid (`counter_<pid>.db`, `histogram_<pid>.db`, `gauge_<mode>_<pid>.db`) and wants the
directory cleaned between runs: a new process given an old pid would carry on that old
process's values.

Who cleans, and what: the process that serves the directory, as it starts. That is the
web process for the host's shared directory (`project/wsgi.py`), and a worker with a port
of its own for its own directory (`metrics_worker.py`). It removes the files of processes
that are no longer running, never a running one's: the web may start (or gunicorn replace
its worker) while the host's Celery workers run on, and wiping their files would drop
their series until they restart. A dead process's counts leave the sums then, which
Prometheus reads as a counter reset, as it does after any restart.

Imports nothing of prometheus_client: `project/wsgi.py` imports it before the settings
have chosen the directory.
"""

import logging
import os
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)


def remove_files_of_exited_processes(directory: str | Path | None = None) -> list[Path]:
    """Remove the directory's files whose process has exited; returns them."""
    directory = Path(directory or settings.PROMETHEUS_MULTIPROC_DIR)
    removed = []
    for path in directory.glob("*.db"):
        pid = pid_of(path)
        if pid is None or process_running(pid):
            continue
        path.unlink(missing_ok=True)  # another process tidying at the same time
        removed.append(path)
    if removed:
        logger.info(
            "metrics: removed %s file(s) of exited processes from %s", len(removed), directory
        )
    return removed


def pid_of(path: Path) -> int | None:
    """The pid in a multiprocess file's name (`histogram_123.db` → 123), or None."""
    _, _, pid = path.stem.rpartition("_")
    return int(pid) if pid.isdigit() else None


def process_running(pid: int) -> bool:
    """Whether a process with this pid runs on this host (signal 0 only checks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True
