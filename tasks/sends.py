"""The two header sends of an order: reserve stock, charge the card; the last to finish
settles the order.

This is where a send is retried: `run_send` raises Celery's `Task.retry` with the delay
that `dualsend_app.sending.run` returned: backoff with full jitter and Retry-After
(`dualsend_app/retry_policy.py`), or the gate's wait (breaker open, rate limit). A send
never fails its task: when it runs out of retries it records the failure and *returns*,
and the order settles all the same. Database errors are retried by Celery's autoretry
until the database is back (`tasks/options.py`); an answer already received is carried
into that retry as `kept_answer`, never asked for again.

The order's join is in the database, not in a Celery chord: a send that ends final
settles its order (`orders.settle` reads both sends and claims the order; it does
nothing while the other send is not final, or once the order is settled). Each send
commits its own outcome before it reads the other's, so at least one of two sends that
finish together sees both final. A worker that dies between the two gives the message
back (acks late): the delivery that follows finds the send final and settles. The
sweeper settles whatever is left (`recovery.resettle_forgotten_orders`).
"""

from typing import Any

from celery import Task, shared_task
from django.conf import settings

from dualsend_app import orders, sending, tracing

from .options import ORDER_TASK_OPTIONS


def run_send(
    task: Task, send_id: int, kept_answer: dict[str, Any] | None = None
) -> sending.NextStep:
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
    return step


def settle_when_final(send_id: int, step: sending.NextStep) -> dict:
    """A header send that is final settles its order if the other one is final too."""
    if step.send_is_final:
        with tracing.span("settle order", order_id=str(step.order_id)):
            orders.settle(step.order_id)
    return sending.summary(send_id, step)


# Their results are not stored: nothing reads them (the database has every outcome).
@shared_task(name="tasks.sends.send_inventory", ignore_result=True, **ORDER_TASK_OPTIONS)
def send_inventory(self: Task, send_id: int, kept_answer: dict[str, Any] | None = None) -> dict:
    return settle_when_final(send_id, run_send(self, send_id, kept_answer))


@shared_task(name="tasks.sends.send_payment", ignore_result=True, **ORDER_TASK_OPTIONS)
def send_payment(self: Task, send_id: int, kept_answer: dict[str, Any] | None = None) -> dict:
    return settle_when_final(send_id, run_send(self, send_id, kept_answer))
