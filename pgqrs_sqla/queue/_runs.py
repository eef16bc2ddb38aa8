"""The writes of a run's message that store operations make (not a delivery of it).

Part of :mod:`pgqrs_sqla.queue`, the one writer of ``pgqrs_messages``: a trigger's message
for a run, waking a parked run (``resume_run``, ``send_event``, a run it awaits ending),
locking a run's message row, and taking an idle run's message off the queue
(``cancel_run``).
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Integer,
    Select,
    String,
    Update,
    bindparam,
    insert,
    literal,
    null,
    select,
    update,
)
from sqlalchemy.sql.dml import ReturningInsert, ReturningUpdate

from .._message import MESSAGE_INSERT_COLUMNS
from ..dialects import Dialect, utcnow, utcnow_plus
from ..models import ArchiveReason, Tables
from ..states import UNFINISHED_RUN, status_in


def wake_unleased_stmt(
    t: Tables, message_id: int, when: ColumnElement[bool] | None = None, delay: float = 0.0
) -> Update:
    """Make a message visible now (or in ``delay`` s) if nobody holds it and ``when`` holds.

    ``resume_run``, ``send_event``. A live lease is left alone: the owner is working on it.
    """
    m = t.messages
    stmt = update(m).where(
        m.c.id == message_id, m.c.archived_at.is_(None), m.c.consumer_worker_id.is_(None)
    )
    vt = utcnow_plus(delay) if delay else utcnow()
    return (stmt if when is None else stmt.where(when)).values(vt=vt)


def wake_waiter_stmt(t: Tables) -> Update:
    """Wake run ``p_waiter`` (its message visible now) once no run it awaits is unfinished.

    ``ctx.wait_for_run(s)``: a run that ends runs this for its ``awaited_by``, after its end
    committed, so the last of a fan-in's runs to end sees every other one ended.
    """
    m, r = t.messages, t.runs
    waiter = bindparam("p_waiter", type_=BigInteger)
    awaited = r.alias("awaited")
    return (
        update(m)
        .where(
            m.c.id == select(r.c.message_id).where(r.c.id == waiter).scalar_subquery(),
            m.c.archived_at.is_(None),
            m.c.consumer_worker_id.is_(None),
            ~select(awaited.c.id)
            .where(awaited.c.awaited_by == waiter, status_in(awaited.c.status, UNFINISHED_RUN))
            .exists(),
        )
        .values(vt=utcnow())
    )


def lock_message_stmt(t: Tables, dialect: Dialect, message_id: int) -> Select[Any]:
    """Lock a message row until the transaction ends (where the backend has row locks).

    ``FOR NO KEY UPDATE``: it orders ``send_event`` against a parking wait (whose release
    updates the row), and still admits the key-share lock a transactional step holds, so a
    sender does not wait for a whole step.
    """
    m = t.messages
    return dialect.lock_for_update(select(m.c.id).where(m.c.id == message_id), no_key=True)


def archive_idle_stmt(t: Tables, message_id: int) -> ReturningUpdate[tuple[int]]:
    """Archive (done) a message no live worker holds (``cancel_run``); returns its id if archived.

    That is, one not leased, or whose lease expired.
    """
    m = t.messages
    return (
        update(m)
        .where(
            m.c.id == message_id,
            m.c.archived_at.is_(None),
            (m.c.consumer_worker_id.is_(None)) | (m.c.vt <= utcnow()),
        )
        .values(
            archived_at=utcnow(), archive_reason=ArchiveReason.DONE.value, consumer_worker_id=None
        )
        .returning(m.c.id)
    )


def workflow_message_source(t: Tables) -> Select[Any]:
    """The message row of a trigger for workflow ``p_wf``; nothing for an unknown workflow.

    The payload is NULL (the run holds the input); it is visible after ``p_delay`` seconds, at
    priority ``p_priority``, with the run's ``p_ckey`` (``concurrency_key``).
    """
    w = t.workflows
    return select(
        w.c.queue_id,
        null(),
        bindparam("p_priority", type_=Integer),
        utcnow(),
        utcnow_plus(bindparam("p_delay", type_=Float)),
        literal(0),
        literal(0),
        bindparam("p_ckey", type_=String),
    ).where(w.c.workflow_name == bindparam("p_wf", type_=String))


@functools.cache
def workflow_message_insert_stmt(t: Tables) -> ReturningInsert[Any]:
    """Insert a trigger's message (:func:`workflow_message_source`); returns its id."""
    m = t.messages
    cols = [*MESSAGE_INSERT_COLUMNS, "concurrency_key"]
    return insert(m).from_select(cols, workflow_message_source(t)).returning(m.c.id)


def workflow_messages_insert_stmt(t: Tables, rows: Any) -> ReturningInsert[Any]:
    """A bulk trigger's messages: one per row of ``rows``, on workflow ``p_wf``'s queue.

    ``rows`` has the columns ``ord`` and ``ckey`` (the run's ``concurrency_key``); the
    messages are inserted in ``ord`` order, so their ids increase in that order. Visible after
    ``p_delay`` seconds, at priority ``p_priority``. Nothing for an unknown workflow.
    """
    m, w = t.messages, t.workflows
    source = (
        select(
            w.c.queue_id,
            null(),
            bindparam("p_priority", type_=Integer),
            utcnow(),
            utcnow_plus(bindparam("p_delay", type_=Float)),
            literal(0),
            literal(0),
            rows.c.ckey,
        )
        .select_from(rows.join(w, w.c.workflow_name == bindparam("p_wf", type_=String)))
        .order_by(rows.c.ord)
    )
    cols = [*MESSAGE_INSERT_COLUMNS, "concurrency_key"]
    return insert(m).from_select(cols, source).returning(m.c.id)
