"""The admin: read the record of every order, its sends and every attempt; re-drive.

Nothing here can corrupt the record. Every field is read-only, nothing can be added or
deleted, and the change pages are view pages. The payment source is shown masked (its
last 4 characters at most), in the order's payload and in a charge's request body; an
order's client is shown by its name, never by its token. The one thing an operator can
do is re-drive the failed compensations of a `needs_attention` order, through the same
business rules the workers use (`orders.redrive`); it needs `dualsend_app.change_order`,
and is on record three times: a `Redrive` row and a status history row naming the
staff user, and Django's admin log. An order's page draws its timeline (`timeline_svg.py`)
and lists its status history; attempts and re-drives have list pages of their own.
"""

import datetime
import json

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import RelatedOnlyFieldListFilter
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from . import log_context, orders, timeline_svg
from .masking import masked_payload, masked_request_body
from .models import Attempt, Order, Redrive, Send

# Django discovers this module only: the circuit breakers' pages register on import.
from .resilience import admin as resilience_admin  # noqa: F401

# What an attempt shows, on its order's page and on its own.
ATTEMPT_FIELDS = (
    "number",
    "started_at",
    "duration_ms",
    "status_code",
    "outcome",
    "error",
    "will_retry",
    "retry_in_seconds",
)


def milliseconds_between(
    start: datetime.datetime | None, end: datetime.datetime | None
) -> int | None:
    """Whole milliseconds from `start` to `end`, or None while either is missing."""
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000)


def client_label(client_id: str) -> str:
    """An order's client as the admin names it: its name, else its id; never its token."""
    for client in settings.DUALSEND_API_CLIENTS:
        if client.id == client_id:
            return client.name or f"{client_id} (unnamed token)"
    return f"{client_id} (not configured now)"


class ReadOnlyAdminMixin:
    """A record, not a form: viewable, never added to, changed or deleted here."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class SendDurationMixin:
    @admin.display(description="duration (ms)")
    def duration_ms(self, send: Send) -> int | None:
        """First attempt to final outcome, retries and their waits included."""
        return milliseconds_between(send.first_attempt_at, send.finished_at)


# What a send is at a glance: its row on the order page, and the head of its own page.
SEND_SUMMARY_FIELDS = (
    "operation",
    "partner",
    "status",
    "failure_kind",
    "attempts",
    "deferrals",
    "remote_id",
    "last_status_code",
    "error",
    "idempotency_key",
    "first_attempt_at",
    "last_attempt_at",
    "finished_at",
    "duration_ms",
)


class SendInline(SendDurationMixin, ReadOnlyAdminMixin, admin.TabularInline):
    """An order's sends; each row links to its Send page, where its attempts are."""

    model = Send
    extra = 0
    show_change_link = True
    fields = readonly_fields = SEND_SUMMARY_FIELDS


class AttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Every HTTP call of a send, in order."""

    model = Attempt
    extra = 0
    fields = readonly_fields = ATTEMPT_FIELDS


class RedriveInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Each time the sweeper, or an operator, picked the order up again, and why."""

    model = Redrive
    extra = 0
    fields = readonly_fields = ("at", "kind", "by_username", "detail")


admin.site.site_header = "dualsend administration"
admin.site.site_title = "dualsend admin"
admin.site.index_title = "Orders, their sends and every call"


@admin.register(Order)
class OrderAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "status",
        "created_at",
        "dispatched_at",
        "settled_at",
        "end_to_end_ms",
        "redrive_count",
        "correlation_id",
        "client_shown",
    )
    list_filter = ("status",)
    # Exact matches: ids and keys are pasted whole, and exact lookups use the indexes.
    search_fields = ("=id", "=idempotency_key", "=sends__idempotency_key", "=correlation_id")
    search_help_text = "Order id, idempotency key (the order's or any send's), correlation id."
    date_hierarchy = "created_at"
    list_per_page = 50
    actions = ("redrive_compensations",)
    inlines = (SendInline, RedriveInline)
    fieldsets = (
        (None, {"fields": ("id", "status", "status_reason", "client_shown", "correlation_id")}),
        ("Timeline", {"fields": ("timeline",)}),
        ("Status history", {"fields": ("status_history",)}),
        ("Recovery", {"fields": ("redrive_count",)}),
        ("Timing", {"fields": ("created_at", "dispatched_at", "settled_at", "end_to_end_ms")}),
        ("Request", {"fields": ("idempotency_key", "request_fingerprint", "payload_shown")}),
        ("Attempts", {"fields": ("attempts_table",)}),
    )
    readonly_fields = (
        "id",
        "status",
        "status_reason",
        "client_shown",
        "correlation_id",
        "created_at",
        "dispatched_at",
        "settled_at",
        "end_to_end_ms",
        "idempotency_key",
        "request_fingerprint",
        "payload_shown",
        "attempts_table",
        "redrive_count",
        "timeline",
        "status_history",
    )

    @admin.display(description="client", ordering="client")
    def client_shown(self, order: Order) -> str:
        return client_label(order.client)

    @admin.display(description="payload")
    def payload_shown(self, order: Order) -> str:
        """The request as accepted, `payment_source` masked."""
        return json.dumps(masked_payload(order.payload), ensure_ascii=False)

    @admin.display(description="end to end (ms)")
    def end_to_end_ms(self, order: Order) -> int | None:
        return milliseconds_between(order.created_at, order.settled_at)

    @admin.display(description="every HTTP call")
    def attempts_table(self, order: Order) -> str:
        """All attempts of all sends, so the order's story reads on one page."""
        attempts = Attempt.objects.filter(send__order=order).select_related("send")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td><td>{}</td></tr>",
            (
                (
                    attempt.send.operation,
                    attempt.number,
                    attempt.started_at.isoformat(timespec="milliseconds"),
                    attempt.duration_ms,
                    attempt.status_code or "-",
                    attempt.outcome,
                    attempt.error or "",
                    f"in {attempt.retry_in_seconds:.2f} s" if attempt.will_retry else "no",
                )
                for attempt in attempts.order_by("started_at", "number")
            ),
        )
        if not rows:
            return "no HTTP call yet"
        return format_html(
            "<table><thead><tr><th>operation</th><th>#</th><th>started</th>"
            "<th>duration (ms)</th><th>status code</th><th>outcome</th><th>error</th>"
            "<th>retry</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="timeline")
    def timeline(self, order: Order) -> str:
        """Both sends side by side in time: every attempt, every wait, the settle."""
        return timeline_svg.order_timeline_svg(order)

    @admin.display(description="every status change")
    def status_history(self, order: Order) -> str:
        """From, to, when, why, and the operator when one moved it."""
        rows = format_html_join(
            "",
            '<tr class="status-change"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td></tr>",
            (
                (
                    change.at.isoformat(timespec="milliseconds"),
                    change.from_status or "-",
                    change.to_status,
                    change.by_username or "-",
                    change.reason,
                )
                for change in order.status_changes.all()
            ),
        )
        if not rows:
            return "no status history recorded"
        return format_html(
            '<table class="status-history"><thead><tr><th>at</th><th>from</th><th>to</th>'
            "<th>by</th><th>why</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    def has_redrive_permission(self, request: HttpRequest) -> bool:
        """Re-driving changes an order through the business rules: a change permission."""
        return request.user.has_perm("dualsend_app.change_order")

    @admin.action(
        description="Re-drive needs_attention orders (undo what may have taken effect)",
        permissions=("redrive",),
    )
    def redrive_compensations(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        """`orders.redrive` for each order; each refusal is reported with its reason."""
        redriven: list[tuple[Order, int]] = []
        refused: list[tuple[Order, str]] = []
        for order in queryset.only("id", "status", "correlation_id"):
            # Its log lines, and the tasks it enqueues, carry the order's ids.
            with log_context.bound(order_id=order.pk, correlation_id=order.correlation_id):
                result = orders.redrive(order.pk, by=request.user)
            if result.refused:
                refused.append((order, result.refused_because or ""))
            else:
                redriven.append((order, result.sends))
                # Django's admin log: who, when, what (the Redrive row says it too).
                self.log_change(
                    request, order, f"Re-drove: {result.sends} compensation send(s) going"
                )
        self._report_redrive(request, redriven, refused)

    def _report_redrive(
        self,
        request: HttpRequest,
        redriven: list[tuple[Order, int]],
        refused: list[tuple[Order, str]],
    ) -> None:
        if redriven:
            sends = sum(count for _, count in redriven)
            self.message_user(
                request,
                f"Re-drove {len(redriven)} order(s): {sends} compensation send(s) "
                "going again with a fresh attempt budget and the same idempotency keys.",
                messages.SUCCESS,
            )
        if refused:
            listed = "; ".join(f"{order.pk}: {why}" for order, why in refused)
            self.message_user(
                request,
                f"Did not re-drive {len(refused)} order(s): {listed}",
                messages.WARNING,
            )


@admin.register(Send)
class SendAdmin(SendDurationMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "order_link",
        "operation",
        "partner",
        "status",
        "failure_kind",
        "attempts",
        "deferrals",
        "last_status_code",
        "remote_id",
        "first_attempt_at",
        "finished_at",
        "duration_ms",
    )
    list_filter = ("partner", "operation", "status", "failure_kind")
    search_fields = ("=order__id", "=idempotency_key", "=remote_id")
    search_help_text = "Order id, the send's idempotency key, the partner's remote id."
    list_select_related = ("order",)
    list_per_page = 100
    inlines = (AttemptInline,)
    fields = readonly_fields = (
        "order_link",
        *SEND_SUMMARY_FIELDS,
        # What only the send's own page shows: the exact request, the claim and its timing.
        "nothing_to_undo",
        "method",
        "path",
        "request_body_shown",
        "budget_starts_after",
        "lease_expires_at",
        "next_attempt_at",
        "created_at",
        "started_at",
    )

    @admin.display(description="request body")
    def request_body_shown(self, send: Send) -> str:
        """The exact request sent, but a charge's payment source, masked."""
        return masked_request_body(send.operation, send.request_body)

    @admin.display(description="order", ordering="order__created_at")
    def order_link(self, send: Send) -> str:
        url = reverse("admin:dualsend_app_order_change", args=(send.order_id,))
        return format_html('<a href="{}">{}</a>', url, send.order_id)


@admin.register(Attempt)
class AttemptAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every HTTP call to a partner, newest first, to filter across orders."""

    list_display = (
        "id",
        "order_link",
        "send_link",
        "number",
        "started_at",
        "duration_ms",
        "status_code",
        "outcome",
        "will_retry",
        "retry_in_seconds",
        "error",
    )
    list_filter = (
        "send__partner",
        "send__operation",
        "outcome",
        "status_code",
        "will_retry",
        "started_at",
    )
    search_fields = ("=send__order__id", "=send__idempotency_key")
    search_help_text = "Order id, or the send's idempotency key."
    list_select_related = ("send",)
    # Newest first by primary key: the attempt table's own index, no sort of its rows.
    ordering = ("-id",)
    list_per_page = 100
    fields = readonly_fields = ("send_link", "order_link", *ATTEMPT_FIELDS)

    @admin.display(description="order")
    def order_link(self, attempt: Attempt) -> str:
        url = reverse("admin:dualsend_app_order_change", args=(attempt.send.order_id,))
        return format_html('<a href="{}">{}</a>', url, attempt.send.order_id)

    @admin.display(description="send", ordering="send__operation")
    def send_link(self, attempt: Attempt) -> str:
        url = reverse("admin:dualsend_app_send_change", args=(attempt.send_id,))
        return format_html('<a href="{}">{}</a>', url, attempt.send.operation)


@admin.register(Redrive)
class RedriveAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every re-drive, by the sweeper or by an operator (who, when), newest first."""

    list_display = ("at", "order_link", "kind", "by_username", "detail")
    list_filter = ("kind", ("by", RelatedOnlyFieldListFilter), "at")
    search_fields = ("=order__id",)
    search_help_text = "Order id."
    ordering = ("-at", "-id")
    list_per_page = 100
    fields = readonly_fields = ("order_link", "kind", "at", "by", "by_username", "detail")

    @admin.display(description="order", ordering="order__created_at")
    def order_link(self, redrive: Redrive) -> str:
        url = reverse("admin:dualsend_app_order_change", args=(redrive.order_id,))
        return format_html('<a href="{}">{}</a>', url, redrive.order_id)
