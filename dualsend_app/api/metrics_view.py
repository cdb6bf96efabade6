"""GET /metrics: the Prometheus scrape target of a one-host deployment.

Every process of the host adds its series through the multiprocess directory
(`dualsend_app/metrics.py`); the breaker and queue series are read now
(`dualsend_app/metrics_state.py`). Only a loopback client, or one holding the metrics
token, is answered (`dualsend_app/metrics_access.py`); any other gets 403 in the API's
error shape. A dependency that is down leaves its series out: never a 500 for it.
"""

import functools

from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from dualsend_app import metrics, metrics_access, metrics_state

from . import errors
from .views import api_view


@api_view("GET")
def metrics_endpoint(request: HttpRequest) -> HttpResponse:
    """The host's series in the format the scraper asks for (Prometheus text or
    OpenMetrics)."""
    if not metrics_access.may_read_metrics(request.META):
        raise errors.ApiError(403, metrics_access.FORBIDDEN_CODE, metrics_access.FORBIDDEN_MESSAGE)
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encode(scrape_registry()), content_type=content_type)


@functools.cache
def scrape_registry() -> CollectorRegistry:
    """Built once per process: its collectors read the files and the live state at each
    scrape."""
    return metrics.registry_for_scrape(metrics_state.LiveStateCollector())
