"""Which partner module serves each operation, and one call of a Send through it."""

from dataclasses import dataclass

from django.conf import settings

from project.partner_settings import PartnerSettings

from .. import tracing
from ..models import Order, Send
from . import http, inventory, payment
from .outcomes import AnswerOutcome, Decision, decide

Operation = Send.Operation

REQUEST_BUILDERS = {
    Operation.INVENTORY_RESERVE: inventory.reserve_request,
    Operation.INVENTORY_RELEASE: inventory.release_request,
    Operation.PAYMENT_CHARGE: payment.charge_request,
    Operation.PAYMENT_REFUND: payment.refund_request,
}
PARTNER_MODULES = {inventory.PARTNER: inventory, payment.PARTNER: payment}


@dataclass(frozen=True)
class PartnerResult:
    """One call's answer and what it means."""

    answer: http.WireAnswer
    decision: Decision
    remote_id: str
    retry_after: float | None


def build_request(operation: str, order: Order) -> tuple[str, str, str]:
    """(method, path, body) for an operation on an order; the body is stored and reused."""
    return REQUEST_BUILDERS[operation](order)


def partner_config(partner: str) -> PartnerSettings:
    return settings.DUALSEND_PARTNERS[partner]


def call(send: Send, *, request_id: str) -> PartnerResult:
    """Make one HTTP call for a Send, with its stored request and idempotency key."""
    module = PARTNER_MODULES[send.partner]
    config = partner_config(send.partner)
    # The HTTP span inside it (the `requests` instrumentation) sends the `traceparent`.
    with tracing.span(f"call {send.operation}", order_id=str(send.order_id), send_id=send.pk):
        answer = http.call(
            partner=send.partner,
            config=config,
            auth=module.auth(config.credential),
            method=send.method,
            path=send.path,
            body=send.request_body,
            idempotency_key=send.idempotency_key,
            request_id=request_id,
        )
    return interpret(send, answer)


def interpret(send: Send, answer: http.WireAnswer) -> PartnerResult:
    """What a wire answer means for this send (also for an answer kept across a retry)."""
    module = PARTNER_MODULES[send.partner]
    decision = decide(
        status_code=answer.status_code,
        error_code=answer.error_code,
        is_compensation=send.is_compensation,
    )
    return PartnerResult(
        answer=answer,
        decision=decision,
        remote_id=module.remote_id(answer) if decision.outcome is AnswerOutcome.SUCCEEDED else "",
        retry_after=http.retry_after_seconds(answer.headers),
    )
