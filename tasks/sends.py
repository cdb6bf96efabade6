"""The two header sends of an order's chord: reserve stock, charge the card.

This is where a send is retried: `run_send` raises Celery's `Task.retry` with the delay
that `dualsend_app.retry_policy` computed. A send never fails its task: when it runs out
of retries it records the failure and *returns*, so the chord's `settle` always runs.
"""

from celery import shared_task
from celery.utils.log import get_task_logger
from django.utils import timezone

from dualsend_app import sending

logger = get_task_logger(__name__)

SEND_TASK_OPTIONS = {
    "bind": True,
    # Our own attempt budget and deadline, counted in the database, bound the retries.
    "max_retries": None,
    "acks_late": True,
    "reject_on_worker_lost": True,
}


def run_send(task, send_id):
    """Claim, call, record; retry via Celery when the partner's answer was transient."""
    now = timezone.now()
    if not sending.claim(send_id, now):
        return _not_claimed(task, send_id, now)
    send, result, started_at = sending.attempt(send_id)
    step = sending.record(send, result, started_at)
    if step.should_retry:
        raise task.retry(countdown=step.retry_in)
    return sending.summary(send_id)


def _not_claimed(task, send_id, now):
    """Final, in flight elsewhere, or not due yet (a duplicate delivery): do no call."""
    send = sending.Send.objects.get(pk=send_id)
    wait = sending.seconds_until_due(send, now)
    if send.status == sending.Send.Status.PENDING and wait > 0:
        # Came early (a duplicate of a retry): come back when the attempt is due.
        raise task.retry(countdown=wait)
    logger.info("send=%s status=%s: duplicate delivery, nothing to do", send_id, send.status)
    return sending.summary(send_id)


@shared_task(name="tasks.sends.send_inventory", **SEND_TASK_OPTIONS)
def send_inventory(self, send_id):
    return run_send(self, send_id)


@shared_task(name="tasks.sends.send_payment", **SEND_TASK_OPTIONS)
def send_payment(self, send_id):
    return run_send(self, send_id)
