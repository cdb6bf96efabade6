"""The sweeper, run by Celery beat: re-drive work whose message was lost.

The rules are in `dualsend_app/recovery.py`; each re-drive is recorded on its order.
"""

import contextlib

from celery import shared_task
from celery.utils.log import get_task_logger
from django.conf import settings
from redis import RedisError
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

from dualsend_app import recovery
from dualsend_app.resilience.redis_client import get_redis, key_prefix

logger = get_task_logger(__name__)

# The sweep lock lasts two sweep intervals and is renewed before each rule, so a sweep
# killed with its worker holds up the next ones that long at most. It used to last 60 s,
# and a worker killed mid-sweep stopped every sweep for a minute: its own send, in flight
# and abandoned, waited that long (tests/test_durability.py, caught by CI). A sweep slow
# enough to let it lapse stops at its next rule, leaving the rest to the sweep that took
# the lock: sweeps never pile up.
MIN_LOCK_SECONDS = 1.0


def lock_seconds() -> float:
    return max(MIN_LOCK_SECONDS, 2 * settings.DUALSEND_SWEEP_EVERY_SECONDS)


@shared_task(name="tasks.sweeper.sweep", ignore_result=True, acks_late=False)
def sweep() -> dict[str, int] | None:
    # acks_late off: a sweep lost with its worker is simply the next beat's sweep.
    lock = _sweep_lock()
    if lock is False:
        # One sweep at a time: when the database is slow, sweeps must not pile up and
        # take every worker slot from the sends.
        return None
    try:
        counts = recovery.sweep(still_ours=lambda: _still_ours(lock))
    finally:
        if lock is not None:
            _release(lock)
    if any(counts.values()):
        logger.warning("sweep re-drove %s", counts)
    return counts


def _sweep_lock() -> Lock | bool | None:
    """The held lock shared by every worker; False when another sweep holds it; None
    (sweep anyway) when Redis cannot be asked."""
    try:
        lock = get_redis().lock(f"{key_prefix()}:sweeper", timeout=lock_seconds())
        return lock if lock.acquire(blocking=False) else False
    except RedisError:
        return None


def _still_ours(lock: Lock | None) -> bool:
    """Renew the lock for the next rule; False when another sweep holds it now."""
    if lock is None:
        return True  # Redis could not be asked at the start: sweep on, as then
    try:
        lock.reacquire()
    except LockNotOwnedError:
        return False
    except RedisError:
        return True
    return True


def _release(lock: Lock) -> None:
    # Expired, or Redis restarted: nothing left to release.
    with contextlib.suppress(RedisError):
        lock.release()
