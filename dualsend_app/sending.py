"""One attempt of a Send: claim it, call the partner, record the attempt, decide what next.

The task in `tasks/sends.py` turns the decision into a Celery retry or a return value.
Nothing here sleeps: a send that must wait says how long, and its task is rescheduled.
"""

import datetime
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import retry_policy
from .models import Attempt, Send
from .partners import clients, http
from .partners.outcomes import Outcome

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NextStep:
    """What the task does after an attempt: retry in `retry_in` seconds, or stop."""

    retry_in: float | None = None

    @property
    def should_retry(self):
        return self.retry_in is not None


STOP = NextStep()


def lease_seconds(send):
    """How long an in-flight claim holds: the longest a call can take, plus margin."""
    config = settings.DUALSEND_PARTNERS[send.partner]
    longest_call = config["connect_timeout"] + config["read_timeout"]
    return longest_call + settings.DUALSEND_LEASE_MARGIN_SECONDS


def mark_started(send_id, now):
    """The first pickup of a send starts its deadline (not its creation: an order that
    waited for a broker outage still gets its full time)."""
    Send.objects.filter(pk=send_id, started_at__isnull=True).update(started_at=now)


def seconds_to_wait(send, now):
    """>0 when this delivery must not call yet: the attempt is not due (a duplicate of a
    retry), or another delivery holds the send in flight and its lease still runs."""
    if send.status == Send.Status.PENDING and send.next_attempt_at:
        return max(0.0, (send.next_attempt_at - now).total_seconds())
    if send.status == Send.Status.IN_FLIGHT and send.lease_expires_at:
        return max(0.0, (send.lease_expires_at - now).total_seconds())
    return 0.0


def claim(send, now):
    """pending → in_flight (or an in_flight whose worker died), counting the attempt.

    True when this delivery won the send; a duplicate delivery gets False and does nothing.
    """
    claimable = Q(status=Send.Status.PENDING) | Q(
        status=Send.Status.IN_FLIGHT, lease_expires_at__lt=now
    )
    updated = (
        Send.objects.filter(claimable, pk=send.pk)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(
            status=Send.Status.IN_FLIGHT,
            attempts=F("attempts") + 1,
            lease_expires_at=now + datetime.timedelta(seconds=lease_seconds(send)),
            first_attempt_at=Coalesce(F("first_attempt_at"), now),
            last_attempt_at=now,
        )
    )
    return updated == 1


def attempt(send_id):
    """Make one HTTP call for a claimed send. Returns the result and when it started."""
    send = Send.objects.select_related("order").get(pk=send_id)
    started_at = timezone.now()
    result = clients.call(send, request_id=send.order.correlation_id)
    return send, result, started_at


def record(send, result, started_at, attempt_number):
    """Write the Attempt row and move the send; return what the task does next.

    `attempt_number` is this delivery's claim (the send's `attempts` when it claimed):
    the send moves only if nobody claimed it since, so a delivery whose lease ran out
    (its worker stalled, the database was down) cannot overwrite a newer attempt.
    """
    decision = result.decision
    answer = result.answer
    now = timezone.now()
    step, give_up = _next_step(send, result, now)
    with transaction.atomic():
        Attempt.objects.create(
            send=send,
            number=attempt_number,
            started_at=started_at,
            duration_ms=answer.duration_ms,
            status_code=answer.status_code,
            error=_attempt_error(answer),
            outcome=decision.outcome,
            will_retry=step.should_retry,
            retry_in_seconds=step.retry_in,
        )
        changes = {
            "last_status_code": answer.status_code,
            "lease_expires_at": None,
        }
        if decision.outcome == Outcome.SUCCEEDED:
            changes |= {
                "status": Send.Status.SUCCEEDED,
                "remote_id": result.remote_id,
                "nothing_to_undo": decision.nothing_to_undo,
                "error": "",
                "finished_at": now,
                "next_attempt_at": None,
            }
        elif step.should_retry:
            changes |= {
                "status": Send.Status.PENDING,
                "error": decision.reason,
                "next_attempt_at": now + datetime.timedelta(seconds=step.retry_in),
            }
        else:
            changes |= {
                "status": Send.Status.FAILED,
                "failure_kind": (
                    Send.FailureKind.DECLINED
                    if decision.outcome == Outcome.FAILED
                    else Send.FailureKind.UNKNOWN
                ),
                "error": f"{decision.reason}; {give_up}" if give_up else decision.reason,
                "finished_at": now,
                "next_attempt_at": None,
            }
        still_ours = Send.objects.filter(
            pk=send.pk, status=Send.Status.IN_FLIGHT, attempts=attempt_number
        ).update(**changes)
    _log_attempt(send, decision, step, give_up)
    if not still_ours:
        logger.warning(
            "send=%s attempt %s recorded late: a newer claim owns the send", send.pk, attempt_number
        )
        return STOP
    return step


def _next_step(send, result, now):
    """Retry after a delay, or stop; with the reason for giving up, if it gave up."""
    if result.decision.outcome != Outcome.RETRY:
        return STOP, ""
    policy = retry_policy.policy_for(send)
    attempts_made = _attempts_against_budget(send, result)
    delay = retry_policy.next_delay(policy, attempts_made, result.retry_after)
    give_up = retry_policy.give_up_reason(
        policy,
        attempts_made=attempts_made,
        started_at=send.started_at or now,
        now=now,
        delay=delay,
    )
    if give_up:
        return STOP, give_up
    return NextStep(retry_in=delay), ""


def defer(send_id, admission, now):
    """The gate said not now: put the send off, or give up when its deadline would pass."""
    send = Send.objects.select_related("order").get(pk=send_id)
    policy = retry_policy.policy_for(send)
    give_up = retry_policy.give_up_reason(
        policy,
        attempts_made=send.attempts_in_budget,
        started_at=send.started_at or now,
        now=now,
        delay=admission.wait_seconds,
        count_attempts=False,
    )
    if give_up:
        _fail_unsent(send, f"{admission.reason}; {give_up}", now)
        return STOP
    wait = retry_policy.spread_later(admission.wait_seconds)
    Send.objects.filter(pk=send_id, status=Send.Status.PENDING).update(
        deferrals=F("deferrals") + 1,
        next_attempt_at=now + datetime.timedelta(seconds=wait),
        error=f"deferred: {admission.reason}",
    )
    logger.info(
        "order=%s request_id=%s send=%s deferred %.2fs: %s",
        send.order_id,
        send.order.correlation_id,
        send.operation,
        wait,
        admission.reason,
    )
    return NextStep(retry_in=wait)


def _fail_unsent(send, reason, now):
    """Past the deadline without a call now: clean if no call was ever made."""
    kind = Send.FailureKind.NOT_SENT if send.attempts == 0 else Send.FailureKind.UNKNOWN
    Send.objects.filter(pk=send.pk, status=Send.Status.PENDING).update(
        status=Send.Status.FAILED,
        failure_kind=kind,
        error=reason,
        finished_at=now,
        next_attempt_at=None,
    )
    logger.warning(
        "order=%s request_id=%s send=%s failed (%s): %s",
        send.order_id,
        send.order.correlation_id,
        send.operation,
        kind,
        reason,
    )


def kept_answer(result, started_at, attempt_number):
    """An answer whose bookkeeping failed (database down), as task arguments."""
    return {
        "answer": result.answer.to_json(),
        "started_at": started_at.isoformat(),
        "attempt_number": attempt_number,
    }


def record_kept_answer(send_id, kept):
    """Record an answer kept across a retry: the partner is not called again."""
    send = Send.objects.select_related("order").get(pk=send_id)
    answer = http.WireAnswer.from_json(kept["answer"])
    result = clients.interpret(send, answer)
    started_at = datetime.datetime.fromisoformat(kept["started_at"])
    return record(send, result, started_at, kept["attempt_number"])


def _attempts_against_budget(send, result):
    """Attempts that count against max_attempts: a 429 is the partner setting the pace,
    not failing, so it spends only the deadline (and Retry-After is always honoured)."""
    rate_limited = send.attempt_rows.filter(
        number__gt=send.budget_starts_after, status_code=429
    ).count() + (result.answer.status_code == 429)
    return send.attempts_in_budget - rate_limited


def _attempt_error(answer):
    if answer.status_code is None:
        return answer.exception
    if answer.status_code >= 300:
        return f"{answer.error_code}: {answer.error_message}".strip(": ")
    return ""


def _log_attempt(send, decision, step, give_up):
    logger.info(
        "order=%s request_id=%s send=%s attempt=%s outcome=%s reason=%s retry_in=%s %s",
        send.order_id,
        send.order.correlation_id,
        send.operation,
        send.attempts,
        decision.outcome,
        decision.reason,
        step.retry_in,
        give_up,
    )


def summary(send_id):
    """What a send task returns: enough for the chord's results, the database has the rest."""
    send = Send.objects.get(pk=send_id)
    return {"send": send.pk, "operation": send.operation, "status": send.status}
