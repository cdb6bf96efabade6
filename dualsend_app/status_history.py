"""Every status change of an order is a row: from, to, when, why, and who for an operator.

An order's status moves only through `claim` (and begins with `record_created`), so the
history cannot miss a move, and a move is recorded only when it happened:

- `record_created(order)`: the creation row ("" → pending), one INSERT in the creation's
  transaction;
- `claim(order_id, from_statuses=..., to_status=..., reason=..., **changes)`: the
  conditional UPDATE that moves the order (filter on the expected status, check that one
  row changed) and its row, together. On PostgreSQL that is ONE statement, a
  data-modifying CTE whose INSERT reads the UPDATE's RETURNING: no row when the claim
  lost, and no BEGIN/COMMIT around it (settle and dispatch run once per order, on the hot
  path; issue 8). Elsewhere (the SQLite demo) the same two statements in a transaction.

The old status is never read back: each claim filters on exactly one status, the one the
caller read first, so the row's `from_status` is the status the UPDATE replaced. When the
caller allows several (settle takes pending or dispatched) and the first no longer holds
(dispatch moved the order meanwhile), the next is tried: one more UPDATE, only then.
"""

import datetime
import functools
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Field, Model
from django.db.models.sql import UpdateQuery
from django.utils import timezone

from .models import Order, OrderStatusChange

# The staff user whose action moved the order (`request.user`); None for the service.
Operator = AbstractBaseUser | None

CREATED_REASON = "accepted: the order and its two sends saved"

# Written out rather than built by the ORM's UpdateQuery, which cost more CPU than the
# statement takes to run (py-spy on web and workers during `manage.py bench`).
_ID, _STATUS = uuid.UUID(int=0), "?"  # placeholders of the ORM's statement (`_update_by_orm`)
_VARCHAR_LENGTH = re.compile(r"^varchar\(\d+\)$")
_UPDATE_SQL = "UPDATE {order} SET {assignments} WHERE {order_id} {matches} AND {status} = %s"
_ONE_ORDER, _ANY_ORDER = "= %s", "= ANY(%s)"  # the id's condition: one id, or a list of them
_MOVE_AND_RECORD_SQL = """
WITH moved AS ({update} RETURNING {order_id})
INSERT INTO {history} ({columns}) SELECT moved.{order_id}, {values} FROM moved
"""
# The same, saying which orders it moved (`claim_many`).
_MOVE_AND_RECORD_RETURNING_SQL = """
WITH moved AS ({update} RETURNING {order_id}),
recorded AS (INSERT INTO {history} ({columns}) SELECT moved.{order_id}, {values} FROM moved)
SELECT {order_id} FROM moved
"""


def record_created(orders: Iterable[Order], *, reason: str = CREATED_REASON) -> None:
    """The first row of each new order ("" → its status), in one INSERT; call it inside
    the transaction that creates them."""
    OrderStatusChange.objects.bulk_create(
        [
            OrderStatusChange(
                order=order,
                from_status="",
                to_status=order.status,
                at=order.created_at,
                reason=reason,
            )
            for order in orders
        ]
    )


def claim(
    order_id: uuid.UUID | str,
    *,
    from_statuses: Sequence[str],
    to_status: str,
    reason: str,
    by: Operator = None,
    at: datetime.datetime | None = None,
    **changes: Any,
) -> bool:
    """Move the order from one of `from_statuses` to `to_status`, with `changes`, and
    record the move; True when this caller won.

    Put the status the caller read first in `from_statuses`: it is tried first. `by`: the
    operator whose action it is. `at`: the move's time (default now), also `updated_at`.
    """
    at = at or timezone.now()
    row = _history_row(to_status, at, reason, operator_user(by))
    values = {**changes, "status": to_status, "updated_at": at}
    for from_status in dict.fromkeys(from_statuses):
        if _move(order_id, from_status, values, row):
            return True
    return False


def claim_many(
    order_ids: Sequence[uuid.UUID],
    *,
    from_status: str,
    to_status: str,
    reason: str,
    at: datetime.datetime,
    **changes: Any,
) -> set[uuid.UUID]:
    """`claim` for many orders from one status, by the service: the ids it moved.

    On PostgreSQL one statement for them all (a batch's dispatch); elsewhere one claim
    each."""
    if connection.vendor != "postgresql":
        return {
            order_id
            for order_id in order_ids
            if claim(order_id, from_statuses=(from_status,), to_status=to_status,
                     reason=reason, at=at, **changes)
        }  # fmt: skip
    values = {**changes, "status": to_status, "updated_at": at}
    row = {"from_status": from_status, **_history_row(to_status, at, reason, None)}
    sql = _move_and_record_sql(
        _plain_update_sql(tuple(values), _ANY_ORDER), tuple(row), returning_ids=True
    )
    pks = [Order._meta.pk.get_db_prep_value(order_id, connection) for order_id in order_ids]
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [*_prepared(Order, values), pks, from_status, *_prepared(OrderStatusChange, row)],
        )
        return {Order._meta.pk.to_python(moved) for (moved,) in cursor.fetchall()}


def _history_row(
    to_status: str, at: datetime.datetime, reason: str, by_user: AbstractBaseUser | None
) -> dict[str, Any]:
    """A history row's fields but `from_status`, which each claim adds."""
    return {
        "to_status": to_status,
        "at": at,
        "reason": reason,
        "by": by_user.pk if by_user else None,
        "by_username": by_user.get_username() if by_user else "",
    }


def operator_user(by: Operator) -> AbstractBaseUser | None:
    """The signed-in user of an operator's action; None for the service's own moves."""
    return by if getattr(by, "is_authenticated", False) else None


def ordered_from(as_read: str, allowed: Iterable[str]) -> list[str]:
    """`allowed`, the status the caller read first (it is the likeliest to hold)."""
    allowed = list(allowed)
    return [as_read, *(s for s in allowed if s != as_read)] if as_read in allowed else allowed


def _move(
    order_id: uuid.UUID | str, from_status: str, values: dict[str, Any], row: dict[str, Any]
) -> bool:
    """One claim from exactly `from_status`, and its history row when it won."""
    row = {"from_status": from_status, **row}
    if connection.vendor != "postgresql":
        with transaction.atomic():
            if Order.objects.filter(pk=order_id, status=from_status).update(**values) != 1:
                return False
            OrderStatusChange.objects.create(
                order_id=order_id, **{_attname(k): v for k, v in row.items()}
            )
            return True
    if any(hasattr(value, "resolve_expression") for value in values.values()):
        update_sql, update_params = _update_by_orm(values)
        sql = _move_and_record_sql(update_sql, tuple(row))
    else:
        sql = _move_and_record_sql(_plain_update_sql(tuple(values)), tuple(row))
        update_params = _prepared(Order, values)
    order_pk = Order._meta.pk.get_db_prep_value(order_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(
            sql, [*update_params, order_pk, from_status, *_prepared(OrderStatusChange, row)]
        )
        return cursor.rowcount == 1


def _attname(name: str) -> str:
    """`by` is given as the user's id: the field's attribute is `by_id`."""
    return OrderStatusChange._meta.get_field(name).attname


def _column(model: type[Model], name: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(name).column)


@functools.cache
def _move_and_record_sql(
    update_sql: str, row_fields: tuple[str, ...], *, returning_ids: bool = False
) -> str:
    """The claim and its history row as one statement, for these columns of the row; built
    once per shape (settle's, dispatch's, ...), not per order. `returning_ids`: it answers
    the ids of the orders it moved."""
    fields = [OrderStatusChange._meta.get_field(name) for name in row_fields]
    template = _MOVE_AND_RECORD_RETURNING_SQL if returning_ids else _MOVE_AND_RECORD_SQL
    return template.format(
        update=update_sql,
        order_id=_column(Order, "id"),
        history=connection.ops.quote_name(OrderStatusChange._meta.db_table),
        columns=", ".join(_column(OrderStatusChange, name) for name in ("order", *row_fields)),
        values=", ".join(typed_placeholder(field) for field in fields),
    )


@functools.cache
def _plain_update_sql(names: tuple[str, ...], matches: str = _ONE_ORDER) -> str:
    """`UPDATE order SET <names> = %s ... WHERE id <matches> AND status = %s`, built once."""
    assignments = (f"{_column(Order, name)} = %s" for name in names)
    return _UPDATE_SQL.format(
        order=connection.ops.quote_name(Order._meta.db_table),
        assignments=", ".join(assignments),
        order_id=_column(Order, "id"),
        matches=matches,
        status=_column(Order, "status"),
    )


def _update_by_orm(values: dict[str, Any]) -> tuple[str, list[Any]]:
    """The UPDATE and the SET's parameters, by the ORM's compiler: for an expression (an
    operator's re-drive counts with F()); settle's and dispatch's plain values, every
    order's, are written out (`_plain_update_sql`)."""
    query = Order.objects.filter(pk=_ID, status=_STATUS).query.chain(UpdateQuery)
    query.add_update_values(values)
    sql, params = query.get_compiler(connection=connection).as_sql()
    # The filter's two parameters are the last: the caller gives them.
    return sql, list(params[:-2])


def _prepared(model: type[Model], values: dict[str, Any]) -> list[Any]:
    """Each value as the database takes it, by field name."""
    return [
        model._meta.get_field(name).get_db_prep_save(value, connection)
        for name, value in values.items()
    ]


def typed_placeholder(field: Field) -> str:
    """`CAST(%s AS <the field's type>)`. The values of an INSERT ... SELECT (and of a VALUES
    row inside one) are a SELECT list, where PostgreSQL does not take a parameter's type
    from the column it goes to: each says its own. varchar without its length, so that a
    value too long fails the INSERT as it would through the ORM (a cast to varchar(n)
    truncates)."""
    db_type = (field.target_field if field.is_relation else field).db_type(connection)
    return f"CAST(%s AS {_VARCHAR_LENGTH.sub('varchar', db_type)})"
