"""What start-up made is frozen out of the garbage collector's way (`gc.freeze`).

A full (generation 2) collection holds the GIL, so every thread of the process waits,
while it walks every object the collector tracks. Most of a process's objects are made
once, at start-up, and are never garbage: Django's and Celery's modules, the settings,
the tasks (about 147,000 objects in a worker). In `manage.py bench`, walking them paused
the workers 50-280 ms and the web 30-150 ms at each full collection (timed with
`gc.callbacks`), and every send and request in flight waited: those were the slowest
orders of the half-rate phase. Frozen once the process is ready, they are skipped: a
full collection then took 0.6-2.3 ms in the workers and 14-52 ms in the web.

Objects made later are collected as ever. Called by gunicorn once a worker has loaded
the app (gunicorn.conf.py, `post_worker_init`), by a Celery worker once it is ready, and
by each prefork child as it starts (project/celery.py).
"""

import gc
import logging

logger = logging.getLogger(__name__)


def freeze_start_up_objects(process: str) -> int:
    """Collect start-up's garbage, then freeze what is left; returns how many are frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info("%s: %s start-up objects frozen, out of the collector's way", process, frozen)
    return frozen
