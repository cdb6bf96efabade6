"""What /metrics reads when it is scraped: each partner's breaker, each queue's depth.

Both live outside any process (the breaker in Redis, the queues in the broker), so they are
read once per scrape by the web process rather than recorded on every call. Each read has
short timeouts; a dependency that is down leaves its series out of that scrape, with a
log line, and never fails the scrape.

Queue depth is the number of messages waiting in the queue: on Redis the length of
kombu's list for each queue (one per priority level), on RabbitMQ the message count of a
passive declare. A retry's message held by a worker until it is due is not waiting.
"""

import logging
from collections.abc import Iterable, Iterator, Sequence

import kombu
import redis
from django.conf import settings
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .resilience import gate
from .resilience.breaker import State
from .resilience.redis_client import WarningThrottle

logger = logging.getLogger(__name__)

# A scrape waits at most about this long on each dependency (Prometheus' own scrape
# timeout is 10 s by default).
TIMEOUT_SECONDS = 1.0
REDIS_SCHEMES = ("redis", "rediss")
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")

# A scrape every few seconds while Redis or the broker is down: one warning a minute each.
_warnings = {"breaker state": WarningThrottle(every=60.0), "queue depth": WarningThrottle(60.0)}


class LiveStateCollector(Collector):
    """The breaker and queue series, read at each collect."""

    def collect(self) -> Iterator[Metric]:
        yield from breaker_states(settings.DUALSEND_PARTNERS)
        yield from queue_depths(settings.CELERY_BROKER_URL, queue_names())


def queue_names() -> list[str]:
    """The queues the tasks are routed to (settings CELERY_TASK_QUEUES)."""
    return [queue.name for queue in settings.CELERY_TASK_QUEUES]


def breaker_states(partners: Iterable[str]) -> list[GaugeMetricFamily]:
    """`dualsend_breaker_state{partner, state}`: 1 for the breaker's state, 0 for the
    others; nothing when Redis is unreachable."""
    family = GaugeMetricFamily(
        "dualsend_breaker_state",
        "Each partner's circuit breaker: 1 for its current state (closed, open, half_open).",
        labels=["partner", "state"],
    )
    for partner in partners:
        try:
            current = gate.breaker_state(partner)["state"]
        except redis.RedisError as exc:
            _warn_unreadable("breaker state", exc)
            return []
        for state in State.values:
            family.add_metric([partner, state], 1.0 if state == current else 0.0)
    return [family]


def queue_depths(broker_url: str, queues: Sequence[str]) -> list[GaugeMetricFamily]:
    """`dualsend_queue_depth{queue}`: messages waiting; nothing when the broker is down."""
    try:
        depths = read_queue_depths(broker_url, queues)
    except Exception as exc:  # whatever the broker's client raises: never a 500
        _warn_unreadable("queue depth", exc)
        return []
    family = GaugeMetricFamily(
        "dualsend_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
    )
    for queue, depth in depths.items():
        family.add_metric([queue], float(depth))
    return [family]


def read_queue_depths(broker_url: str, queues: Sequence[str]) -> dict[str, int]:
    """{queue: messages waiting}, from a Redis or RabbitMQ broker."""
    scheme = broker_url.partition("://")[0].lower()
    if scheme in REDIS_SCHEMES:
        return _redis_depths(broker_url, queues)
    if scheme in AMQP_SCHEMES:
        return _amqp_depths(broker_url, queues)
    raise ValueError(f"no queue depth for a {scheme!r} broker")


def _redis_depths(broker_url: str, queues: Sequence[str]) -> dict[str, int]:
    """kombu's Redis transport keeps a queue as one list per priority step: `name`, then
    `name<sep><step>` for each step above 0. One pipelined round trip for them all."""
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    prefix = options.get("global_keyprefix", "")
    steps = [step for step in options.get("priority_steps", PRIORITY_STEPS) if step]
    client = redis.Redis.from_url(
        broker_url, socket_connect_timeout=TIMEOUT_SECONDS, socket_timeout=TIMEOUT_SECONDS
    )
    try:
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            for key in [queue, *(f"{queue}{RedisChannel.sep}{step}" for step in steps)]:
                pipe.llen(prefix + key)
        lengths = iter(pipe.execute())
    finally:
        client.close()
    return {queue: sum(next(lengths) for _ in range(1 + len(steps))) for queue in queues}


def _amqp_depths(broker_url: str, queues: Sequence[str]) -> dict[str, int]:
    """A passive declare answers a queue's message count without creating it; a queue not
    declared yet has none waiting."""
    depths = {}
    transport_options = {"read_timeout": TIMEOUT_SECONDS, "write_timeout": TIMEOUT_SECONDS}
    with kombu.Connection(
        broker_url, connect_timeout=TIMEOUT_SECONDS, transport_options=transport_options
    ) as connection:
        connection.ensure_connection(max_retries=0)  # one try: the next scrape is the retry
        for queue in queues:
            # A passive declare of a missing queue closes its channel: one channel each.
            channel = connection.channel()
            try:
                depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
            except connection.channel_errors:
                depths[queue] = 0
            finally:
                channel.close()
    return depths


def _warn_unreadable(what: str, exc: BaseException) -> None:
    if _warnings[what].due():
        logger.warning(
            "metrics: %s left out of this scrape, its source is unreachable (%s: %s)",
            what,
            type(exc).__name__,
            exc,
        )
