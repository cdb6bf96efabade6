"""POST /api/orders/batch: up to 100 orders in one request, answered order by order.

    {"orders": [{"idempotency_key": "order-1", "items": [...], "amount": 1999, ...}, ...]}
    207 {"results": [{"index": 0, "status": 202, "location": "/api/orders/…", "order": {…}},
                     {"index": 1, "status": 422, "error": {"code": …, "message": …, …}}, …]}

The whole request is checked first, exactly as POST /api/orders and in the same order:
token 401, the client's rate 429, media type 415, size 413
(`DUALSEND_BATCH_MAX_BODY_BYTES`), JSON syntax 400, then the envelope 422 (`orders` a
list of 1 to 100, nothing else beside it). Any of these answers the whole batch, and
nothing is written.

The rate: the request counts one hit at the door, like any request; once its `orders`
are read, each order past the first counts one more, so a batch of n orders costs n and
cannot get round `DUALSEND_CLIENT_RATE_LIMIT`. A batch the window has no room for is
429 with Retry-After, nothing written; one larger than the rate itself could ever allow
(over 50 orders at 50/second) is 422, since waiting would not help.

Then each order is answered on its own, with the code and error shape the single call
would give it: 400 when it is not a JSON object, 422 for invalid fields (every one
named, `idempotency_key` included: it is required, with the header's rules, and a key
used by an earlier order of the same batch is refused), 202 created, 200 replayed (same
key and body as an order this client made before), 422 `idempotency_key_reused`, 409
`idempotency_in_progress` (with `retry_after`). Keys are scoped per client, as ever.

Every accepted order is created in ONE transaction (each through
`idempotency.create_or_replay`, a savepoint of it), and all are dispatched together on
its commit (`orders.created_together`, `enqueue.dispatch_orders`). The
new keys are inserted in sorted order, so two batches sharing keys wait for each other
instead of deadlocking. A web process writes one batch at a time (`writing_turn`): the
others wait their turn, and one that waits longer than BATCH_TURN_WAIT_SECONDS is 503
with Retry-After, nothing written. A dependency down (the database, even at the Nth order) answers
the whole batch 503 with Retry-After: the transaction is rolled back, nothing is
written, nothing dispatched; the client sends the same batch again.
"""

import contextlib
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from dualsend_app import log_context, orders
from dualsend_app.models import Order
from project.partner_settings import parse_rate

from . import auth, client_limits, errors, idempotency, validation
from .serializers import order_to_dict
from .views import api_view

logger = logging.getLogger(__name__)

MULTI_STATUS = 207
KEY_FIELD = "idempotency_key"
NOT_AN_OBJECT = "each order of a batch must be a JSON object"
DUPLICATE_KEY_MESSAGE = "is already used by order {index} of this batch"
MAX_CORRELATION_ID_LENGTH = 128

# Why one batch at a time: writing a batch is CPU work in this process (its inserts, its
# history rows, the publishing of its sends), and the GIL shares one core among the
# threads. Ten batches written at once all commit near the end, when the ten are done;
# their sends reach the workers only then, and meanwhile the workers idle. In turn, each
# batch commits as soon as its own work is done: the same total time, but the first
# orders are on their way after a tenth of it (in `manage.py bench`'s burst of ten
# batches, the first send started after 0.3 s instead of 2.1-2.4 s, and the median order
# settled 1.5 s sooner). A waiting batch holds no database connection; ten writing at
# once held ten of the pool's sixteen.
_WRITING_TURNS = threading.BoundedSemaphore(1)
BATCH_TURN_WAIT_SECONDS = 20.0
BUSY_MESSAGE = "this process is busy writing other batches"


@dataclass
class BatchItem:
    """One order of the batch, from its reading to its answer."""

    index: int
    key: str = ""
    payload: dict[str, Any] | None = None
    error: errors.ApiError | None = None
    outcome: idempotency.IntakeResult | None = None
    order: Order | None = None


@api_view("POST")
def orders_batch(request: HttpRequest) -> JsonResponse:
    """Create or replay up to 100 orders; 207 with one result per order, in request order."""
    client = auth.authenticate(request).id
    client_limits.check_rate(client)
    document = validation.read_json_object(
        request, max_bytes=settings.DUALSEND_BATCH_MAX_BODY_BYTES
    )
    raw_orders = validation.validate_batch(document)
    _count_the_other_orders(client, len(raw_orders))

    items = _read_items(raw_orders)
    _create_or_replay(client, items, request.request_id)

    replayed = _replayed_as_they_stand(client, items)
    results = [_result(item, replayed) for item in items]
    logger.info(
        "batch of %s orders answered %s",
        len(items),
        dict(sorted(Counter(result["status"] for result in results).items())),
    )
    return JsonResponse({"results": results}, status=MULTI_STATUS)


def _count_the_other_orders(client_id: str, orders: int) -> None:
    """Each order past the first counts one more hit against the client's rate.

    (`check_rate` counted the request, i.e. its first order, at the door.) 422 when the
    rate could never hold this many at once; 429 with Retry-After when its window has no
    room for them now. Redis down: the batch goes ahead, as every request does.
    """
    rate_text = settings.DUALSEND_CLIENT_RATE_LIMIT
    rate = parse_rate(rate_text)
    if orders > rate.amount:
        raise errors.invalid_fields(
            {
                "orders": f"holds {orders} orders, more than this client's rate of "
                f"{rate_text} allows at once; send at most {rate.amount} per batch"
            }
        )
    if orders > 1:
        client_limits.check_rate(
            client_id,
            cost=orders - 1,
            counted_as=f"a batch of {orders} orders counts {orders} requests, ",
        )


def _read_items(raw_orders: list[Any]) -> list[BatchItem]:
    """Each order's fields and key checked as the single call checks them.

    A key already used by an earlier order of the batch (valid or not) is a field
    problem of the later one: which of the two the key stands for would be a guess.
    """
    items = []
    first_index_of: dict[str, int] = {}
    for index, raw in enumerate(raw_orders):
        item = BatchItem(index)
        items.append(item)
        if not isinstance(raw, dict):
            item.error = errors.invalid_json(NOT_AN_OBJECT)
            continue
        fields = {name: value for name, value in raw.items() if name != KEY_FIELD}
        payload, problems = validation.validate_order(fields)
        key, key_problem = _parse_key(raw)
        if key:
            earlier = first_index_of.setdefault(key, index)
            if earlier != index:
                key_problem = DUPLICATE_KEY_MESSAGE.format(index=earlier)
        if key_problem:
            problems[KEY_FIELD] = key_problem
        if problems:
            item.error = errors.invalid_fields(problems)
            continue
        item.key, item.payload = key, payload
    return items


def _parse_key(raw: dict[str, Any]) -> tuple[str, str | None]:
    """(key, problem): required in a batch, else the Idempotency-Key header's rules."""
    if KEY_FIELD not in raw:
        return "", f"{validation.REQUIRED}: each order of a batch needs its own key"
    value = raw[KEY_FIELD]
    if not isinstance(value, str):
        return "", idempotency.KEY_MESSAGE
    return idempotency.parse_key(value)


def _create_or_replay(client: str, items: list[BatchItem], request_id: str) -> None:
    """Every valid order created or replayed, the new ones in one transaction.

    An ApiError of one order (key reused, still in progress) is its answer; any other
    exception (the database refusing or gone) rolls the whole batch back and goes up.
    """
    accepted = sorted((item for item in items if item.error is None), key=lambda i: i.key)
    if not accepted:
        return
    with writing_turn(), orders.created_together():
        existing = idempotency.orders_by_key(client, [item.key for item in accepted])
        for item in accepted:
            correlation_id = _correlation_id(request_id, item.index)
            # This order's lines carry its own correlation id, not the batch's.
            with log_context.bound(correlation_id=correlation_id):
                try:
                    item.outcome, item.order = idempotency.create_or_replay(
                        client=client,
                        key=item.key,
                        payload=item.payload,
                        correlation_id=correlation_id,
                        existing=existing.get(item.key),
                    )
                except errors.ApiError as error:
                    item.error = error


@contextlib.contextmanager
def writing_turn() -> Iterator[None]:
    """This process's turn to write a batch (see _WRITING_TURNS); 503 when it does not
    come within BATCH_TURN_WAIT_SECONDS."""
    if not _WRITING_TURNS.acquire(timeout=BATCH_TURN_WAIT_SECONDS):
        raise errors.service_unavailable(BUSY_MESSAGE, retry_after=1)
    try:
        yield
    finally:
        _WRITING_TURNS.release()


def _correlation_id(request_id: str, index: int) -> str:
    """The batch's request id and the order's position: `<X-Request-ID>.<index>`."""
    suffix = f".{index}"
    return request_id[: MAX_CORRELATION_ID_LENGTH - len(suffix)] + suffix


def _replayed_as_they_stand(client: str, items: list[BatchItem]) -> dict[uuid.UUID, Order]:
    """The replayed orders as they stand now, with their sends (one query, none when
    nothing was replayed). A created order is answered as this request saved it, as the
    single call's 202 is: reading back 100 rows just written was a sixth of a batch's
    CPU in the web (py-spy)."""
    pks = [
        item.order.pk
        for item in items
        if item.order is not None and not idempotency.answered_as_written(item.outcome, item.order)
    ]
    if not pks:
        return {}
    replayed = Order.objects.prefetch_related("sends").filter(client=client, pk__in=pks)
    return {order.pk: order for order in replayed}


def _result(item: BatchItem, replayed: dict[uuid.UUID, Order]) -> dict[str, Any]:
    if item.error is not None:
        result: dict[str, Any] = {
            "index": item.index,
            "status": item.error.status,
            "error": item.error.body(),
        }
        retry_after = item.error.headers.get("Retry-After")
        if retry_after:
            result["retry_after"] = int(retry_after)
        return result
    if idempotency.answered_as_written(item.outcome, item.order):
        order, sends = item.order, item.order.new_sends
    else:
        order, sends = replayed.get(item.order.pk, item.order), None
    created = item.outcome == idempotency.IntakeResult.CREATED
    return {
        "index": item.index,
        "status": 202 if created else 200,
        "location": order.get_absolute_url(),
        "order": order_to_dict(order, sends),
    }
