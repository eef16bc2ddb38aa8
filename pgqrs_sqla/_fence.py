"""The lease fence: the one predicate that says a worker still holds a delivery of a message.

That is ``(consumer_worker_id, read_ct)``, the owner and its lease token, on a live message.
Every fenced write of a message (:mod:`pgqrs_sqla.queue`), and every lease check of another
table's write (runs, steps), is built from :func:`_fence`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    and_,
    bindparam,
    exists,
    literal,
    select,
    tuple_,
)
from sqlalchemy.sql.elements import Label

from .dialects import Dialect, utcnow
from .models import Tables


def _fence(
    t: Tables,
    lease: ColumnElement[bool],
    worker_id: ColumnElement[int] | int,
) -> ColumnElement[bool]:
    """The one lease-fence predicate: ``lease`` is owned by ``worker_id`` and not archived.

    ``lease`` says which deliveries (message id and token). Every fenced write of a message, and
    every lease check of another table's write, is built from it.
    """
    m = t.messages
    return and_(lease, m.c.consumer_worker_id == worker_id, m.c.archived_at.is_(None))


def held(t: Tables, message_id: int, worker_id: int, token: int) -> ColumnElement[bool]:
    """The lease fence: this worker holds this delivery of this live message."""
    m = t.messages
    return _fence(t, and_(m.c.id == message_id, m.c.read_ct == token), worker_id)


def held_bound(t: Tables) -> ColumnElement[bool]:
    """:func:`held` for the delivery bound as ``p_msg_id``/``p_worker_id``/``p_token``.

    For the run context's statements, built once and bound per call.
    """
    m = t.messages
    return _fence(
        t,
        and_(
            m.c.id == bindparam("p_msg_id", type_=BigInteger),
            m.c.read_ct == bindparam("p_token", type_=Integer),
        ),
        bindparam("p_worker_id", type_=BigInteger),
    )


def lease_fence(t: Tables, dialect: Dialect | None = None) -> ColumnElement[bool]:
    """EXISTS: the delivery bound as in :func:`held_bound` holds its lease.

    For a write of another table (a step, a run) that must land only while the lease is held.

    With ``dialect`` the fence locks the message row as that backend does
    (:meth:`~pgqrs_sqla.dialects.base.Dialect.lock_fence`: ``FOR SHARE`` on PostgreSQL). A
    plain EXISTS would read the statement's snapshot: a takeover that commits while the
    write waits (on the step's row, say) would go unseen and the former holder's write
    would land. Locked, the fence waits for a claim in progress (``FOR UPDATE``) and then
    re-reads the row as committed, so it sees the new token and refuses.
    """
    live = select(literal(1)).select_from(t.messages).where(held_bound(t))
    return exists(live if dialect is None else dialect.lock_fence(live))


def lease_vt(t: Tables) -> Label[datetime]:
    """The current ``vt`` of the bound delivery's message (a scalar subquery, for RETURNING)."""
    m = t.messages
    return (
        select(m.c.vt)
        .where(m.c.id == bindparam("p_msg_id", type_=BigInteger))
        .scalar_subquery()
        .label("lease_vt")
    )


def _held_many(t: Tables) -> ColumnElement[bool]:
    """The lease fence of :func:`held` for many deliveries at once (``p_leases``)."""
    m = t.messages
    return _fence(
        t,
        tuple_(m.c.id, m.c.read_ct).in_(bindparam("p_leases", expanding=True)),
        bindparam("p_worker_id", type_=BigInteger),
    )


def leased_now(t: Tables) -> ColumnElement[bool]:
    """A message a worker holds a live lease on now."""
    m = t.messages
    return m.c.archived_at.is_(None) & m.c.consumer_worker_id.is_not(None) & (m.c.vt > utcnow())
