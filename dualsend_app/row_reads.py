"""The reads on the hot path of every order, each one SQL statement written once.

* `order_by_key(client, key)`: a client's order by its Idempotency-Key, for each POST
  that carries one (`api/idempotency.py`);
* `send_with_order(send_id)`: a send and its order, for each delivery of a send task
  (`sending.run`);
* `order_with_headers(order_id)`: an order and its two header sends, for settle
  (`orders.settle`): one round trip where the ORM took two;
* `order_with_sends(order_id, client)`: a client's order and all its sends, for each
  `GET /api/orders/<id>` (and `?wait`): one round trip where the ORM took two;
* `order_status(order_id)`: an order's status alone, for each look of a `?wait` at an
  order it holds (the ORM's `values_list(...).first()` was 5% of the web's CPU in
  `manage.py bench`).

Each gives the same model instances the ORM would (`Model.from_db`, every field's own
converters applied, the send's `order` cached as `select_related` does). The ORM spent
more CPU building these statements than PostgreSQL spent running them (py-spy on the
workers during `manage.py bench`), like the writes in `send_rows.py`; everything else
goes through the ORM.
"""

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Model

from .models import Order, Send

Converter = Callable[[Any, Any, Any], Any]

# `<> ''` matches the unique index's condition, so that index serves a generic plan too.
_ORDER_BY_KEY_SQL = """
SELECT {order_columns} FROM {order} o
WHERE o.client = %s AND o.idempotency_key = %s AND o.idempotency_key <> ''
"""
_SEND_WITH_ORDER_SQL = "SELECT {send_columns}, {order_columns} FROM {tables} WHERE s.id = %s"
_ORDER_WITH_HEADERS_SQL = """
SELECT {order_columns}, {send_columns} FROM {tables}
WHERE s.order_id = %s AND s.operation IN ({headers})
ORDER BY s.created_at, s.id
"""
_ORDER_STATUS_SQL = "SELECT o.{status} FROM {order} o WHERE o.id = %s"
_ORDER_WITH_SENDS_SQL = """
SELECT {order_columns}, {send_columns} FROM {tables}
WHERE o.id = %s AND o.client = %s
ORDER BY s.created_at, s.id
"""


@dataclass(frozen=True)
class _ModelReader:
    """Turns one model's columns of a row into an instance, as the ORM's compiler does."""

    model: type[Model]
    attnames: tuple[str, ...]
    converters: tuple[tuple[int, tuple[Converter, ...], Any], ...]  # (index, converters, col)

    @classmethod
    def of(cls, model: type[Model]) -> "_ModelReader":
        fields = model._meta.concrete_fields
        converters = []
        for index, field in enumerate(fields):
            column = field.get_col(model._meta.db_table)
            found = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
            if found:
                converters.append((index, tuple(found), column))
        return cls(model, tuple(field.attname for field in fields), tuple(converters))

    @property
    def width(self) -> int:
        return len(self.attnames)

    def columns(self, alias: str) -> str:
        quote = connection.ops.quote_name
        return ", ".join(f"{alias}.{quote(field.column)}"
                         for field in self.model._meta.concrete_fields)  # fmt: skip

    def instance(self, values: Sequence[Any]) -> Model:
        values = list(values)
        for index, converters, column in self.converters:
            for convert in converters:
                values[index] = convert(values[index], column, connection)
        return self.model.from_db(connection.alias, self.attnames, values)


@dataclass(frozen=True)
class _Statements:
    send: _ModelReader
    order: _ModelReader
    order_by_key: str
    send_with_order: str
    order_with_headers: str
    order_with_sends: str
    order_status: str


_built: dict[str, _Statements] = {}  # by database vendor: quoting and converters differ


def _statements() -> _Statements:
    statements = _built.get(connection.vendor)
    if statements is None:
        statements = _built[connection.vendor] = _build()
    return statements


def _build() -> _Statements:
    send, order = _ModelReader.of(Send), _ModelReader.of(Order)
    quote = connection.ops.quote_name
    send_table, order_table = quote(Send._meta.db_table), quote(Order._meta.db_table)
    tables = f"{send_table} s JOIN {order_table} o ON o.id = s.order_id"
    headers = ", ".join(["%s"] * len(Send.HEADER_OPERATIONS))
    return _Statements(
        send=send,
        order=order,
        order_by_key=_ORDER_BY_KEY_SQL.format(order_columns=order.columns("o"), order=order_table),
        send_with_order=_SEND_WITH_ORDER_SQL.format(
            send_columns=send.columns("s"), order_columns=order.columns("o"), tables=tables
        ),
        order_with_headers=_ORDER_WITH_HEADERS_SQL.format(
            order_columns=order.columns("o"),
            send_columns=send.columns("s"),
            tables=tables,
            headers=headers,
        ),
        order_with_sends=_ORDER_WITH_SENDS_SQL.format(
            order_columns=order.columns("o"), send_columns=send.columns("s"), tables=tables
        ),
        order_status=_ORDER_STATUS_SQL.format(
            status=quote(Order._meta.get_field("status").column), order=order_table
        ),
    )


def order_by_key(client: str, key: str) -> Order | None:
    """The client's order created with this Idempotency-Key (unique per client), if any."""
    statements = _statements()
    with connection.cursor() as cursor:
        cursor.execute(statements.order_by_key, [client, key])
        row = cursor.fetchone()
    return None if row is None else statements.order.instance(row)


def send_with_order(send_id: int) -> Send:
    """The send and its order (`send.order` needs no query); Send.DoesNotExist if none."""
    statements = _statements()
    with connection.cursor() as cursor:
        cursor.execute(statements.send_with_order, [send_id])
        row = cursor.fetchone()
    if row is None:
        raise Send.DoesNotExist(f"no send {send_id}")
    width = statements.send.width
    send = statements.send.instance(row[:width])
    Send._meta.get_field("order").set_cached_value(send, statements.order.instance(row[width:]))
    return send


def order_with_headers(order_id: uuid.UUID | str) -> tuple[Order, list[Send]]:
    """The order and its header sends, in creation order; Order.DoesNotExist if none (an
    order always has its header sends: they are created with it, in one transaction)."""
    found = _order_and_sends(
        _statements().order_with_headers,
        [Order._meta.pk.get_db_prep_value(order_id, connection), *Send.HEADER_OPERATIONS],
    )
    if found is None:
        raise Order.DoesNotExist(f"no order {order_id}")
    return found


def order_with_sends(order_id: uuid.UUID | str, client: str) -> tuple[Order, list[Send]] | None:
    """The client's order and all its sends, in creation order; None for an unknown id and
    for another client's order alike."""
    return _order_and_sends(
        _statements().order_with_sends,
        [Order._meta.pk.get_db_prep_value(order_id, connection), client],
    )


def order_status(order_id: uuid.UUID | str) -> str | None:
    """The order's status; None for an unknown id."""
    with connection.cursor() as cursor:
        cursor.execute(
            _statements().order_status, [Order._meta.pk.get_db_prep_value(order_id, connection)]
        )
        row = cursor.fetchone()
    return None if row is None else row[0]


def _order_and_sends(sql: str, params: list[Any]) -> tuple[Order, list[Send]] | None:
    """An order and sends from rows of the order's columns, then a send's."""
    statements = _statements()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if not rows:
        return None
    width = statements.order.width
    order = statements.order.instance(rows[0][:width])
    order_field = Send._meta.get_field("order")
    sends = []
    for row in rows:
        send = statements.send.instance(row[width:])
        order_field.set_cached_value(send, order)
        sends.append(send)
    return order, sends
