"""A PostgreSQL server of the chaos run's own, made with `initdb`, so that the run may crash it.

The run owns its Redis for the same reason: a fault is only real when the thing can be
shot. `PrivatePostgres.create()` makes a cluster in a fresh temporary directory (`initdb`,
trust authentication on loopback only); the stack starts the server as one of its
children, on a free port of 127.0.0.1, and `crash()` stops it the way a power cut or the
OOM killer would (`pg_ctl stop -m immediate`: no checkpoint, crash recovery at the next
start). `remove()` deletes the directory. PostgreSQL refuses to run as root, so when the
run is root the cluster belongs to the `postgres` user and every binary runs as that user.
"""

import contextlib
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from devstack.stack.processes import free_port

BINARY_DIRS = "/usr/lib/postgresql/*/bin"
SERVER_USER = "postgres"
SUPERUSER = "postgres"
DIRECTORY_PREFIX = "dualsend-chaos-pg-"
# The README's layout holds up to 16 + 32 + 32 + 16 connections, and the run's own few:
# a private server should not be the limit the run finds.
MAX_CONNECTIONS = 300
COMMAND_TIMEOUT = 60


class PostgresError(Exception):
    """The private server cannot be made or run; the message says why."""


def binary_dir() -> Path | None:
    """Where initdb, postgres and pg_ctl are: PATH first, else the newest of
    /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent  # /usr/local/bin/initdb may be a link
    found = [Path(path) for path in glob.glob(BINARY_DIRS) if (Path(path) / "initdb").exists()]
    return max(found, key=_version, default=None)


def _version(path: Path) -> tuple[int, ...]:
    version = path.parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


@dataclass
class PrivatePostgres:
    bin_dir: Path
    root: Path  # the temporary directory: the cluster in data/, the socket beside it
    port: int
    user: str | None  # the OS user the binaries run as; None: this process's user

    @classmethod
    def create(cls) -> "PrivatePostgres":
        """initdb a new cluster in a temporary directory; the server is not started."""
        bin_dir = binary_dir()
        if bin_dir is None:
            raise PostgresError(
                f"no initdb on PATH or in {BINARY_DIRS}: install PostgreSQL's server "
                "binaries, or give the run a database with --database-url"
            )
        remove_abandoned()
        user = SERVER_USER if os.geteuid() == 0 else None
        root = Path(tempfile.mkdtemp(prefix=f"{DIRECTORY_PREFIX}{os.getpid()}-"))
        server = cls(bin_dir=bin_dir, root=root, port=free_port(), user=user)
        try:
            if user is not None:
                account = _account(user)
                os.chown(root, account.pw_uid, account.pw_gid)
            server.run_binary(
                "initdb", "--pgdata", str(server.data_dir), "--username", SUPERUSER,
                "--auth", "trust", "--encoding", "UTF8", "--locale", "C", "--no-sync",
            )  # fmt: skip
        except BaseException:
            server.remove()
            raise
        return server

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def version(self) -> str:
        """'15.20', as `postgres --version` says."""
        try:
            output = subprocess.run(  # noqa: S603 - PostgreSQL's own binary
                [str(self.bin_dir / "postgres"), "--version"],
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=True,
            ).stdout
        except (subprocess.SubprocessError, OSError):
            return "(version unknown)"
        found = re.search(r"PostgreSQL\) (\S+)", output)
        return found.group(1) if found else output.strip()

    def url(self, database: str) -> str:
        return f"postgres://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def server_command(self) -> list[str]:
        """The postmaster in the foreground (the stack's child), on loopback only."""
        return [
            str(self.bin_dir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-k", str(self.root),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"max_connections={MAX_CONNECTIONS}",
        ]  # fmt: skip

    def answers(self) -> bool:
        """True once the server accepts a connection (after any crash recovery)."""
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", connect_timeout=2
        ) as connection:
            connection.execute("SELECT 1")
        return True

    def crash(self) -> None:
        """`pg_ctl stop -m immediate`: every process of the server quits at once, no
        checkpoint; the next start replays the write-ahead log as after a crash."""
        self.run_binary("pg_ctl", "stop", "--pgdata", str(self.data_dir), "--mode", "immediate",
                        "--wait")  # fmt: skip

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def run_binary(self, program: str, *arguments: str) -> None:
        as_user = {}
        if self.user is not None:
            as_user = {"user": self.user, "group": _account(self.user).pw_gid, "extra_groups": []}
        try:
            subprocess.run(  # noqa: S603 - PostgreSQL's own binary, our own arguments
                [str(self.bin_dir / program), *arguments],
                check=True,
                capture_output=True,
                cwd=self.root,
                timeout=COMMAND_TIMEOUT,
                **as_user,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            output = getattr(exc, "stderr", b"") or b""
            raise PostgresError(
                f"{program} {' '.join(arguments[:2])} failed: "
                f"{output.decode(errors='replace').strip() or exc}"
            ) from exc


def _account(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise PostgresError(
            f"running as root, and there is no `{user}` user for PostgreSQL to run as"
        ) from None


def remove_abandoned() -> None:
    """Directories of earlier runs whose process is gone (killed before it could clean up)."""
    for path in Path(tempfile.gettempdir()).glob(f"{DIRECTORY_PREFIX}*"):
        owner = path.name.removeprefix(DIRECTORY_PREFIX).split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)) and not _server_running(path / "data"):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _server_running(data_dir: Path) -> bool:
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        return _alive(pid)
    return False
