"""Enqueue: the statements that write a plain queue's messages, and their executor.

Part of :mod:`pgqrs_sqla.queue`, the one writer of ``pgqrs_messages``. One payload is one
``INSERT ... SELECT`` (the queue looked up by name: no row for an unknown queue, so nothing
is written and the caller's transaction stays usable). Many payloads are one statement too,
the same for any number of them on PostgreSQL (a JSONB array) and SQLite (a JSON text), so
it is compiled and prepared once.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    Select,
    String,
    bindparam,
    column,
    func,
    insert,
    literal,
    select,
    true,
    values,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import ReturningInsert

from .._message import (
    MESSAGE_INSERT_COLUMNS,
    NOTIFY_CHANNEL,
    check_priority,
    seconds,
    validate_name,
)
from ..codec import JsonDefault, check_json
from ..dialects import Dialect, dialect_for, utcnow, utcnow_plus
from ..errors import QueueNotFound, ValidationError
from ..models import Tables
from ..typed import encode

# In the VALUES list a None payload is bound as JSON null: a bare NULL there would be typed
# text on PostgreSQL and refused by the JSONB column.
_PAYLOAD = JSON(none_as_null=False).with_variant(JSONB(none_as_null=False), "postgresql")


def _enqueue_source(t: Tables, payload: Any, vt: Any) -> Select[Any]:
    q = t.queues
    return select(
        q.c.id,
        payload,
        bindparam("p_priority", type_=Integer),
        utcnow(),
        vt,
        literal(0),
        literal(0),
    ).where(q.c.queue_name == bindparam("p_queue", type_=String))


@functools.cache
def enqueue_one_stmt(t: Tables, absolute: bool) -> ReturningInsert[Any]:
    """Enqueue one payload (``p_payload``), visible after ``p_delay`` s or at ``p_available_at``.

    Built once per set of tables.
    """
    vt = (
        bindparam("p_available_at", type_=DateTime(timezone=True))
        if absolute
        else utcnow_plus(bindparam("p_delay", type_=Float))
    )
    source = _enqueue_source(t, bindparam("p_payload", type_=_PAYLOAD), vt)
    return insert(t.messages).from_select(MESSAGE_INSERT_COLUMNS, source).returning(t.messages.c.id)


def enqueue_stmt(
    t: Tables,
    queue_name: str,
    payloads: Sequence[Any],
    *,
    priority: int = 0,
    delay: float | timedelta | None = None,
    available_at: datetime | None = None,
    max_bytes: int,
    json_default: JsonDefault | None = None,
    dialect_name: str = "",
) -> tuple[ReturningInsert[Any], dict[str, Any]]:
    """One INSERT ... SELECT for any number of payloads, and its parameters.

    ``dialect_name`` ``"postgresql"``: many payloads are bound as one JSONB array (see
    :func:`enqueue_many_pg_stmt`); ``"sqlite"``: as one JSON text
    (:func:`enqueue_many_sqlite_stmt`); else as a VALUES list.

    No row comes back for an unknown queue, so nothing is written and the caller's transaction stays
    usable. Every argument is checked here, before any statement is sent.
    """
    validate_name(queue_name)
    check_priority(priority)
    payloads = [
        check_json(
            encode(payload),  # dataclasses, pydantic models: pgqrs_sqla.typed
            what="payload" if len(payloads) == 1 else f"payload #{index}",
            max_bytes=max_bytes,
            default=json_default,
        )
        for index, payload in enumerate(payloads)
    ]
    if available_at is not None:
        if delay is not None:
            raise ValidationError("pass either delay= or available_at=, not both: drop one of them")
        if not isinstance(available_at, datetime):
            raise ValidationError(
                f"available_at must be a timezone-aware datetime, got {available_at!r}",
                option="available_at",
                value=available_at,
            )
        if available_at.tzinfo is None:
            raise ValidationError(
                "available_at must be timezone-aware: use datetime.now(timezone.utc) + ..., or "
                "pass delay= (seconds or a timedelta) instead"
            )
    params: dict[str, Any] = {
        "p_queue": queue_name,
        "p_priority": priority,
        "p_delay": seconds(delay),
        "p_available_at": available_at,
    }
    if len(payloads) == 1:
        return enqueue_one_stmt(t, available_at is not None), {**params, "p_payload": payloads[0]}
    if dialect_name == "postgresql":
        # One JSONB array parameter, whatever the count: compiled and prepared once.
        return enqueue_many_pg_stmt(t, available_at is not None), {
            **params,
            "p_payloads": payloads,
        }
    if dialect_name == "sqlite":
        # One JSON text parameter (each payload's own JSON text in it), read by json_each.
        items = json.dumps([json.dumps(p) for p in payloads])
        return enqueue_many_sqlite_stmt(t, available_at is not None), {
            **params,
            "p_payloads": items,
        }
    # A CTE with a column list (WITH v(ord, payload) AS (VALUES ...)): both dialects accept
    # it, while SQLite rejects column aliases on a VALUES subquery.
    rows = (
        values(column("ord", Integer), column("payload", _PAYLOAD), name="v")
        .data([(i, p) for i, p in enumerate(payloads)])
        .cte("v")
    )
    vt = (
        bindparam("p_available_at", type_=DateTime(timezone=True))
        if available_at is not None
        else utcnow_plus(bindparam("p_delay", type_=Float))
    )
    source = _enqueue_source(t, rows.c.payload, vt).join(rows, true()).order_by(rows.c.ord)
    return insert(t.messages).from_select(MESSAGE_INSERT_COLUMNS, source).returning(
        t.messages.c.id
    ), params


@functools.cache
def enqueue_many_pg_stmt(t: Tables, absolute: bool) -> ReturningInsert[Any]:
    """PostgreSQL: enqueue the elements of the JSONB array ``p_payloads``, in order.

    ``jsonb_array_elements ... WITH ORDINALITY``: the statement is the same for any number
    of payloads, so it is compiled once and prepared once; a VALUES list of N rows is
    compiled again on every call, which cost most of an ``enqueue_batch`` of 100.
    """
    e = (
        func.jsonb_array_elements(bindparam("p_payloads", type_=JSONB(none_as_null=False)))
        .table_valued(column("value", JSONB), with_ordinality="ord")
        .render_derived(name="e")
    )
    vt = (
        bindparam("p_available_at", type_=DateTime(timezone=True))
        if absolute
        else utcnow_plus(bindparam("p_delay", type_=Float))
    )
    source = _enqueue_source(t, e.c.value, vt).join(e, true()).order_by(e.c.ord)
    return insert(t.messages).from_select(MESSAGE_INSERT_COLUMNS, source).returning(t.messages.c.id)


@functools.cache
def enqueue_many_sqlite_stmt(t: Tables, absolute: bool) -> ReturningInsert[Any]:
    """SQLite: enqueue the payloads whose JSON texts are the strings of ``p_payloads``, in order.

    ``json_each``: the same statement for any number of payloads, compiled once. Each
    element's value is stored as it is: the payload's JSON text.
    """
    e = func.json_each(bindparam("p_payloads", type_=String)).table_valued("key", "value")
    vt = (
        bindparam("p_available_at", type_=DateTime(timezone=True))
        if absolute
        else utcnow_plus(bindparam("p_delay", type_=Float))
    )
    source = _enqueue_source(t, e.c.value, vt).join(e, true()).order_by(e.c.key)
    return insert(t.messages).from_select(MESSAGE_INSERT_COLUMNS, source).returning(t.messages.c.id)


@functools.cache
def _with_notify(
    stmt: ReturningInsert[Any], dialect: Dialect
) -> ReturningInsert[Any] | Select[Any]:
    notify = dialect.notify(NOTIFY_CHANNEL, bindparam("p_queue", type_=String))
    if notify is None:
        return stmt
    inserted = stmt.cte("inserted")
    notified = select(notify.label("notified")).subquery("notified")
    return select(inserted.c.id).select_from(inserted.join(notified, true()))


def enqueue_rows(conn: Connection, queue_name: str, stmt: Any, params: dict[str, Any]) -> list[int]:
    """Run an enqueue statement on ``conn``; returns the new message ids.

    On PostgreSQL the same statement sends the NOTIFY that wakes listening workers when the
    transaction commits.
    """
    stmt = _with_notify(stmt, dialect_for(conn))
    ids = sorted(conn.execute(stmt, params).scalars().all())
    if not ids:
        raise QueueNotFound(
            f"no queue named {queue_name!r}: create it with "
            f"`await store.create_queue({queue_name!r})`, or check the name",
            queue=queue_name,
        )
    return ids
