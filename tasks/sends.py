"""The two header sends of an order's chord: reserve stock, charge the card.

This is where a send is retried: `run_send` raises Celery's `Task.retry` with the delay
that `dualsend_app.retry_policy` computed (backoff with full jitter, Retry-After wins),
or that the gate asked for (breaker open, rate limit). A send never fails its task: when
it runs out of retries it records the failure and *returns*, so the chord's `settle`
always runs. Database errors are retried by Celery's autoretry until the database is
back; an answer already received is carried into that retry, never asked for again.
"""

from celery import shared_task
from celery.utils.log import get_task_logger
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from dualsend_app import sending
from dualsend_app.models import Send
from dualsend_app.resilience import gate

logger = get_task_logger(__name__)

# The database was unreachable: Celery retries the task, with backoff, until it is back.
DATABASE_ERRORS = (OperationalError, InterfaceError)

SEND_TASK_OPTIONS = {
    "bind": True,
    # Our own attempt budget and deadline, counted in the database, bound the retries.
    "max_retries": None,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": DATABASE_ERRORS,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
}


def run_send(task, send_id, kept_answer=None):
    """Wait if told to, pass the gate, claim, call, record; retry when transient."""
    if kept_answer is not None:
        return _finish(task, send_id, sending.record_kept_answer(send_id, kept_answer))
    now = timezone.now()
    send = Send.objects.get(pk=send_id)
    if send.is_final:
        return sending.summary(send_id)  # a duplicate delivery: nothing to do
    wait = sending.seconds_to_wait(send, now)
    if wait > 0:
        # Early (a duplicate of a retry) or held by another delivery: come back then.
        raise retry_later(task, send_id, wait)
    sending.mark_started(send_id, now)
    admission = gate.admit(send.partner)
    if not admission.allowed:
        return _finish(task, send_id, sending.defer(send_id, admission, now))
    if not sending.claim(send, now):
        return sending.summary(send_id)
    send, result, started_at = sending.attempt(send_id)
    attempt_number = send.attempts
    gate.observe(
        send.partner,
        status_code=result.answer.status_code,
        headers=result.answer.headers,
        duration_seconds=result.answer.duration_ms / 1000,
        transient_failure=result.decision.outcome == "retry",
    )
    try:
        step = sending.record(send, result, started_at, attempt_number)
    except DATABASE_ERRORS:
        logger.warning("send=%s answer kept; database unreachable, retrying", send_id)
        raise task.retry(
            args=(send_id,),
            kwargs={"kept_answer": sending.kept_answer(result, started_at, attempt_number)},
            countdown=1,
        ) from None
    return _finish(task, send_id, step)


def _finish(task, send_id, step):
    if step.should_retry:
        raise retry_later(task, send_id, step.retry_in)
    return sending.summary(send_id)


def retry_later(task, send_id, seconds):
    """Celery's retry, as a fresh delivery of the send (no kept answer), capped."""
    countdown = min(seconds, settings.DUALSEND_MAX_COUNTDOWN_SECONDS)
    return task.retry(args=(send_id,), kwargs={}, countdown=countdown)


@shared_task(name="tasks.sends.send_inventory", **SEND_TASK_OPTIONS)
def send_inventory(self, send_id, kept_answer=None):
    return run_send(self, send_id, kept_answer)


@shared_task(name="tasks.sends.send_payment", **SEND_TASK_OPTIONS)
def send_payment(self, send_id, kept_answer=None):
    return run_send(self, send_id, kept_answer)
