"""The two header sends of an order's chord: reserve stock, charge the card.

This is where a send is retried: `run_send` raises Celery's `Task.retry` with the delay
that `dualsend_app.sending.run` returned: backoff with full jitter and Retry-After
(`dualsend_app/retry_policy.py`), or the gate's wait (breaker open, rate limit). A send
never fails its task: when it runs out of retries it records the failure and *returns*,
so the chord's `settle` always runs. Database errors are retried by Celery's autoretry
until the database is back (`tasks/options.py`); an answer already received is carried
into that retry as `kept_answer`, never asked for again.
"""

from typing import Any

from celery import Task, shared_task
from django.conf import settings

from dualsend_app import sending

from .options import ORDER_TASK_OPTIONS


def run_send(task: Task, send_id: int, kept_answer: dict[str, Any] | None = None) -> dict:
    """One delivery of a send; a retry when `sending.run` asks for one."""
    step = sending.run(send_id, kept_answer)
    if step.should_retry:
        # No countdown is longer than the cap: the Redis broker's visibility timeout
        # must outlast it (a system check says so).
        raise task.retry(
            args=(send_id,),
            kwargs={"kept_answer": step.kept_answer} if step.kept_answer else {},
            countdown=min(step.retry_in, settings.DUALSEND_MAX_COUNTDOWN_SECONDS),
        )
    return sending.summary(send_id, step)


# Their results are not stored: the chord's callback gets each header's return value from
# the chord's own list in Redis (`on_chord_part_return` runs whether or not a result is
# stored), and nothing else reads them. Storing them was a SET and a PUBLISH per send,
# 4% of the workers' CPU in `manage.py bench`.
@shared_task(name="tasks.sends.send_inventory", ignore_result=True, **ORDER_TASK_OPTIONS)
def send_inventory(self: Task, send_id: int, kept_answer: dict[str, Any] | None = None) -> dict:
    return run_send(self, send_id, kept_answer)


@shared_task(name="tasks.sends.send_payment", ignore_result=True, **ORDER_TASK_OPTIONS)
def send_payment(self: Task, send_id: int, kept_answer: dict[str, Any] | None = None) -> dict:
    return run_send(self, send_id, kept_answer)
