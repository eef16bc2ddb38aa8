"""The message deletes of retention (part of :mod:`pgqrs_sqla.queue`, the one writer of messages).

An archived message is kept its queue's ``retention`` (NULL: the store's default), counted from
``archived_at``. A message a run still points at goes with its run (``Store.prune`` deletes
the run first), never on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Delete, Select, delete, exists, func, literal, select

from ..dialects import utcnow_plus
from ..models import Tables


def expired_messages_select(
    t: Tables, retention: float, *, keep_newest: bool = False
) -> Select[int]:
    """Archived messages past their queue's retention that no run points at: their ids.

    ``keep_newest``: never the table's newest message (see ``_runs_write.expired_runs_select``).
    """
    m, qt, r = t.messages, t.queues, t.runs
    kept = func.coalesce(qt.c.retention, literal(retention))
    stmt = (
        select(m.c.id)
        .select_from(m.join(qt, qt.c.id == m.c.queue_id))
        .where(
            m.c.archived_at.is_not(None),
            m.c.archived_at < utcnow_plus(-kept),
            ~exists().where(r.c.message_id == m.c.id),
        )
    )
    if keep_newest:
        newest = select(func.max(t.messages.alias("newest_message").c.id)).scalar_subquery()
        stmt = stmt.where(m.c.id < newest)
    return stmt


def delete_archived_stmt(t: Tables, message_ids: Sequence[int]) -> Delete:
    """Delete the messages ``message_ids``, if archived (a live message is never deleted)."""
    m = t.messages
    return delete(m).where(m.c.id.in_(message_ids), m.c.archived_at.is_not(None))
