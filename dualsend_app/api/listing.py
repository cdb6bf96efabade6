"""GET /api/orders: the calling client's orders, newest first, one page at a time.

    GET /api/orders?status=failed&status=compensated&created_after=2025-01-31T00:00:00Z
    200 {"results": [<each order as GET /api/orders/<id> shows it>, ...],
         "next": "/api/orders?status=failed&status=compensated&...&cursor=..." | null}

Query parameters; any other is refused, so a misspelt filter never silently widens the list:

    status          an order status; repeat it for several (?status=failed&status=compensated)
    created_after   ISO 8601 date and time with a UTC offset: created at or after it
    created_before  the same: created strictly before it ([after, before): windows side by
                    side neither overlap nor leave a gap)
    limit           orders per page, 1 to 200, 50 by default
    cursor          where the page starts: copied from the previous page's `next`, opaque

An invalid parameter answers 422 `invalid_fields` naming it, as `?wait` and the fields of a
body do (errors.py: `fields` is the shape that names what is wrong). `next` is a relative
URL, like an order's `url`: the same filters and limit, and the cursor of the page's last
order; null on the last page.

Keyset pagination on (created_at, id), descending: a page is one query that walks the
index on (client, -created_at, -id) and stops after limit + 1 rows (the extra row only says
whether there is a next page), plus one query for the sends of the page. No COUNT, no
OFFSET. Orders created at the same instant are ordered by id, so walking `next` links
shows each order exactly once; orders created during the walk are newer than any cursor
and show up on a new first page, never on a later one.

The cursor is the last order's (created_at, id), signed with the secret key and a salt
naming the client. It grants nothing: every query is filtered by the token's client
whatever the cursor says, an edited cursor fails its signature, and one made for another
client is refused as invalid (422 naming `cursor`).
"""

import datetime
import re
import uuid
from dataclasses import dataclass
from typing import Any

from django.core import signing
from django.db.models import Q, QuerySet, prefetch_related_objects
from django.http import HttpRequest, JsonResponse, QueryDict
from django.urls import reverse

from dualsend_app.models import Order

from . import auth, client_limits, errors
from .serializers import order_to_dict

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
PARAMETERS = ("status", "created_after", "created_before", "limit", "cursor")
# Only `status` may be repeated; a second value of any other is a mistake, not a choice.
REPEATABLE = ("status",)
CURSOR_SALT = "dualsend.orders.cursor"

LIMIT_DIGITS = re.compile(r"[0-9]{1,6}")
UNKNOWN_PARAMETER = "is not an allowed query parameter; allowed: " + ", ".join(PARAMETERS)
ONCE_MESSAGE = "must be given at most once"
STATUS_MESSAGE = (
    "must be one of " + ", ".join(Order.Status.values) + "; repeat the parameter for several"
)
DATETIME_MESSAGE = (
    "must be an ISO 8601 date and time with a UTC offset, such as 2025-01-31T12:00:00Z "
    "(send + as %2B)"
)
RANGE_MESSAGE = "must be later than created_after"
LIMIT_MESSAGE = f"must be an integer from 1 to {MAX_LIMIT}"
CURSOR_MESSAGE = "is not a cursor this API gave this client; copy it from a page's next link"


@dataclass(frozen=True)
class Position:
    """Where a page ends: its last order's creation time and id."""

    created_at: datetime.datetime
    id: uuid.UUID


@dataclass(frozen=True)
class ListQuery:
    """The query parameters of one GET /api/orders, checked."""

    statuses: tuple[str, ...] = ()
    created_after: datetime.datetime | None = None
    created_before: datetime.datetime | None = None
    limit: int = DEFAULT_LIMIT
    after: Position | None = None


def list_orders(request: HttpRequest) -> JsonResponse:
    """One page of the calling client's orders, newest first, and the link to the next."""
    client = auth.authenticate(request).id
    client_limits.check_rate(client)
    query = parse_query(request.GET, client)
    rows = list(_orders_of(client, query)[: query.limit + 1])
    page = rows[: query.limit]
    prefetch_related_objects(page, "sends")
    next_url = None
    if len(rows) > query.limit:
        last = page[-1]
        next_url = _next_url(request.GET, make_cursor(Position(last.created_at, last.pk), client))
    return JsonResponse({"results": [order_to_dict(order) for order in page], "next": next_url})


def parse_query(params: QueryDict, client: str) -> ListQuery:
    """The checked parameters; ApiError 422 naming every one that is wrong."""
    problems = {name: UNKNOWN_PARAMETER for name in params if name not in PARAMETERS}
    problems |= {
        name: ONCE_MESSAGE
        for name in PARAMETERS
        if name not in REPEATABLE and len(params.getlist(name)) > 1
    }
    values: dict[str, Any] = {}
    statuses = tuple(dict.fromkeys(params.getlist("status")))  # once each, in order given
    if any(status not in Order.Status.values for status in statuses):
        problems["status"] = STATUS_MESSAGE
    values["statuses"] = statuses
    for name in ("created_after", "created_before"):
        if name in params and name not in problems:
            values[name] = _parse_datetime(params[name])
            if values[name] is None:
                problems[name] = DATETIME_MESSAGE
    after, before = values.get("created_after"), values.get("created_before")
    if after is not None and before is not None and before <= after:
        problems["created_before"] = RANGE_MESSAGE
    if "limit" in params and "limit" not in problems:
        values["limit"] = _parse_limit(params["limit"])
        if values["limit"] is None:
            problems["limit"] = LIMIT_MESSAGE
    if "cursor" in params and "cursor" not in problems:
        values["after"] = read_cursor(params["cursor"], client)
        if values["after"] is None:
            problems["cursor"] = CURSOR_MESSAGE
    if problems:
        raise errors.invalid_fields(problems)
    return ListQuery(**values)


def _parse_datetime(raw: str) -> datetime.datetime | None:
    try:
        moment = datetime.datetime.fromisoformat(raw)
    except ValueError:
        return None
    return moment if moment.utcoffset() is not None else None


def _parse_limit(raw: str) -> int | None:
    if not LIMIT_DIGITS.fullmatch(raw):
        return None
    limit = int(raw)
    return limit if 1 <= limit <= MAX_LIMIT else None


def _orders_of(client: str, query: ListQuery) -> QuerySet[Order]:
    """The client's orders that match, newest first, from just past the cursor."""
    orders = Order.objects.filter(client=client)
    if query.statuses:
        orders = orders.filter(status__in=query.statuses)
    if query.created_after is not None:
        orders = orders.filter(created_at__gte=query.created_after)
    if query.created_before is not None:
        orders = orders.filter(created_at__lt=query.created_before)
    if query.after is not None:
        # (created_at, id) < the cursor's, spelt so the index bounds created_at: rows at the
        # cursor's instant need a smaller id, older ones are all in.
        at = query.after.created_at
        orders = orders.filter(created_at__lte=at).filter(
            Q(created_at__lt=at) | Q(pk__lt=query.after.id)
        )
    return orders.order_by("-created_at", "-id")


def _next_url(params: QueryDict, cursor: str) -> str:
    """This request's filters and limit, with the cursor of the page's last order."""
    following = params.copy()
    following["cursor"] = cursor
    return f"{reverse('orders')}?{following.urlencode()}"


def make_cursor(position: Position, client: str) -> str:
    """The opaque, signed cursor of `position`, good for `client` only."""
    return signing.dumps(
        [position.created_at.isoformat(), position.id.hex], salt=_cursor_salt(client)
    )


def read_cursor(cursor: str, client: str) -> Position | None:
    """The position a cursor of `client` names; None when edited, made up or another's."""
    try:
        created_at, order_id = signing.loads(cursor, salt=_cursor_salt(client))
        position = Position(datetime.datetime.fromisoformat(created_at), uuid.UUID(order_id))
    except (signing.BadSignature, TypeError, ValueError):
        return None
    return position if position.created_at.utcoffset() is not None else None


def _cursor_salt(client: str) -> str:
    return f"{CURSOR_SALT}:{client}"
