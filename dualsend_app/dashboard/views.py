"""The dashboard's two views, for active staff only (anyone else is sent to the admin's
login): the page, whose first view the server renders whole, and the JSON that the page's
script (static/dashboard/dashboard.js) fetches every few seconds to redraw it in place.

The database down answers 503 with Retry-After, like the API; Redis down is no error at
all: the breakers then say "unknown" (stats.breakers_now).
"""

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from ..api import errors
from . import chart, stats
from .document import snapshot_document

logger = logging.getLogger(__name__)

View = Callable[..., HttpResponse]

# The page's refresh period; `?refresh=N` asks for another, within these bounds.
REFRESH_SECONDS = 5
MIN_REFRESH_SECONDS, MAX_REFRESH_SECONDS = 1, 300


def dashboard_view(*, json: bool) -> Callable[[View], View]:
    """GET only, never cached, staff only; a dependency down is 503, as JSON or as text."""

    def decorate(view: View) -> View:
        guarded = staff_member_required(view, login_url="admin:login")

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                # The guard inside: it reads the session, from the database.
                return guarded(request, *args, **kwargs)
            except Exception as exc:
                error = errors.unavailable_for(exc)
                if error is None:
                    raise
                logger.warning(
                    "%s answered 503: %s (%s)", request.path, error.message, type(exc).__name__
                )
                if json:
                    return error.response()
                response = HttpResponse(error.message, status=503, content_type="text/plain")
                response["Retry-After"] = error.headers["Retry-After"]
                return response

        return require_GET(never_cache(wrapper))

    return decorate


@dashboard_view(json=False)
def dashboard_page(request: HttpRequest) -> HttpResponse:
    window = window_seconds(request.GET.get("window")) or stats.DEFAULT_WINDOW_SECONDS
    snapshot = stats.snapshot(window)
    context = admin.site.each_context(request) | {
        "title": "Dashboard",
        "snapshot": snapshot,
        "chart": chart.orders_chart(snapshot.orders),
        "windows": stats.WINDOWS.items(),
        "refresh_seconds": refresh_seconds(request.GET.get("refresh")),
        # The window form keeps a refresh period the URL asked for.
        "refresh_asked": "refresh" in request.GET,
        "data_url": reverse("dashboard:data"),
    }
    return render(request, "dashboard/dashboard.html", context)


@dashboard_view(json=True)
def dashboard_data(request: HttpRequest) -> HttpResponse:
    raw = request.GET.get("window")
    window = stats.DEFAULT_WINDOW_SECONDS if raw is None else window_seconds(raw)
    if window is None:
        choices = ", ".join(str(seconds) for seconds in stats.WINDOWS)
        return errors.error_response(
            400, "invalid_window", f"window is in seconds, one of {choices}"
        )
    return JsonResponse(snapshot_document(stats.snapshot(window)))


def window_seconds(raw: str | None) -> int | None:
    """The window asked for, when it is one of those offered."""
    try:
        seconds = int(raw or "")
    except ValueError:
        return None
    return seconds if seconds in stats.WINDOWS else None


def refresh_seconds(raw: str | None) -> int:
    try:
        seconds = int(raw or "")
    except ValueError:
        return REFRESH_SECONDS
    return min(max(seconds, MIN_REFRESH_SECONDS), MAX_REFRESH_SECONDS)
