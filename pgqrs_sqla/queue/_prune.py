"""The message deletes of retention (part of :mod:`pgqrs_sqla.queue`, the one writer of messages).

An archived message is kept its queue's ``retention`` (NULL: the store's default), counted from
``archived_at``. A message a run still points at goes with its run (``Store.prune`` deletes
the run first), never on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Delete,
    Float,
    Select,
    bindparam,
    delete,
    exists,
    func,
    literal,
    select,
)

from ..dialects import utcnow_plus
from ..models import Tables


def plain_queues_select(t: Tables, retention: float) -> Select[Any]:
    """Every plain queue (no workflow's) and how long it keeps an archived message (seconds).

    A workflow's queue is left out: its messages go with their runs.
    """
    qt, w = t.queues, t.workflows
    kept = func.coalesce(qt.c.retention, literal(retention))
    return (
        select(qt.c.id, kept.label("kept"))
        .where(~exists().where(w.c.queue_id == qt.c.id))
        .order_by(qt.c.id)
    )


def expired_messages_select(t: Tables, *, keep_newest: bool = False) -> Select[int]:
    """Archived messages of queue ``p_queue_id`` archived more than ``p_kept`` seconds ago.

    One queue at a time (see :func:`plain_queues_select`): a range of the archived index
    ``(queue_id, archived_at)``, so the messages of runs kept (millions, maybe) are never
    read. A message a run points at is never chosen.

    ``keep_newest``: never the table's newest message (see ``_runs_write.expired_runs_select``).
    """
    m, r = t.messages, t.runs
    stmt = select(m.c.id).where(
        m.c.queue_id == bindparam("p_queue_id", type_=BigInteger),
        m.c.archived_at < utcnow_plus(-bindparam("p_kept", type_=Float)),
        ~exists().where(r.c.message_id == m.c.id),
    )
    if keep_newest:
        newest = select(func.max(t.messages.alias("newest_message").c.id)).scalar_subquery()
        stmt = stmt.where(m.c.id < newest)
    return stmt


def delete_archived_stmt(t: Tables, message_ids: Sequence[int]) -> Delete:
    """Delete the messages ``message_ids``, if archived (a live message is never deleted)."""
    m = t.messages
    return delete(m).where(m.c.id.in_(message_ids), m.c.archived_at.is_not(None))
