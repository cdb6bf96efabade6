"""A new order's rows written at once: the order, its two sends, its first status row.

Every POST /api/orders (and each order of a batch) writes three tables. Through the ORM
that was BEGIN, the lock timeout, three INSERTs and COMMIT: six round trips, and building
them cost the web process more CPU than PostgreSQL spent running them (py-spy during
`manage.py bench`: Django 5.2 hands a two-row bulk insert to psycopg as arrays, which it
inspects element by element). On PostgreSQL `insert` is one statement, a data-modifying
CTE, atomic on its own:

1. `bounded` sets the intake's lock timeout for this transaction (`set_config(..., true)`)
   and is read before the order's INSERT runs, so a duplicate of a request still being
   created waits on its row at most that long (then `LockNotAvailable`, as before);
2. the order, its sends and its history row, each INSERT reading the order's id from the
   one before, so they run in that order and the foreign keys hold;
3. it returns the sends' ids.

Outside a transaction that is one round trip; inside one (a batch) the caller's savepoint
keeps a failed order from aborting the others. Elsewhere (the SQLite demo) the ORM's own
statements, in a transaction. The instances given are filled as `save()` would fill them
(`pre_save`: defaults, `auto_now`), and are saved instances afterwards.
"""

import functools
from collections.abc import Sequence
from typing import Any

from django.db import connection, transaction
from django.db.models import Field, Model

from . import status_history
from .models import Order, OrderStatusChange, Send

_CREATE_SQL = """
WITH bounded AS MATERIALIZED (SELECT set_config('lock_timeout', %s, true)),
new_order AS (
    INSERT INTO {order} ({order_columns}) SELECT {order_values} FROM bounded RETURNING id
),
new_sends AS (
    INSERT INTO {send} ({send_columns})
    SELECT new_order.id, v.* FROM new_order, (VALUES {send_rows}) AS v
    RETURNING id, operation
),
history AS (
    INSERT INTO {history} ({history_columns})
    SELECT new_order.id, {history_values} FROM new_order
)
SELECT id, operation FROM new_sends
"""


def insert(order: Order, sends: Sequence[Send], *, lock_timeout_seconds: float) -> None:
    """Save `order`, its `sends` (which get their ids) and its creation history row."""
    if connection.vendor != "postgresql":
        _insert_with_orm(order, sends)
        return
    history = OrderStatusChange(
        order=order,
        from_status="",
        to_status=order.status,
        at=order.created_at,
        reason=status_history.CREATED_REASON,
    )
    send_params = [param for send in sends for param in _values(send, _SEND_FIELDS)]
    lock_timeout = f"{lock_timeout_seconds * 1000:.0f}ms"
    params = [
        lock_timeout,
        *_values(order, Order._meta.concrete_fields),
        *send_params,
        *_values(history, _HISTORY_FIELDS),
    ]
    with connection.cursor() as cursor:
        cursor.execute(_statement(len(sends)), params)
        ids = {operation: pk for pk, operation in cursor.fetchall()}
    order._state.adding = False
    for send in sends:
        send.pk = ids[send.operation]
        send._state.adding = False


def _fields_after_order(model: type[Model]) -> list[Field]:
    """The columns of a row of the order's that the INSERT fills after the order's id
    (their own id comes from their sequence)."""
    return [field for field in model._meta.concrete_fields if field.name not in ("id", "order")]


_SEND_FIELDS = _fields_after_order(Send)
_HISTORY_FIELDS = _fields_after_order(OrderStatusChange)


@functools.cache
def _statement(sends: int) -> str:
    """The statement for an order with this many sends, built once (PostgreSQL only)."""
    send_row = f"({_casts(_SEND_FIELDS)})"
    return _CREATE_SQL.format(
        order=_quoted(Order._meta.db_table),
        order_columns=_columns_of(Order._meta.concrete_fields),
        order_values=_casts(Order._meta.concrete_fields),
        send=_quoted(Send._meta.db_table),
        send_columns=_columns_of([Send._meta.get_field("order"), *_SEND_FIELDS]),
        send_rows=", ".join([send_row] * sends),
        history=_quoted(OrderStatusChange._meta.db_table),
        history_columns=_columns_of([OrderStatusChange._meta.get_field("order"), *_HISTORY_FIELDS]),
        history_values=_casts(_HISTORY_FIELDS),
    )


def _insert_with_orm(order: Order, sends: Sequence[Send]) -> None:
    with transaction.atomic():
        order.save(force_insert=True)
        for send in sends:
            send.save(force_insert=True)
        status_history.record_created([order])


def _values(instance: Model, fields: Sequence[Field]) -> list[Any]:
    """The values `save()` would write (`pre_save`: defaults, auto_now), as the database
    takes them."""
    return [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]


def _casts(fields: Sequence[Field]) -> str:
    return ", ".join(status_history.typed_placeholder(field) for field in fields)


def _columns_of(fields: Sequence[Field]) -> str:
    return ", ".join(_quoted(field.column) for field in fields)


def _quoted(name: str) -> str:
    return connection.ops.quote_name(name)
