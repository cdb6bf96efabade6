"""The two writes every partner call makes, each as one SQL statement.

Both run once per call, on the hot path of every send. The ORM spent more CPU building
these statements (querysets, Q objects, compilers) than PostgreSQL spent running them
(py-spy on the workers during `manage.py bench`), so they are written out here, once,
for the columns the models name. Everything else goes through the ORM.

* `claim`: pending → in_flight, counting the attempt, if nobody else holds the send and
  its order still wants it (`sending.claim` says why each condition is there).
* `record`: the Attempt row and the send's new state, together. On PostgreSQL that is
  one statement (a data-modifying CTE: both writes or neither, one round trip, no
  BEGIN/COMMIT); elsewhere (the SQLite demo) the same two statements in a transaction.
"""

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connection, transaction
from django.db.models import Model

from .models import Attempt, Order, Send

_CLAIM_SQL = """
UPDATE {send} SET
    status = %s, attempts = attempts + 1, lease_expires_at = %s,
    started_at = COALESCE(started_at, %s), first_attempt_at = COALESCE(first_attempt_at, %s),
    last_attempt_at = %s
WHERE id = %s AND attempts = %s
    AND (status = %s OR (status = %s AND lease_expires_at < %s))
    AND (next_attempt_at IS NULL OR next_attempt_at <= %s)
    AND EXISTS (SELECT 1 FROM {order} o WHERE o.id = {send}.order_id AND o.status IN ({statuses}))
"""

# The update is fenced on the claim that made the call (status in_flight, its attempt
# number): a delivery whose lease ran out records its attempt but cannot move the send.
_MOVE_SQL = "UPDATE {send} SET {assignments} WHERE id = %s AND status = %s AND attempts = %s"
_INSERT_SQL = "INSERT INTO {attempt} ({columns}) VALUES ({placeholders})"
_RECORD_SQL = """
WITH moved AS ({move} RETURNING 1), recorded AS ({insert})
SELECT count(*) FROM moved
"""


def claim(send: Send, *, now: datetime.datetime, lease_ends: datetime.datetime) -> bool:
    """Run the claim for `send` as read (its `attempts` is the fence); True if it won."""
    statuses = send.order_statuses_taking_it
    sql = _CLAIM_SQL.format(
        send=_table(Send), order=_table(Order), statuses=", ".join(["%s"] * len(statuses))
    )
    at = connection.ops.adapt_datetimefield_value
    in_flight, pending = Send.Status.IN_FLIGHT.value, Send.Status.PENDING.value
    params = [
        in_flight, at(lease_ends), at(now), at(now), at(now),
        send.pk, send.attempts,
        pending, in_flight, at(now),
        at(now),
        *statuses,
    ]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1


def record(
    send_id: int, attempt_number: int, changes: Mapping[str, Any], attempt: Mapping[str, Any]
) -> bool:
    """Insert the Attempt (`attempt`: its fields) and apply `changes` to the send, if the
    send is still in flight under `attempt_number`. True when the send moved."""
    assignments, assignment_params = _values(Send, changes)
    columns, insert_params = _values(Attempt, {"send": send_id, **attempt})
    move = _MOVE_SQL.format(
        send=_table(Send), assignments=", ".join(f"{column} = %s" for column in assignments)
    )
    fence = [send_id, Send.Status.IN_FLIGHT.value, attempt_number]
    insert = _INSERT_SQL.format(
        attempt=_table(Attempt),
        columns=", ".join(columns),
        placeholders=", ".join(["%s"] * len(columns)),
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _RECORD_SQL.format(move=move, insert=insert),
                [*assignment_params, *fence, *insert_params],
            )
            return cursor.fetchone()[0] == 1
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(insert, insert_params)
        cursor.execute(move, [*assignment_params, *fence])
        return cursor.rowcount == 1


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _values(model: type[Model], values: Mapping[str, Any]) -> tuple[Sequence[str], list[Any]]:
    """Quoted column names and their values as the database takes them, by field name."""
    columns, params = [], []
    for name, value in values.items():
        field = model._meta.get_field(name)
        columns.append(connection.ops.quote_name(field.column))
        params.append(field.get_db_prep_save(value, connection))
    return columns, params
