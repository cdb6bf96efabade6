"""The sweeper, run by Celery beat: re-drive work whose message was lost.

The rules are in `dualsend_app/recovery.py`; each re-drive is recorded on its order.
"""

import contextlib

from celery import shared_task
from celery.utils.log import get_task_logger
from django.conf import settings
from redis import RedisError
from redis.lock import Lock

from dualsend_app import recovery
from dualsend_app.resilience.redis_client import get_redis, key_prefix

logger = get_task_logger(__name__)

# Held while a sweep runs; it expires by itself if its worker dies mid-sweep.
LOCK_SECONDS = 60


@shared_task(name="tasks.sweeper.sweep", ignore_result=True, acks_late=False)
def sweep() -> dict[str, int] | None:
    # acks_late off: a sweep lost with its worker is simply the next beat's sweep.
    lock = _sweep_lock()
    if lock is False:
        # One sweep at a time: when the database is slow, sweeps must not pile up and
        # take every worker slot from the sends.
        return None
    try:
        counts = recovery.sweep()
    finally:
        if lock is not None:
            _release(lock)
    if any(counts.values()):
        logger.warning("sweep re-drove %s", counts)
    return counts


def _sweep_lock() -> Lock | bool | None:
    """The held lock shared by every worker; False when another sweep holds it; None
    (sweep anyway) when Redis cannot be asked."""
    timeout = max(LOCK_SECONDS, 2 * settings.DUALSEND_SWEEP_EVERY_SECONDS)
    try:
        lock = get_redis().lock(f"{key_prefix()}:sweeper", timeout=timeout)
        return lock if lock.acquire(blocking=False) else False
    except RedisError:
        return None


def _release(lock: Lock) -> None:
    # Expired, or Redis restarted: nothing left to release.
    with contextlib.suppress(RedisError):
        lock.release()
