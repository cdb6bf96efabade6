"""The sweeper, run by Celery beat: re-drive work whose message was lost.

The rules are in `dualsend_app/recovery.py`; each re-drive is recorded on its order.
"""

from celery import shared_task
from celery.utils.log import get_task_logger

from dualsend_app import recovery

logger = get_task_logger(__name__)


@shared_task(name="tasks.sweeper.sweep", ignore_result=True, acks_late=False)
def sweep():
    # acks_late off: a sweep lost with its worker is simply the next beat's sweep.
    counts = recovery.sweep()
    if any(counts.values()):
        logger.warning("sweep re-drove %s", counts)
    return counts
