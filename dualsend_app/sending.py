"""One delivery of a send, start to finish: wait, gate, claim, call, observe, record, next.

`run(send_id)` is the whole pipeline of one delivery of a send task and returns a
`NextStep`; the task in `tasks/sends.py` turns it into a Celery retry or a return value,
and does nothing else. Nothing here sleeps: a send that must wait says how long, and its
task is rescheduled.
"""

import datetime
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import metrics, retry_policy, row_reads, send_rows
from .models import Send
from .partners import clients, http
from .partners.clients import PartnerResult
from .partners.outcomes import AnswerOutcome
from .resilience import gate

logger = logging.getLogger(__name__)

# The database was unreachable. Before a call, the task's autoretry waits for it; after a
# call, the answer is kept and recorded by the retry, so the partner is not asked twice.
DATABASE_ERRORS = (OperationalError, InterfaceError)
KEPT_ANSWER_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class NextStep:
    """What the task does after this delivery: stop, or run again in `retry_in` seconds.

    `kept_answer` is a partner answer that could not be recorded (the database was down):
    the next delivery records it instead of calling the partner again.
    """

    retry_in: float | None = None
    kept_answer: dict[str, Any] | None = None
    # The send's status when this delivery ended (for the task's return value), when
    # known without reading the row again.
    status: str = ""
    # The send's order, when this delivery left the send final (or found it so): the
    # order may now be ready to settle (`tasks/sends.py`).
    order_id: uuid.UUID | None = None

    @property
    def should_retry(self) -> bool:
        return self.retry_in is not None

    @property
    def send_is_final(self) -> bool:
        return self.order_id is not None and self.status in Send.FINAL_STATUSES


STOP = NextStep()


@dataclass(frozen=True)
class CallMade:
    """One HTTP call of a claimed send: what came back, when, and which claim made it."""

    send: Send
    result: PartnerResult
    started_at: datetime.datetime
    # The send's `attempts` when this delivery claimed it: its fence (see `record_attempt`).
    attempt_number: int


def run(send_id: int, kept_answer: dict[str, Any] | None = None) -> NextStep:
    """One delivery of a send task, in order: wait if told to, pass the gate, claim,
    call, tell the gate what the answer said, record it, and say what comes next."""
    if kept_answer is not None:
        return record_kept_answer(send_id, kept_answer)
    now = timezone.now()
    send = row_reads.send_with_order(send_id)
    if send.is_final:
        # A duplicate delivery: nothing to send. Its order may still need settling (the
        # delivery that made the send final died before it settled the order).
        return NextStep(status=send.status, order_id=send.order_id)
    if send.order.status not in send.order_statuses_taking_it:
        # The order moved on (it expired) while this send waited: it is never called now.
        _fail_unsent(send, f"not sent: the order is {send.order.status}", now)
        return STOP
    wait = seconds_to_wait(send, now)
    if wait > 0:
        # Early (a duplicate of a retry) or held by another delivery: come back then.
        return NextStep(retry_in=wait)
    failed_before = send.attempts > 0
    admission = gate.admit(send.partner, failed_before=failed_before)
    if not admission.allowed:
        return defer(send, admission, now)
    if not claim(send, now):
        return STOP
    call = attempt(send)
    metrics.record_partner_call(send.partner, send.operation, call.result)  # Prometheus
    gate.observe(
        send.partner,
        answer=call.result.answer,
        decision=call.result.decision,
        send_key=send.idempotency_key,
        failed_before=failed_before,
    )
    try:
        return record_attempt(call)
    except DATABASE_ERRORS:
        logger.warning("send=%s answer kept; database unreachable, retrying", send_id)
        return NextStep(retry_in=KEPT_ANSWER_RETRY_SECONDS, kept_answer=keep_answer(call))


def lease_seconds(send: Send) -> float:
    """How long an in-flight claim holds: the longest a call can take, plus margin."""
    partner = settings.DUALSEND_PARTNERS[send.partner]
    return partner.longest_call_seconds + settings.DUALSEND_LEASE_MARGIN_SECONDS


def seconds_to_wait(send: Send, now: datetime.datetime) -> float:
    """>0 when this delivery must not call yet: the attempt is not due (a duplicate of a
    retry), or another delivery holds the send in flight and its lease still runs."""
    if send.status == Send.Status.PENDING and send.next_attempt_at:
        return max(0.0, (send.next_attempt_at - now).total_seconds())
    if send.status == Send.Status.IN_FLIGHT and send.lease_expires_at:
        return max(0.0, (send.lease_expires_at - now).total_seconds())
    return 0.0


def claim(send: Send, now: datetime.datetime) -> bool:
    """pending → in_flight (or an in_flight whose worker died), counting the attempt, in
    one conditional update; `send` is then updated in memory to match its row.

    True when this delivery won the send; a duplicate delivery, or one whose order no
    longer wants the send, gets False and does nothing. The send's row is the fence:
    expiry fails a pending send with a conditional update on the same row, so exactly
    one of the two wins; and the attempt count read with `send` must still be the row's,
    so no other delivery claimed it in between. The first claim (or deferral) of a send
    starts its deadline (not its creation: an order that waited for a broker outage
    still gets its full time).
    """
    lease_ends = now + datetime.timedelta(seconds=lease_seconds(send))
    if not send_rows.claim(send, now=now, lease_ends=lease_ends):
        return False
    send.status = Send.Status.IN_FLIGHT
    send.attempts += 1
    send.lease_expires_at = lease_ends
    send.started_at = send.started_at or now
    send.first_attempt_at = send.first_attempt_at or now
    send.last_attempt_at = now
    return True


def attempt(send: Send) -> CallMade:
    """Make one HTTP call for a send this delivery has claimed."""
    # Give the database connection back to the pool for the length of the call: a
    # partner's seconds must not hold one of the process's few connections. The next
    # query takes one again; if that fails, `run` keeps the answer for the retry.
    if not connection.in_atomic_block:
        connection.close()
    started_at = timezone.now()
    result = clients.call(send, request_id=send.order.correlation_id)
    return CallMade(send=send, result=result, started_at=started_at, attempt_number=send.attempts)


def record_attempt(call: CallMade) -> NextStep:
    """Write the Attempt row and move the send, in one transaction; say what comes next.

    The send moves only if nobody claimed it since this delivery did (its attempt number
    is the fence), so a delivery whose lease ran out (its worker stalled, the database
    was down) cannot overwrite a newer attempt.
    """
    send, decision, answer = call.send, call.result.decision, call.result.answer
    now = timezone.now()
    plan = _retry_plan(send, call.result, now)
    changes = _send_changes(call.result, plan, now)
    if changes["status"] in Send.FINAL_STATUSES:
        changes |= _forget_card_token(send)
    still_ours = send_rows.record(
        send.pk,
        call.attempt_number,
        changes,
        attempt={
            "number": call.attempt_number,
            "started_at": call.started_at,
            "duration_ms": answer.duration_ms,
            "status_code": answer.status_code,
            "error": _attempt_error(answer),
            "outcome": decision.outcome,
            "will_retry": plan.retries,
            "retry_in_seconds": plan.delay,
        },
    )
    _log_attempt(call, plan)
    if not still_ours:
        logger.warning(
            "send=%s attempt %s recorded late: a newer claim owns the send",
            send.pk,
            call.attempt_number,
        )
        return STOP
    if plan.retries:  # Prometheus: a retry scheduled, and whether Retry-After set its time
        metrics.record_retry_scheduled(
            send.partner, send.operation, retry_after=call.result.retry_after
        )
    return NextStep(retry_in=plan.delay, status=changes["status"], order_id=send.order_id)


def _forget_card_token(send: Send) -> dict[str, Any]:
    """A charge that got its final answer will never be sent again: its card token goes
    in the same statement, rather than waiting for the order to settle."""
    body = send.request_body_without_card_token()
    return {} if body is None else {"request_body": body}


def _retry_plan(
    send: Send, result: PartnerResult, now: datetime.datetime
) -> retry_policy.RetryPlan:
    """A transient answer: when to try again, or why not. A definite one: no retry."""
    if result.decision.outcome is not AnswerOutcome.RETRY:
        return retry_policy.RetryPlan(delay=None)
    return retry_policy.plan_retry(
        retry_policy.policy_for(send),
        attempts_made=_attempts_against_budget(send, result),
        retry_after=result.retry_after,
        started_at=send.started_at or now,
        now=now,
    )


def _send_changes(
    result: PartnerResult, plan: retry_policy.RetryPlan, now: datetime.datetime
) -> dict[str, Any]:
    """The send's new state after an answer: succeeded, pending a retry, or failed."""
    decision = result.decision
    changes: dict[str, Any] = {
        "last_status_code": result.answer.status_code,
        "lease_expires_at": None,
    }
    if decision.outcome is AnswerOutcome.SUCCEEDED:
        return changes | {
            "status": Send.Status.SUCCEEDED,
            "remote_id": result.remote_id,
            "nothing_to_undo": decision.nothing_to_undo,
            "error": "",
            "finished_at": now,
            "next_attempt_at": None,
        }
    if plan.retries:
        return changes | {
            "status": Send.Status.PENDING,
            "error": decision.reason,
            "next_attempt_at": now + datetime.timedelta(seconds=plan.delay),
        }
    definite_no = decision.outcome is AnswerOutcome.FAILED
    return changes | {
        "status": Send.Status.FAILED,
        "failure_kind": Send.FailureKind.DECLINED if definite_no else Send.FailureKind.UNKNOWN,
        "error": "; ".join(filter(None, (decision.reason, plan.gave_up_because))),
        "finished_at": now,
        "next_attempt_at": None,
    }


def defer(send: Send, admission: gate.Admission, now: datetime.datetime) -> NextStep:
    """The gate said not now: put the send off, or give up when its deadline would pass.

    A deferral starts the send's deadline when no claim has yet (see `claim`)."""
    give_up = retry_policy.give_up_reason(
        retry_policy.policy_for(send),
        attempts_made=send.attempts_in_budget,
        started_at=send.started_at or now,
        now=now,
        delay=admission.wait_seconds,
        count_attempts=False,
    )
    if give_up is not None:
        if _fail_unsent(send, f"{admission.reason}; {give_up}", now):
            return NextStep(status=Send.Status.FAILED, order_id=send.order_id)
        return STOP
    wait = retry_policy.spread_later(admission.wait_seconds)
    Send.objects.filter(pk=send.pk, status=Send.Status.PENDING).update(
        started_at=Coalesce(F("started_at"), now),
        deferrals=F("deferrals") + 1,
        next_attempt_at=now + datetime.timedelta(seconds=wait),
        error=f"deferred: {admission.reason}",
    )
    metrics.record_deferral(send.partner, send.operation, admission.reason)  # Prometheus
    logger.info(
        "send=%s deferred %.2fs: %s",
        send.operation,
        wait,
        admission.reason,
    )
    return NextStep(retry_in=wait)


def _fail_unsent(send: Send, reason: str, now: datetime.datetime) -> bool:
    """Past the deadline without a call now: clean if no call was ever made. True when
    this delivery failed the send (it was still pending)."""
    kind = Send.FailureKind.NOT_SENT if send.attempts == 0 else Send.FailureKind.UNKNOWN
    failed = Send.objects.filter(pk=send.pk, status=Send.Status.PENDING).update(
        status=Send.Status.FAILED,
        failure_kind=kind,
        error=reason,
        finished_at=now,
        next_attempt_at=None,
    )
    logger.warning(
        "send=%s failed (%s): %s",
        send.operation,
        kind,
        reason,
    )
    return failed == 1


def keep_answer(call: CallMade) -> dict[str, Any]:
    """An answer whose bookkeeping failed (database down), as task arguments."""
    return {
        "answer": call.result.answer.to_json(),
        "started_at": call.started_at.isoformat(),
        "attempt_number": call.attempt_number,
    }


def record_kept_answer(send_id: int, kept: dict[str, Any]) -> NextStep:
    """Record an answer kept across a retry: the partner is not called again."""
    send = row_reads.send_with_order(send_id)
    answer = http.WireAnswer.from_json(kept["answer"])
    return record_attempt(
        CallMade(
            send=send,
            result=clients.interpret(send, answer),
            started_at=datetime.datetime.fromisoformat(kept["started_at"]),
            attempt_number=kept["attempt_number"],
        )
    )


def _attempts_against_budget(send: Send, result: PartnerResult) -> int:
    """Attempts that count against max_attempts: a 429 is the partner setting the pace,
    not failing, so it spends only the deadline (and Retry-After is always honoured)."""
    rate_limited = send.attempt_rows.filter(
        number__gt=send.budget_starts_after, status_code=429
    ).count() + (result.answer.status_code == 429)
    return send.attempts_in_budget - rate_limited


def _attempt_error(answer: http.WireAnswer) -> str:
    """The Attempt's error: the exception, or the partner's error code and message (the
    HTTP helper has already taken any credential out of them: `partners/redaction.py`)."""
    if answer.status_code is None:
        return answer.exception
    if answer.status_code >= 300:
        return f"{answer.error_code}: {answer.error_message}".strip(": ")
    return ""


def _log_attempt(call: CallMade, plan: retry_policy.RetryPlan) -> None:
    send, decision = call.send, call.result.decision
    logger.info(
        "send=%s attempt=%s outcome=%s reason=%s retry_in=%s %s",
        send.operation,
        call.attempt_number,
        decision.outcome,
        decision.reason,
        plan.delay,
        plan.gave_up_because or "",
    )


def summary(send_id: int, step: NextStep) -> dict[str, Any]:
    """What a send task returns: its send and status; the database has the rest.

    The status this delivery left the send in when it knows it, without a query; read
    from the row only when it does not (a delivery that did nothing)."""
    status = step.status
    if not status:
        status = Send.objects.values_list("status", flat=True).get(pk=send_id)
    return {"send": send_id, "status": status}
