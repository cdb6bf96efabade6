"""Telling a waiting request that its order is final: Redis pub/sub, one channel per order.

Settle publishes once an order's final status has committed (`orders._finish`); a
`GET /api/orders/<id>?wait=N` subscribes to its order's channel, looks at the order
once more (it may have settled before the subscription), then sleeps until the message
comes or a slow poll is due, whichever is first. Under load, polling saw an order p50
80 ms after it settled; the message wakes the request at once.

The message is a hint, the database the truth: the waiter reads the order when woken.
A lost message (Redis restarted or unreachable at the wrong moment) costs one slow
poll, `FALLBACK_POLL_SECONDS`; with no subscription at all (Redis down) the waiter
polls on the quicker schedule it used before there were messages.

One subscription per waiting request, not one listener per process: a process-wide
pattern subscription would receive every order's message, thousands a second, to
serve a handful of waiters (`DUALSEND_MAX_WAITERS` per process). Each thread keeps its
Redis pub/sub connection from one wait to the next, SUBSCRIBE in and UNSUBSCRIBE out:
redis-py's `PubSub.close()` drops the connection, and opening one for every wait cost
the web 0.42 ms and Redis 0.14 ms of CPU more than the two commands (3,000 waits in a
loop), plus a TCP connection per wait. A message on another channel (an earlier wait's,
arriving late) is skipped.
"""

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator

from redis import RedisError
from redis.client import PubSub

from .resilience.redis_client import get_redis, key_prefix

logger = logging.getLogger(__name__)

FINAL = "final"
# Subscribed: the database is read again this often in case the message was lost.
FALLBACK_POLL_SECONDS = 1.0
# Not subscribed (Redis down): poll often at first, when an order most likely settles.
UNSUBSCRIBED_FIRST_POLL_SECONDS = 0.02
UNSUBSCRIBED_POLL_GROWTH = 1.25
UNSUBSCRIBED_MAX_POLL_SECONDS = 0.25


def channel(order_id: uuid.UUID | str) -> str:
    return f"{key_prefix()}:order-final:{order_id}"


def publish_final(order_id: uuid.UUID | str) -> None:
    """Wake whoever waits on this order; Redis down only slows them to a poll."""
    try:
        get_redis().publish(channel(order_id), FINAL)
    except RedisError as exc:
        logger.warning(
            "final, but waiters were not told (Redis: %s: %s); they will poll",
            type(exc).__name__,
            exc,
        )


class Listener:
    """Waits for one order's message, or polls when it could not subscribe."""

    def __init__(self, pubsub: PubSub | None, channel_name: str) -> None:
        self._pubsub = pubsub
        self._channels = (channel_name, channel_name.encode())  # as text or bytes
        self._poll = UNSUBSCRIBED_FIRST_POLL_SECONDS

    @property
    def subscribed(self) -> bool:
        return self._pubsub is not None

    def wait(self, seconds: float) -> bool:
        """Sleep until the order's message (True) or until the next poll is due (False),
        never longer than `seconds`."""
        if self._pubsub is None:
            pause = min(self._poll, seconds)
            self._poll = min(self._poll * UNSUBSCRIBED_POLL_GROWTH, UNSUBSCRIBED_MAX_POLL_SECONDS)
            time.sleep(max(pause, 0))
            return False
        deadline = time.monotonic() + min(FALLBACK_POLL_SECONDS, seconds)
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                message = self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=remaining
                )
                if _is_ours(message, self._channels):
                    return True
        except (RedisError, OSError):
            _drop_thread_pubsub()
            self._pubsub = None  # lost it mid-wait: poll from here on
        return False


def _is_ours(message: dict | None, channel_names: tuple[str, bytes]) -> bool:
    return (
        message is not None
        and message.get("type") == "message"
        and message.get("channel") in channel_names
    )


@contextlib.contextmanager
def listening(order_id: uuid.UUID | str) -> Iterator[Listener]:
    """A Listener subscribed to the order's channel for the block; unsubscribed (it
    polls) when Redis does not answer."""
    name = channel(order_id)
    pubsub = None
    try:
        pubsub = _thread_pubsub()
        pubsub.subscribe(name)
    except RedisError as exc:
        logger.info("?wait polls: Redis unreachable (%s)", exc)
        _drop_thread_pubsub()
        pubsub = None
    listener = Listener(pubsub, name)
    try:
        yield listener
    finally:
        if pubsub is not None and listener.subscribed:
            _unsubscribe(pubsub, name)


def _unsubscribe(pubsub: PubSub, name: str) -> None:
    # Its confirmation is read, and skipped, by this thread's next wait.
    try:
        pubsub.unsubscribe(name)
    except (RedisError, OSError):
        _drop_thread_pubsub()


_thread = threading.local()


def _thread_pubsub() -> PubSub:
    """This thread's pub/sub connection to `settings.REDIS_URL`, kept between waits."""
    client = get_redis()
    pubsub: PubSub | None = getattr(_thread, "pubsub", None)
    if pubsub is None or pubsub.connection_pool is not client.connection_pool:
        _drop_thread_pubsub()
        pubsub = _thread.pubsub = client.pubsub(ignore_subscribe_messages=True)
    return pubsub


def _drop_thread_pubsub() -> None:
    """Close this thread's connection (broken, or for another Redis); the next wait
    opens a new one."""
    pubsub = getattr(_thread, "pubsub", None)
    _thread.pubsub = None
    if pubsub is not None:
        with contextlib.suppress(RedisError, OSError):
            pubsub.close()
