"""The broker of a chaos run: its own Redis, or a RabbitMQ virtual host of its own.

With RabbitMQ the run creates a virtual host named after its process (so two runs, or
a run and the tests, never share a queue), gives `guest` every permission on it, and
deletes it at the end with everything in it. Redis still holds the results and the
breaker and rate-limit state.
"""

import os
import shutil
import socket
import subprocess

REDIS = "redis"
RABBITMQ = "rabbitmq"
RABBITMQ_HOST = "127.0.0.1"
RABBITMQ_PORT = 5672
RABBITMQ_CREDENTIALS = "guest:guest"
RABBITMQCTL_TIMEOUT = 30


class BrokerError(Exception):
    """RabbitMQ cannot be used; the message says what to do."""


def rabbitmq_answers(
    host: str = RABBITMQ_HOST, port: int = RABBITMQ_PORT, timeout: float = 1.0
) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class RabbitVhost:
    """`create()` then `url`; `delete()` is safe to call whether or not it exists."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"dualsend_chaos_{os.getpid()}"
        self.created = False

    @property
    def url(self) -> str:
        return f"amqp://{RABBITMQ_CREDENTIALS}@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{self.name}"

    @property
    def url_for_display(self) -> str:
        return f"amqp://guest:***@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{self.name}"

    def create(self) -> None:
        if not rabbitmq_answers():
            raise BrokerError(
                f"RabbitMQ does not answer on {RABBITMQ_HOST}:{RABBITMQ_PORT} "
                "(`rabbitmq-server -detached` starts it)"
            )
        self._rabbitmqctl("add_vhost", self.name)
        self.created = True
        self._rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")

    def delete(self) -> None:
        if self.created:
            self._rabbitmqctl("delete_vhost", self.name)
            self.created = False

    @staticmethod
    def _rabbitmqctl(*arguments: str) -> None:
        program = shutil.which("rabbitmqctl")
        if program is None:
            raise BrokerError("rabbitmqctl is not on PATH: the run cannot create its vhost")
        try:
            subprocess.run(  # noqa: S603 - a fixed program, our own arguments
                [program, *arguments],
                check=True,
                capture_output=True,
                timeout=RABBITMQCTL_TIMEOUT,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            output = getattr(exc, "stderr", b"") or b""
            raise BrokerError(
                f"rabbitmqctl {' '.join(arguments)} failed: {output.decode(errors='replace')}"
            ) from exc
