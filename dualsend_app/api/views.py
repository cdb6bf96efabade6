"""dualsend's HTTP API: POST /api/orders, GET /api/orders/<id>[?wait=N]; GET /api/orders
(the client's list) lives in listing.py.

Every answer is JSON and carries `X-Request-ID`: the client's when it is sane, else a new
one. Errors share one shape (see errors.py). The checks of a POST run in the order users
rely on: token 401, the client's rate 429, media type 415, size 413, JSON syntax 400,
fields 422, idempotency 422/409; nothing is written and nothing dispatched when one fails.
An order belongs to the client that created it: to any other it does not exist (404).
"""

import functools
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from dualsend_app import log_context, order_events, row_reads
from dualsend_app.models import Order, Send

from . import auth, client_limits, errors, idempotency, listing, validation
from .serializers import order_to_dict

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(request: HttpRequest) -> str:
    """The client's X-Request-ID when sane (1..128 of [A-Za-z0-9._:-]), else a new one."""
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    if SANE_REQUEST_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


View = Callable[..., HttpResponse]


def _order_named(url_arguments: dict[str, Any]) -> uuid.UUID | None:
    """The order id in the URL, when it is one."""
    try:
        return uuid.UUID(url_arguments.get("order_id", ""))
    except (TypeError, ValueError):
        return None


def api_view(*allowed_methods: str) -> Callable[[View], View]:
    """405 for other methods, ApiError rendered as JSON, a dependency that is down as 503
    with Retry-After, anything else as 500; X-Request-ID on every answer."""

    def decorate(view: View) -> View:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            request.request_id = request_id_of(request)
            # Every line of this request carries its id and the order its URL names (a POST:
            # once created), Django's and gunicorn's after the view included; the next
            # request on this thread starts without them (log_context).
            log_context.bind(order_id=_order_named(kwargs), correlation_id=request.request_id)
            try:
                if request.method not in allowed_methods:
                    raise errors.method_not_allowed(request.method, allowed_methods)
                response = view(request, *args, **kwargs)
            except errors.ApiError as error:
                logger.info(
                    "%s %r answered %s %s",
                    request.method,
                    request.path,
                    error.status,
                    error.code,
                )
                response = error.response()
            except Exception as exc:
                # A dependency that is down (database, broker, Redis) answers 503 with
                # Retry-After; only what we cannot name is a 500.
                error = errors.unavailable_for(exc)
                if error is None:
                    logger.exception(
                        "%s %r failed",
                        request.method,
                        request.path,
                    )
                    error = errors.internal_error()
                else:
                    logger.warning(
                        "%s %r answered 503: %s (%s: %s)",
                        request.method,
                        request.path,
                        error.message,
                        type(exc).__name__,
                        exc,
                    )
                response = error.response()
            response[REQUEST_ID_HEADER] = request.request_id
            return response

        return wrapper

    return decorate


@api_view("GET", "POST")
def orders_collection(request: HttpRequest) -> JsonResponse:
    """Create an order (202), or replay the one created with this Idempotency-Key (200);
    GET lists the client's orders (listing.py)."""
    if request.method == "GET":
        return listing.list_orders(request)
    client = auth.authenticate(request).id
    client_limits.check_rate(client)
    document = validation.read_json_object(request, max_bytes=settings.DUALSEND_MAX_BODY_BYTES)
    payload, problems = validation.validate_order(document)
    key, key_problem = idempotency.parse_key(request.headers.get(idempotency.HEADER))
    if key_problem:
        problems[idempotency.HEADER] = key_problem
    if problems:
        raise errors.invalid_fields(problems)

    outcome, order = idempotency.create_or_replay(
        client=client, key=key, payload=payload, correlation_id=request.request_id
    )
    log_context.bind(order_id=order.pk)
    if idempotency.answered_as_written(outcome, order):
        # The order as this request saved it (pending, its sends not yet called): no read
        # back of rows just written. GET shows how it moved on.
        response = JsonResponse(order_to_dict(order, order.new_sends), status=202)
    else:
        # A replay shows the order as it stands now.
        order, sends = row_reads.order_with_sends(order.pk, client) or (order, None)
        status = 202 if outcome == idempotency.IntakeResult.CREATED else 200
        response = JsonResponse(order_to_dict(order, sends), status=status)
    response["Location"] = order.get_absolute_url()
    return response


@api_view("GET")
def order_detail(request: HttpRequest, order_id: str) -> JsonResponse:
    """The order and every send; ?wait=N holds the answer until it is final or N passed.

    Another client's order is answered exactly as an unknown id: one query, filtered by
    the calling client, finds neither. Past the process's cap on ?wait holders the order
    is answered at once, as it stands.
    """
    client = auth.authenticate(request).id
    client_limits.check_rate(client)
    wait = validation.parse_wait(request.GET.get("wait"), cap=settings.DUALSEND_MAX_WAIT_SECONDS)
    try:
        pk = uuid.UUID(order_id)
    except ValueError:
        raise errors.not_found() from None
    found = row_reads.order_with_sends(pk, client)  # one query, filtered by the client
    if found is None:
        raise errors.not_found()
    order, sends = found
    if wait > 0 and not order.is_final:
        with client_limits.wait_slots.slot() as may_wait:
            if may_wait:
                order, sends = _wait_until_final(order, wait) or (order, sends)
            else:
                logger.info("?wait holders at their cap: answered at once")
    return JsonResponse(order_to_dict(order, sends))


def _wait_until_final(order: Order, seconds: float) -> tuple[Order, list[Send]] | None:
    """Wait until the order is final or `seconds` passed; the order and its sends then
    (None if it is gone).

    Woken by settle's message (`order_events`), with a slow poll in case it is lost.
    Each look is its own autocommit query, so it sees what other processes committed
    (no transaction is held open across the wait), and no connection is held between.
    """
    if connection.in_atomic_block:
        logger.warning("?wait inside a transaction may not see new commits")
    deadline = time.monotonic() + seconds
    with order_events.listening(order.pk) as listener:
        # Subscribed: look once more, the order may have settled before we listened.
        status = _current_status(order.pk)
        while status not in Order.FINAL_STATUSES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not connection.in_atomic_block:
                connection.close()  # back to the pool while we wait
            if listener.wait(remaining):
                break  # settle's message: the order is final, read once below
            status = _current_status(order.pk)
    return row_reads.order_with_sends(order.pk, order.client)


def _current_status(pk: uuid.UUID) -> str:
    status = row_reads.order_status(pk)
    if status is None:  # deleted while we waited
        raise errors.not_found()
    return status
