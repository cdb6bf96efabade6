"""The admin of the circuit breakers: every transition ever made, and each one's state now.

Transitions are rows, read-only like the rest of the record. The live state lives in
Redis, so the list page reads it there on each view and shows it above the rows.

Each breaker has a reset button there (a POST to `reset/<partner>/`, CSRF-protected),
for staff holding `dualsend_app.reset_breaker`; anyone else is shown no button and
refused (403) a forged POST. A reset is on record twice: its transition row, whose
reason names the operator, and Django's admin log.
"""

import datetime
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import Http404, HttpRequest, HttpResponseBase, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import URLPattern, path
from redis import RedisError

from ..models import BreakerTransition
from . import breaker_reset, gate, ratelimit

RESET_PERMISSION = "dualsend_app.reset_breaker"


@admin.register(BreakerTransition)
class BreakerTransitionAdmin(admin.ModelAdmin):
    change_list_template = "admin/dualsend_app/breakertransition/change_list.html"
    list_display = ("partner", "from_state", "to_state", "at", "reason")
    list_filter = ("partner", "to_state")
    date_hierarchy = "at"
    list_per_page = 100
    fields = readonly_fields = ("partner", "from_state", "to_state", "at", "reason")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_reset_permission(self, request: HttpRequest) -> bool:
        """Resetting changes what every worker does next: a permission of its own."""
        return request.user.has_perm(RESET_PERMISSION)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponseBase:
        extra_context = (extra_context or {}) | {
            "breakers_now": [live_breaker(partner) for partner in settings.DUALSEND_PARTNERS],
            "may_reset_breakers": self.has_reset_permission(request),
        }
        return super().changelist_view(request, extra_context=extra_context)

    def get_urls(self) -> list[URLPattern]:
        reset = path(
            "reset/<str:partner>/",
            self.admin_site.admin_view(self.reset_view),
            name="dualsend_app_breakertransition_reset",
        )
        return [reset, *super().get_urls()]

    def reset_view(self, request: HttpRequest, partner: str) -> HttpResponseBase:
        """POST: close `partner`'s breaker now (`breaker_reset.reset`), then back to the list."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_reset_permission(request):
            raise PermissionDenied
        if partner not in settings.DUALSEND_PARTNERS:
            raise Http404(f"no partner {partner!r}")
        try:
            result = breaker_reset.reset(partner, by=request.user.get_username())
        except RedisError as exc:
            self.message_user(
                request,
                f"The {partner} breaker was not reset: Redis unreachable "
                f"({type(exc).__name__}). Try again once Redis answers.",
                messages.ERROR,
            )
            return redirect("admin:dualsend_app_breakertransition_changelist")
        said = f"Reset the {partner} breaker: closed, its window cleared (it was "
        said += f"{result.previous_state})."
        if result.transition is None:
            self.message_user(
                request, f"{said} Not recorded: the database did not answer.", messages.WARNING
            )
        else:
            self.log_addition(request, result.transition, said)
            self.message_user(request, said, messages.SUCCESS)
        return redirect("admin:dualsend_app_breakertransition_changelist")


def live_breaker(partner: str) -> dict[str, Any]:
    """One partner's breaker as Redis has it now, with its rule, for the list page."""
    row = {"partner": partner, "rule": breaker_rule(partner)}
    try:
        state = gate.breaker_state(partner)
        paused = ratelimit.pause_remaining(partner)
    except RedisError as exc:
        unknown = dict.fromkeys(("calls", "failures", "slow", "open_until", "paused_seconds"))
        return row | unknown | {"state": f"unknown: Redis unreachable ({type(exc).__name__})"}
    open_until = state["open_until"]
    if open_until is not None:
        open_until = datetime.datetime.fromtimestamp(open_until, tz=datetime.UTC)
    return row | state | {"open_until": open_until, "paused_seconds": round(paused, 1)}


def breaker_rule(partner: str) -> str:
    """The configured thresholds, in one line."""
    config = settings.DUALSEND_PARTNERS[partner].breaker
    return (
        f"opens when ≥ {config.failure_rate:.0%} of calls fail or ≥ "
        f"{config.slow_call_rate:.0%} take ≥ {config.slow_call_seconds:g} s, over "
        f"{config.window:g} s and ≥ {config.min_calls} calls; open "
        f"{config.open_seconds:g} s; {config.half_open_probes} probe(s) when half-open, "
        "fresh sends first; a send's retries count once"
    )
