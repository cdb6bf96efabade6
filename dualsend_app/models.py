"""The records: an Order, one Send per partner operation, one Attempt per HTTP call.

The database is the source of truth. Every state change is a conditional UPDATE
(a claim): filter on the expected state, update, and check that one row changed, so a
task delivered twice does nothing the second time. An order's status moves only through
`status_history.claim`, which writes the `OrderStatusChange` row with it.
"""

import json
import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from .partners.http import canonical_json
from .partners.outcomes import AnswerOutcome


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


class Order(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        DISPATCHED = "dispatched"
        COMPLETED = "completed"
        FAILED = "failed"
        COMPENSATING = "compensating"
        COMPENSATED = "compensated"
        NEEDS_ATTENTION = "needs_attention"

    FINAL_STATUSES = (
        Status.COMPLETED,
        Status.FAILED,
        Status.COMPENSATED,
        Status.NEEDS_ATTENTION,
    )

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Which API token created the order: idempotency keys are scoped per client.
    client = models.CharField(max_length=64)
    idempotency_key = models.CharField(max_length=255, blank=True)
    # sha256 of the canonical JSON body: "the same body" ignores key order and white space.
    request_fingerprint = models.CharField(max_length=64)
    payload = models.JSONField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    status_reason = models.TextField(blank=True)
    correlation_id = models.CharField(max_length=128)
    created_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    # How often the order was picked up again, by the sweeper or by an operator; each one
    # is a Redrive row.
    redrive_count = models.PositiveIntegerField(default=0)
    # When an operator last re-drove the order: its maximum age counts from here, else
    # from its creation (a re-driven order gets the full time again, not a second expiry
    # at the next sweep).
    redriven_at = models.DateTimeField(null=True, blank=True)

    # Not a column: the sends `orders.create_order` saved with this order, in this process,
    # so that the intake answers without reading back what it has just written.
    new_sends: "list[Send] | None" = None

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Serves the idempotency lookup of POST /api/orders and makes a concurrent
            # duplicate fail on insert instead of creating a second order.
            models.UniqueConstraint(
                fields=["client", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="order_unique_client_idempotency_key",
            ),
        ]
        indexes = [
            # Serves the admin's status filter and the sweeper's "orders in status X" scans.
            models.Index(fields=["status", "created_at"], name="order_status_created"),
            # Serves GET /api/orders: one client's orders, newest first, by cursor.
            models.Index(fields=["client", "-created_at", "-id"], name="order_client_created"),
        ]

    def __str__(self) -> str:
        return f"order {self.id} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("order-detail", kwargs={"order_id": str(self.id)})

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES


class OrderStatusChange(models.Model):
    """One move of an order's status: from, to, when, why, and who when an operator did it.

    Written by `status_history`, in the statement (or transaction) that moves the order,
    and only when the move happened. The first row of an order is its creation (from "").
    """

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="status_changes")
    from_status = models.CharField(max_length=20, choices=Order.Status.choices, blank=True)
    to_status = models.CharField(max_length=20, choices=Order.Status.choices)
    at = models.DateTimeField(default=timezone.now)
    reason = models.TextField(blank=True)
    # The operator whose action it was; their name is kept as text too, so the row still
    # says who after their account is deleted. Both empty for the service's own moves.
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # the partial index below
    )
    by_username = models.CharField(max_length=150, blank=True)

    class Meta:
        # An order's changes are read through the order_id index (the foreign key's own).
        ordering = ["at", "id"]
        indexes = [
            # Serves SET_NULL when a user is deleted. Partial: the rows the service writes
            # on every order (no operator) add nothing to it.
            models.Index(
                fields=["by"], condition=models.Q(by__isnull=False), name="status_change_by"
            ),
        ]

    def __str__(self) -> str:
        return f"order {self.order_id}: {self.from_status or '-'} → {self.to_status}"


class Send(models.Model):
    class Operation(models.TextChoices):
        INVENTORY_RESERVE = "inventory.reserve"
        PAYMENT_CHARGE = "payment.charge"
        INVENTORY_RELEASE = "inventory.release"
        PAYMENT_REFUND = "payment.refund"

    class Status(models.TextChoices):
        PENDING = "pending"
        IN_FLIGHT = "in_flight"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    class FailureKind(models.TextChoices):
        NONE = "", "-"
        # A 4xx: the partner did not act. Nothing to undo.
        DECLINED = "declined", "definite no"
        # Retries ran out, or the deadline passed, without a definite answer: the partner
        # may have acted, so the operation is treated as possibly done.
        UNKNOWN = "unknown", "outcome unknown"
        # The deadline passed before any call was made (breaker open, rate limited): the
        # partner never heard of it. Nothing to undo.
        NOT_SENT = "not_sent", "never sent"

    HEADER_OPERATIONS = (Operation.INVENTORY_RESERVE, Operation.PAYMENT_CHARGE)
    COMPENSATION_OF = {
        Operation.INVENTORY_RESERVE: Operation.INVENTORY_RELEASE,
        Operation.PAYMENT_CHARGE: Operation.PAYMENT_REFUND,
    }
    FINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED)
    # A send is called only while its order still wants it: a header send while the order
    # waits for its outcomes, a compensation while the order is being compensated. An
    # order that moved on (expired, settled) never gets a late call.
    HEADER_ORDER_STATUSES = (Order.Status.PENDING, Order.Status.DISPATCHED)
    COMPENSATION_ORDER_STATUSES = (Order.Status.COMPENSATING,)

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="sends")
    operation = models.CharField(max_length=32, choices=Operation.choices)
    partner = models.CharField(max_length=16, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    failure_kind = models.CharField(
        max_length=16, choices=FailureKind.choices, default=FailureKind.NONE, blank=True
    )
    # A compensation the partner answered 404 to: nothing had happened, nothing undone.
    nothing_to_undo = models.BooleanField(default=False)
    # One key per logical operation, sent on every attempt, created with the send.
    idempotency_key = models.CharField(max_length=64, unique=True, default=new_idempotency_key)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=255)
    # The exact bytes of the first attempt: partners compare bodies byte for byte.
    request_body = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Times a call was put off without calling: breaker open, rate limit, Retry-After.
    deferrals = models.PositiveIntegerField(default=0)
    # The retry budget counts attempts from here: an operator's re-drive moves it up.
    budget_starts_after = models.PositiveIntegerField(default=0)
    remote_id = models.CharField(max_length=128, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    # While in_flight, the claim holds until this time; past it (the worker died
    # mid-call) a redelivered task may claim the send again.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # When a worker first picked the send up: its deadline counts from here.
    started_at = models.DateTimeField(null=True, blank=True)
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # One send per operation and order: creating a compensation twice is a no-op.
            models.UniqueConstraint(fields=["order", "operation"], name="send_unique_operation"),
        ]
        indexes = [
            # Serves the sweeper's "sends stuck in pending or in_flight" scan.
            models.Index(fields=["status", "created_at"], name="send_status_created"),
        ]

    def __str__(self) -> str:
        return f"{self.operation} for order {self.order_id} ({self.status})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.partner = self.partner_of(self.operation)
        super().save(*args, **kwargs)

    @staticmethod
    def partner_of(operation: str) -> str:
        """The partner an operation goes to: "payment.charge" → "payment"."""
        return operation.split(".", 1)[0]

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def is_compensation(self) -> bool:
        return self.operation not in self.HEADER_OPERATIONS

    @property
    def order_statuses_taking_it(self) -> tuple[str, ...]:
        """The order statuses in which this send may still be called."""
        if self.is_compensation:
            return self.COMPENSATION_ORDER_STATUSES
        return self.HEADER_ORDER_STATUSES

    @property
    def attempts_in_budget(self) -> int:
        return self.attempts - self.budget_starts_after

    @property
    def may_have_taken_effect(self) -> bool:
        """Succeeded, or failed without a definite no: it needs undoing."""
        return self.status == self.Status.SUCCEEDED or (
            self.status == self.Status.FAILED and self.failure_kind == self.FailureKind.UNKNOWN
        )

    @property
    def undid_something(self) -> bool:
        return (
            self.is_compensation
            and self.status == self.Status.SUCCEEDED
            and not self.nothing_to_undo
        )

    def request_body_without_card_token(self) -> str | None:
        """A charge's stored request with the card token blanked; None when there is no
        token to forget (not a charge, or forgotten already)."""
        if self.operation != self.Operation.PAYMENT_CHARGE or not self.request_body:
            return None
        body = json.loads(self.request_body)
        if not body.get("source"):
            return None
        return canonical_json(body | {"source": ""})


class Attempt(models.Model):
    send = models.ForeignKey(Send, on_delete=models.CASCADE, related_name="attempt_rows")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    # The partner's error code, or the exception for a call with no answer.
    error = models.TextField(blank=True)
    outcome = models.CharField(max_length=16, choices=AnswerOutcome.choices)
    will_retry = models.BooleanField(default=False)
    retry_in_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["send_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["send", "number"], name="attempt_unique_number"),
        ]
        indexes = [
            # Serves the dashboard's "calls of the last N minutes" and "latest failures",
            # read every few seconds while it is open, and the attempts list's date filter.
            models.Index(fields=["started_at"], name="attempt_started"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.send}"


class Redrive(models.Model):
    """The sweeper picked up work whose message was lost, or gave an order up; or an
    operator re-drove a needs_attention order (`by` says who)."""

    class Kind(models.TextChoices):
        DISPATCH = "dispatch", "order dispatched again"
        SEND = "send", "send enqueued again"
        SETTLE = "settle", "settle enqueued again"
        COMPENSATION = "compensation", "compensation enqueued again"
        FINISH = "finish", "compensations closed"
        EXPIRED = "expired", "past its maximum age"
        OPERATOR = "operator", "re-driven by an operator"

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="redrives")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    detail = models.TextField(blank=True)
    at = models.DateTimeField(default=timezone.now)
    # An operator's re-drive: the staff user, and their name as text (kept after the
    # account is deleted). Both empty for the sweeper.
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    by_username = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for order {self.order_id}"


class BreakerTransition(models.Model):
    """A partner's circuit breaker changed state (the live state is in Redis)."""

    class State(models.TextChoices):
        CLOSED = "closed"
        OPEN = "open"
        HALF_OPEN = "half_open"

    partner = models.CharField(max_length=16)
    from_state = models.CharField(max_length=16, choices=State.choices)
    to_state = models.CharField(max_length=16, choices=State.choices)
    reason = models.TextField(blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # Serves the admin's "transitions of this partner, newest first".
            models.Index(fields=["partner", "at"], name="breaker_partner_at"),
        ]
        # Resetting a breaker changes the live state every worker obeys: a permission of
        # its own, granted apart from viewing the transitions.
        permissions = [("reset_breaker", "Can reset a partner's circuit breaker")]

    def __str__(self) -> str:
        return f"{self.partner} breaker {self.from_state} → {self.to_state}"
